"""A stage's `keep`, applied in order to its rows: SQL conditions run in the store, built-in
filters in Python; each row removed is removed by the first rule it fails, and recorded
with that rule, a detail, and the row it collided with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from ..errors import ConfigError
from . import filters
from .spec import Stage


@dataclass
class Decision:
    rows: list[tuple[str, str | None]]  # (request_id, parent_request_id), in input order
    removed: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    pass_rates: list[tuple[str, int, int]] = field(default_factory=list)
    pairs: list[tuple[str, str, float, float]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def decide(con: duckdb.DuckDBPyConnection, stage: Stage, rows_sql: str) -> Decision:
    try:
        cur = con.execute(f"SELECT * EXCLUDE (logprobs) FROM ({rows_sql}) AS t")
    except duckdb.Error as exc:
        raise ConfigError(f"{stage.where}: its rows cannot be read: {_first(exc)} "
                          "(check its columns:)") from None
    names = [d[0] for d in cur.description]
    records = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
    decision = Decision([(r["request_id"], r["parent_request_id"]) for r in records])
    remaining = records
    for rule in stage.keep:
        where = f"{stage.file}:{rule.line}: stage {stage.name}: keep"
        if rule.sql is not None:
            try:
                failing = {r[0] for r in con.execute(
                    f"SELECT request_id FROM ({rows_sql}) AS t WHERE NOT coalesce(({rule.sql}), false)"
                ).fetchall()}
            except duckdb.Error as exc:
                raise ConfigError(f"{where}: {rule.sql!r}: {_first(exc)}") from None
            for r in remaining:
                if r["request_id"] in failing:
                    decision.removed[r["request_id"]] = ("keep", rule.sql, None)
        else:
            try:
                outcome = filters.run(rule.filter, remaining, rule.params)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            for removal in outcome.removed:
                decision.removed[removal.request_id] = (f"{rule.filter}:{removal.rule}", removal.detail,
                                                        removal.other)
            decision.pass_rates += outcome.pass_rates
            decision.pairs += outcome.pairs
            if outcome.figures:
                decision.figures[rule.filter] = outcome.figures
        remaining = [r for r in remaining if r["request_id"] not in decision.removed]
    return decision


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
