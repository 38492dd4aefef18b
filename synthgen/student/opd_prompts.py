"""The prompts on-policy distillation samples on: read from the store, split like training.

`--prompts SQL` returns rows with `messages` (and, usually, the teacher's `response`: then
the held-out answers are what `synthgen eval` measures, and pruning measures block
influence on them). The split is `synthgen train`'s own (rows.split_rows: by prompt, a
hash of seed and prompt), so for the same rows, holdout and seed both hold out the same
prompts, and OPD and off-policy KD are evaluated on the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from ..store import connect
from .deps import StudentError
from .render import render
from .rows import Row, Split, _parse, _unit, split_rows

INFLUENCE_ROWS = 32  # as prune.py measures for `synthgen train`


@dataclass
class Prompts:
    """The training prompts (one per distinct prompt, in a seeded order), the split, and the
    training rows (teacher answers, where the query returns them)."""

    train: list[list[dict[str, str]]]
    split: Split
    rows: list[Row]

    def influence_ids(self, tokenizer: Any) -> list[list[int]]:
        """Token ids to measure block influence on: the first training rows with their
        answers (what `synthgen train --student prune:K` measures on), else the prompts."""
        with_answer = [r for r in self.rows if r.response]
        if with_answer:
            return [render(tokenizer, r.conversation(), r.finished).input_ids
                    for r in with_answer[:INFLUENCE_ROWS]]
        from ..scoring.tokens import chat_ids

        return [chat_ids(tokenizer, m) for m in self.train[:INFLUENCE_ROWS]]


def split_prompts(db: str, query: str, holdout: float, seed: int) -> Prompts:
    """Run `query` on the store and split its rows by prompt (see the module)."""
    query = query.strip().rstrip(";")
    con = connect(db, read_only=True)
    try:
        try:
            rel = con.execute(f"SELECT * FROM ({query}) AS q")
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise StudentError(f"--prompts: the query failed: {first}") from None
        columns = [d[0] for d in rel.description]
        if "messages" not in columns:
            raise StudentError("--prompts must return a `messages` column (start from "
                               "`SELECT * FROM corpus WHERE ...`)")
        records = [dict(zip(columns, values, strict=True)) for values in rel.fetchall()]
    finally:
        con.close()
    if not records:
        raise StudentError(f"--prompts returned no rows: {query}")
    rows = [_parse(i, rec if isinstance(rec.get("response"), str) else {**rec, "response": ""})
            for i, rec in enumerate(records)]
    train, _, split = split_rows(rows, holdout, seed, query)
    by_key: dict[str, list[dict[str, str]]] = {}
    for r in train:
        by_key.setdefault(r.key, r.messages)
    order = sorted(by_key, key=lambda k: (_unit(seed, k), k))
    return Prompts([by_key[k] for k in order], split, train)


def round_prompts(prompts: Prompts, r: int, per_round: int | None, seed: int) -> list[list[dict[str, str]]]:
    """Round r's prompts: every training prompt, or the r-th window of `per_round` of them
    (wrapping around), in the seeded order."""
    n = len(prompts.train)
    if per_round is None or per_round >= n:
        return prompts.train
    start = ((r - 1) * per_round) % n
    return [prompts.train[(start + i) % n] for i in range(per_round)]
