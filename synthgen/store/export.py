"""Export the corpus as chat-format JSONL or Parquet, the shape TRL and HF datasets read.

One row per answer: `messages` is the input conversation followed by the teacher's
answer as an assistant turn; the input's metadata fields sit beside it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson

from ..errors import ConfigError, StoreError
from . import arrow_batches, connect
from .readonly import read_statements

EXPORT_SQL = """
SELECT request_id, sample_index, messages, response, finish_reason, model, metadata,
       reasoning, tool_calls, refusal
FROM corpus
WHERE (response IS NOT NULL OR tool_calls IS NOT NULL OR refusal IS NOT NULL)
  AND ({plan}) AND ({where})
ORDER BY line, sample_index
"""
# The latest plan: the input (and parameters) of the most recent run that planned one. An
# answer to an edited prompt of an earlier version of the input is not in it.
LATEST_PLAN = """request_id IN (SELECT request_id FROM plan_requests WHERE plan_key =
    (SELECT plan_key FROM runs r WHERE plan_key IN (SELECT plan_key FROM plans)
     ORDER BY run_id DESC LIMIT 1))"""
SYSTEM_FIELDS = ("request_id", "sample_index", "finish_reason", "model")


def export(db: str | Path, out: str | Path, where: str | None = None, all_plans: bool = False) -> int:
    """Write the answers of the latest plan (every plan's with `all_plans`), optionally
    filtered by a SQL `where` over `corpus`, to `out` (.jsonl or .parquet), atomically.
    Returns the number of rows written."""
    out = Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise ConfigError(f"export: {out}: the file must end in .jsonl or .parquet")
    if where:  # a condition, not a way to run statements of its own
        read_statements(f"SELECT 1 FROM corpus WHERE ({where})")
    con = connect(db, read_only=True)
    try:
        query = EXPORT_SQL.format(where=where or "TRUE", plan="TRUE" if all_plans else LATEST_PLAN)
        try:
            reader = arrow_batches(con, query)
        except Exception as exc:
            raise StoreError(f"export: the query failed: {str(exc).splitlines()[0]}") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".jsonl", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                count = _write_jsonl(reader, fh)
            if out.suffix == ".jsonl":
                os.replace(tmp, out)
            else:
                _jsonl_to_parquet(con, Path(tmp), out, count)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return count
    finally:
        con.close()


def _write_jsonl(reader, fh) -> int:
    count = 0
    for batch in reader:
        for row in batch.to_pylist():
            messages = orjson.loads(row["messages"])
            messages.append(_assistant(row))
            record = {"messages": messages}
            if row["metadata"]:
                record.update(orjson.loads(row["metadata"]))
            for key in SYSTEM_FIELDS:
                record.setdefault(key, row[key])
            fh.write(orjson.dumps(record) + b"\n")
            count += 1
    return count


def _assistant(row: dict) -> dict:
    """The teacher's turn as chat templates read it: reasoning as `reasoning_content`, tool
    calls and refusals in their OpenAI fields."""
    turn: dict = {"role": "assistant", "content": row["response"]}
    if row["reasoning"]:
        turn["reasoning_content"] = row["reasoning"]
    if row["tool_calls"]:
        turn["tool_calls"] = orjson.loads(row["tool_calls"])
    if row["refusal"]:
        turn["refusal"] = row["refusal"]
    return turn


def _jsonl_to_parquet(con, tmp: Path, out: Path, count: int) -> None:
    """Let DuckDB infer one schema over all rows (metadata keys may vary by row)."""
    import duckdb

    part = out.with_name(f".{out.name}.part")
    mem = duckdb.connect()
    try:
        if count:
            mem.execute(
                f"COPY (SELECT * FROM read_json('{_q(tmp)}', format='newline_delimited', "
                f"sample_size=-1)) TO '{_q(part)}' (FORMAT parquet)"
            )
        else:
            mem.execute(
                f"COPY (SELECT NULL::STRUCT(role VARCHAR, content VARCHAR)[] AS messages LIMIT 0) "
                f"TO '{_q(part)}' (FORMAT parquet)"
            )
        os.replace(part, out)
    finally:
        mem.close()
        if part.exists():
            part.unlink()


def _q(path: Path) -> str:
    return str(path).replace("'", "''")
