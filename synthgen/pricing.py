"""What tokens cost: the one function every figure of money is computed by.

The live progress line, the run's summary, `synthgen status`, the report and its plots
all price a run here, from the prices the run was given (`--price-in`/`--price-out`, per
million tokens) or, where none were given, the model's row of the price table shipped
with synthgen (synthgen/prices.json, dated: the date is said with every figure), and
whether it went through a Batch API (`--batch-discount` off both). Computed in one place,
the figures agree: the progress line of a batch run used to show twice its summary,
because it skipped the discount. A model the table does not list has no price: its cost
is unknown (None), never a guess.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import orjson

DEFAULT_BATCH_DISCOUNT = 0.5  # OpenAI's and Anthropic's batch APIs: half price


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
    # Where they came from: "" for prices given by hand, else "the price table of DATE
    # for MODEL" (said with every cost, so a figure can be checked against its source)
    source: str = ""

    @classmethod
    def of_config(cls, config: dict[str, Any]) -> Prices:
        """The prices of a run, from its stored config (`runs.config`): as `resolve`."""
        return cls.resolve(config.get("model"), config.get("price_in"), config.get("price_out"),
                           config.get("price_cached_in"), config.get("price_cache_write"),
                           batch=bool(config.get("batch")), batch_discount=config.get("batch_discount"))

    @classmethod
    def resolve(cls, model: str | None, price_in: float | None = None, price_out: float | None = None,
                cached_in: float | None = None, cache_write: float | None = None, *, batch: bool = False,
                batch_discount: float | None = None) -> Prices:
        """The prices a run pays: `--price-in`/`--price-out` where either is given (as
        before the table, the table is then not read: the user priced the model), else the
        model's row of the price table, whose cached and cache-write prices the matching
        flags still override. `batch_discount` None: the table's, else 0.5."""
        given = price_in is not None or price_out is not None
        row, table_discount = (None, DEFAULT_BATCH_DISCOUNT) if given else _table_rows().get(
            model or "", (None, DEFAULT_BATCH_DISCOUNT))
        discount = table_discount if batch_discount is None else float(batch_discount)
        if row is None:
            return cls(price_in, price_out, discount if batch else 0.0, cached_in, cache_write)
        return replace(row, discount=discount if batch else 0.0,
                       cached_input=row.cached_input if cached_in is None else cached_in,
                       cache_write=row.cache_write if cache_write is None else cache_write)

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
        """The prices and their source, as every printed cost says them."""
        said = f"${self.input or 0:g}/M in, ${self.output or 0:g}/M out"
        said += f", less {self.discount:.0%}" if self.discount else ""
        return f"{self.source}: {said}" if self.source else f"the prices given: {said}"


@functools.cache
def price_table() -> dict[str, Any]:
    """synthgen/prices.json, read once: {"as_of", "note", "providers": {name: {"batch_discount",
    "models": {model: {input, cached_input, cache_write, output, aliases}}}}}."""
    return orjson.loads(resources.files("synthgen").joinpath("prices.json").read_bytes())


def table_date() -> str:
    """The day the price table's prices were written down (said with every table price)."""
    return str(price_table()["as_of"])


@functools.cache
def _table_rows() -> dict[str, tuple[Prices, float]]:
    """Every name the table knows (models and their dated aliases) -> (its online prices,
    its provider's batch discount)."""
    rows: dict[str, tuple[Prices, float]] = {}
    date = table_date()
    for provider in price_table()["providers"].values():
        discount = float(provider.get("batch_discount", DEFAULT_BATCH_DISCOUNT))
        for name, row in provider["models"].items():
            prices = Prices(row["input"], row["output"], 0.0, row.get("cached_input"),
                            row.get("cache_write"), f"the price table of {date} for {name}")
            for alias in (name, *row.get("aliases", ())):
                rows[alias] = (prices, discount)
    return rows


def table_prices(model: str | None) -> Prices | None:
    """The model's online list prices (its exact name, or a dated alias the table lists);
    None for a model the table does not list: no price is guessed from a similar name."""
    found = _table_rows().get(model or "")
    return found[0] if found else None


def unpriced(model: str | None) -> str:
    """Why a run has no cost: said where a cost would be."""
    return (f"no price for {model or 'this model'}: it is not in the price table of {table_date()} "
            "(give --price-in/--price-out)")


def estimate_cost(prompt_tokens: int, completion_tokens: int, price_in: float | None,
                  price_out: float | None) -> float | None:
    """Cost from prices per million tokens; None when no price was given."""
    return Prices(price_in, price_out).cost(prompt_tokens, completion_tokens)
