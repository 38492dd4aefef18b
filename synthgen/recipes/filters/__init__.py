"""Built-in filters for a stage's `keep`, each keeping its paper's rules.

    self-instruct     Wang et al. 2023: length, keywords, "Write a program", leading
                      punctuation or non-ASCII, ROUGE-L >= 0.7 against the pool
    evol-instruct     Xu et al. 2023 (WizardLM): the elimination rules for failed evolutions
    dedup             exact (normalized hash), near (MinHash-LSH, re-checked by Jaccard),
                      and benchmark decontamination by n-gram overlap
    verify            best-of-n: exact match, regex, math equivalence, Python tests in a
                      subprocess with a timeout; pass rates per prompt
    preference-pairs  chosen/rejected pairs from judge scores

A filter takes the stage's rows (dicts of the stage view's columns, in input order) and
its parameters, and returns an `Outcome`: which rows it removes, each with its rule, a
detail and the row it collided with, and what it records besides (pass rates, pairs).
Modules import their heavy libraries only when they run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ...errors import ConfigError
from ..paths import resolve

FILTERS = {
    "self-instruct": "selfinstruct",
    "evol-instruct": "evol",
    "dedup": "dedup",
    "verify": "verify",
    "preference-pairs": "pairs",
}


@dataclass
class Removal:
    request_id: str
    rule: str
    detail: str = ""
    other: str | None = None  # the row it collided with, where there is one


@dataclass
class Outcome:
    removed: list[Removal] = field(default_factory=list)
    pass_rates: list[tuple[str, int, int]] = field(default_factory=list)  # (prompt, samples, passed)
    pairs: list[tuple[str, str, float, float]] = field(default_factory=list)  # chosen, rejected, scores
    figures: dict[str, Any] = field(default_factory=dict)  # what the run reports


def module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{FILTERS[name]}")


def check_params(name: str, params: dict[str, Any], base: Path) -> dict[str, Any]:
    """The filter's parameters, checked by its `Params` model (unknown keys refused), with
    the files it names resolved (`PATHS`)."""
    mod = module(name)
    model: type[BaseModel] = mod.Params
    try:
        checked = model(**params).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "parameters"
        raise ConfigError(f"{key}: {first['msg']}") from None
    for key in getattr(mod, "PATHS", ()):
        checked[key] = resolve(checked[key], base, key)
    return checked


def run(name: str, rows: list[dict[str, Any]], params: dict[str, Any]) -> Outcome:
    return module(name).run(rows, params)


def column(rows: list[dict[str, Any]], name: str, filter_name: str) -> None:
    """Refuse a parameter naming a column the stage's rows do not have."""
    if rows and name not in rows[0]:
        raise ConfigError(f"filter {filter_name}: the stage's rows have no column {name!r} "
                          f"(they have: {', '.join(rows[0])}); add it under the stage's columns:")
