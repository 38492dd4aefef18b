"""What tokens cost: the one function every figure of money is computed by.

The live progress line, the run's summary, `synthgen status`, the report and its plots
all price a run here, from the prices the run was given (`--price-in`/`--price-out`, per
million tokens) and whether it went through a Batch API (`--batch-discount` off both).
Computed in one place, the figures agree: the progress line of a batch run used to show
twice its summary, because it skipped the discount.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prices:
    """Per million tokens; `discount` is the share taken off both (a Batch API's 50%)."""

    input: float | None = None
    output: float | None = None
    discount: float = 0.0

    @classmethod
    def of_config(cls, config: dict[str, Any]) -> Prices:
        """The prices a run was given, from its stored config (`runs.config`)."""
        discount = float(config.get("batch_discount") or 0) if config.get("batch") else 0.0
        return cls(config.get("price_in"), config.get("price_out"), discount)

    @property
    def known(self) -> bool:
        return self.input is not None or self.output is not None

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """What these tokens cost; None when no price was given (unknown, not free)."""
        if not self.known:
            return None
        full = ((prompt_tokens or 0) * (self.input or 0) + (completion_tokens or 0) * (self.output or 0))
        return full / 1e6 * (1 - self.discount)

    def describe(self) -> str:
        said = f"${self.input or 0:g}/M in, ${self.output or 0:g}/M out"
        return said + (f", less {self.discount:.0%}" if self.discount else "")


def estimate_cost(prompt_tokens: int, completion_tokens: int, price_in: float | None,
                  price_out: float | None) -> float | None:
    """Cost from prices per million tokens; None when no price was given."""
    return Prices(price_in, price_out).cost(prompt_tokens, completion_tokens)
