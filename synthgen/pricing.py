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
    """Per million tokens; `discount` is the share taken off all of them (a Batch API's
    50%). Prompt tokens read from a provider's cache, and those written to it, have prices
    of their own where given (Anthropic: 0.1x and 1.25x input); else the input price."""

    input: float | None = None
    output: float | None = None
    discount: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None

    @classmethod
    def of_config(cls, config: dict[str, Any]) -> Prices:
        """The prices a run was given, from its stored config (`runs.config`)."""
        discount = float(config.get("batch_discount") or 0) if config.get("batch") else 0.0
        return cls(config.get("price_in"), config.get("price_out"), discount,
                   config.get("price_cached_in"), config.get("price_cache_write"))

    @property
    def known(self) -> bool:
        return self.input is not None or self.output is not None

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None, cached_tokens: int | None = 0,
             cache_write_tokens: int | None = 0) -> float | None:
        """What these tokens cost; None when no price was given (unknown, not free).
        `prompt_tokens` count every prompt token, the cached and cache-written ones too."""
        if not self.known:
            return None
        read, written = cached_tokens or 0, cache_write_tokens or 0
        fresh = max(0, (prompt_tokens or 0) - read - written)
        base = self.input or 0
        full = (fresh * base + read * (base if self.cached_input is None else self.cached_input)
                + written * (base if self.cache_write is None else self.cache_write)
                + (completion_tokens or 0) * (self.output or 0))
        return full / 1e6 * (1 - self.discount)

    def describe(self) -> str:
        said = f"${self.input or 0:g}/M in, ${self.output or 0:g}/M out"
        return said + (f", less {self.discount:.0%}" if self.discount else "")


def estimate_cost(prompt_tokens: int, completion_tokens: int, price_in: float | None,
                  price_out: float | None) -> float | None:
    """Cost from prices per million tokens; None when no price was given."""
    return Prices(price_in, price_out).cost(prompt_tokens, completion_tokens)
