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

EXPORT_SQL = """
SELECT request_id, sample_index, messages, response, finish_reason, model, metadata
FROM corpus WHERE response IS NOT NULL AND ({where})
ORDER BY line, sample_index
"""
SYSTEM_FIELDS = ("request_id", "sample_index", "finish_reason", "model")


def export(db: str | Path, out: str | Path, where: str | None = None) -> int:
    """Write every stored answer (optionally filtered by a SQL `where` over `corpus`)
    to `out` (.jsonl or .parquet), atomically. Returns the number of rows written."""
    out = Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise ConfigError(f"export: {out}: the file must end in .jsonl or .parquet")
    con = connect(db, read_only=True)
    try:
        try:
            reader = arrow_batches(con, EXPORT_SQL.format(where=where or "TRUE"))
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
            messages.append({"role": "assistant", "content": row["response"]})
            record = {"messages": messages}
            if row["metadata"]:
                record.update(orjson.loads(row["metadata"]))
            for key in SYSTEM_FIELDS:
                record.setdefault(key, row[key])
            fh.write(orjson.dumps(record) + b"\n")
            count += 1
    return count


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
