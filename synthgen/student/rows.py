"""Rows from the store: a SQL query becomes conversations, split into train and held-out.

The split is by prompt, not by row: several samples of one prompt all land on the same
side, so the held-out answers are to prompts the student never saw. It is a hash of the
seed and the canonical messages, so the same store, query and seed always give the same
split, and the output directory records it (`split.json`) for `synthgen eval`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from ..store import connect
from .deps import StudentError

# The teacher's answers that finished. A student's own answers (`synthgen student sample`,
# the rollouts of `synthgen distill`) are stored in the same corpus under the model
# `student:LABEL@HASH`; they are not the teacher's and are never trained on by default.
DEFAULT_QUERY = ("SELECT * FROM corpus WHERE finish_reason = 'stop' "
                 "AND coalesce(model, '') NOT LIKE 'student:%'")
REQUIRED_COLUMNS = ("messages", "response")


@dataclass
class Row:
    """One teacher answer: the prompt messages, the answer, and its logprobs if stored."""

    request_id: str
    messages: list[dict[str, str]]
    response: str
    logprobs: list[dict[str, Any]] | None = None
    key: str = field(default="")
    finished: bool = True  # False when the teacher was cut off (finish_reason 'length')
    reasoning: str | None = None  # the teacher's reasoning trace (the `reasoning` column)
    # What distribution the logprobs are (corpus.logprobs_mode / logprobs_temperature):
    # 'raw' (temperature 1), 'processed' (at logprobs_temperature), or None (unknown).
    logprobs_mode: str | None = None
    logprobs_temperature: float | None = None

    def conversation(self, with_reasoning: bool = False) -> list[dict[str, str]]:
        """The prompt plus the teacher's answer as the final assistant turn; with its
        reasoning as `reasoning_content` (what reasoning chat templates read) if asked."""
        turn = {"role": "assistant", "content": self.response}
        if with_reasoning and self.reasoning:
            turn["reasoning_content"] = self.reasoning
        return [*self.messages, turn]


def prompt_key(messages: list[dict[str, str]]) -> str:
    """A stable id of the prompt, so samples of one prompt are split together."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_rows(db: str | Path, query: str | None = None) -> list[Row]:
    """Run `query` (default: corpus rows that finished with `stop`) and parse its rows."""
    query = (query or DEFAULT_QUERY).strip().rstrip(";")
    con = connect(db, read_only=True)  # training never takes the store's write lock
    try:
        try:
            rel = con.execute(f"SELECT * FROM ({query}) AS q")
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise StudentError(f"the training query failed: {first}") from exc
        columns = [d[0] for d in rel.description]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise StudentError(
                f"the query must return the columns {', '.join(REQUIRED_COLUMNS)} "
                f"(missing: {', '.join(missing)}); start from `SELECT * FROM corpus ...`"
            )
        records = [dict(zip(columns, values, strict=True)) for values in rel.fetchall()]
    finally:
        con.close()
    if not records:
        raise StudentError(f"the query returned no rows: {query}")
    return [_parse(i, rec) for i, rec in enumerate(records)]


def _parse(index: int, rec: dict[str, Any]) -> Row:
    messages = rec["messages"]
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as exc:
            raise StudentError(f"row {index}: messages is not JSON ({exc.msg})") from exc
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise StudentError(f"row {index}: messages is not a list of {{role, content}}")
    if not isinstance(rec["response"], str):
        raise StudentError(f"row {index}: response is not text")
    rid = str(rec.get("request_id") or prompt_key(messages)[:16] + f"-{index}")
    return Row(
        request_id=rid,
        messages=[{"role": m["role"], "content": str(m["content"])} for m in messages],
        response=rec["response"],
        logprobs=rec.get("logprobs"),
        key=prompt_key(messages),
        finished=rec.get("finish_reason") != "length",
        reasoning=rec.get("reasoning") if isinstance(rec.get("reasoning"), str) else None,
        logprobs_mode=rec.get("logprobs_mode") if isinstance(rec.get("logprobs_mode"), str) else None,
        logprobs_temperature=_number(rec.get("logprobs_temperature")),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class Split:
    """Which rows train and which are held out; saved as `split.json` in the output dir."""

    query: str
    seed: int
    holdout: float
    train_ids: list[str]
    heldout_ids: list[str]
    train_keys: list[str]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, path: Path) -> Split:
        if not path.exists():
            raise StudentError(f"{path} is missing: was this directory written by synthgen train?")
        return cls(**json.loads(path.read_text()))


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_rows(
    rows: list[Row], holdout: float, seed: int, query: str | None
) -> tuple[list[Row], list[Row], Split]:
    """Deterministic split by prompt: the `holdout` share of prompts with the smallest hash
    of (seed, prompt), at least one when any is asked for, never all."""
    if not 0.0 <= holdout < 1.0:
        raise StudentError(f"--holdout must be in [0, 1), got {holdout}")
    keys = sorted({r.key for r in rows}, key=lambda k: (_unit(seed, k), k))
    n_held = round(holdout * len(keys))
    if holdout > 0 and len(keys) > 1:
        n_held = min(max(n_held, 1), len(keys) - 1)
    held = set(keys[:n_held])
    train = [r for r in rows if r.key not in held]
    heldout = [r for r in rows if r.key in held]
    if not train:
        raise StudentError("no rows left to train on after the held-out split; lower --holdout")
    split = Split(
        query=(query or DEFAULT_QUERY),
        seed=seed,
        holdout=holdout,
        train_ids=[r.request_id for r in train],
        heldout_ids=[r.request_id for r in heldout],
        train_keys=sorted({r.key for r in train}),
    )
    return train, heldout, split


def heldout_rows(db: str | Path, split: Split, query: str | None = None) -> list[Row]:
    """The rows eval may use: the recorded held-out ids, or any rows of `query` whose prompt
    the student never trained on."""
    if query is None:
        wanted = set(split.heldout_ids)
        rows = [r for r in load_rows(db, split.query) if r.request_id in wanted]
    else:
        seen = set(split.train_keys)
        rows = [r for r in load_rows(db, query) if r.key not in seen]
    if not rows:
        raise StudentError(
            "no held-out rows to evaluate on (train with --holdout > 0, or pass a --query "
            "that selects prompts the student did not train on)"
        )
    return rows
