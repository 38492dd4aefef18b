"""The store's record of Batch API batches: written before each step that costs money, so
a killed run knows exactly what it had submitted.

    record_new     the batch's key and its requests, before the file is uploaded
    set_uploaded   the input file id, before POST /batches
    set_submitted  the batch id, as soon as the API gave it
    set_status     what each poll said (status, counts, output and error file ids)
    set_done       ingested (its files are stored) or lost (the API no longer knows it)

A request is in flight while a batch that carries it is neither ingested nor lost: it is
never put in another batch meanwhile (curator kept this in a side file written after the
batch was created, so a kill in between paid for the batch twice).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from ..store.tx import transaction

if TYPE_CHECKING:
    from ..backends.openai_batch import BatchInfo


OPEN_STATES = ("preparing", "uploaded", "submitted")
CLOSED_STATES = ("ingested", "lost")


@dataclass
class BatchRow:
    batch_key: str
    run_id: int
    endpoint: str
    state: str
    status: str | None
    batch_id: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    requests: int
    created_at: datetime | None = None


_COLUMNS = ("batch_key, run_id, endpoint, state, status, batch_id, input_file_id, output_file_id, "
            "error_file_id, requests, created_at")


def new_key(run_id: int) -> str:
    """Our own name for a batch, unique across stores and runs (sent as its metadata)."""
    return f"sg-{run_id}-{uuid.uuid4().hex[:16]}"


def _transaction(con: duckdb.DuckDBPyConnection, *statements: tuple[str, Any]) -> None:
    with transaction(con):
        for sql, params in statements:
            con.execute(sql, params)


def record_new(con: duckdb.DuckDBPyConnection, key: str, run_id: int, plan_key: str | None,
               endpoint: str, request_ids: list[str], size: int) -> None:
    """The batch and its requests, in one transaction: from here they are in flight."""
    _transaction(
        con,
        ("INSERT INTO batches (batch_key, run_id, plan_key, endpoint, state, requests, bytes, "
         "created_at) VALUES (?, ?, ?, ?, 'preparing', ?, ?, now())",
         [key, run_id, plan_key, endpoint, len(request_ids), size]),
        ("INSERT INTO batch_requests SELECT $key, unnest($ids), unnest(range(1, $n + 1))::INTEGER",
         {"key": key, "ids": request_ids, "n": len(request_ids)}),
    )


def discard(con: duckdb.DuckDBPyConnection, key: str) -> None:
    """Forget a batch that exists nowhere else (never created at the API): its requests are
    pending again."""
    _transaction(con, ("DELETE FROM batch_requests WHERE batch_key = ?", [key]),
                 ("DELETE FROM batches WHERE batch_key = ?", [key]))


def set_uploaded(con: duckdb.DuckDBPyConnection, key: str, file_id: str) -> None:
    con.execute("UPDATE batches SET state = 'uploaded', input_file_id = ? WHERE batch_key = ?",
                [file_id, key])


def set_submitted(con: duckdb.DuckDBPyConnection, key: str, info: BatchInfo) -> None:
    con.execute("UPDATE batches SET state = 'submitted', batch_id = ? WHERE batch_key = ?",
                [info.id, key])
    set_status(con, key, info)


def set_status(con: duckdb.DuckDBPyConnection, key: str, info: BatchInfo) -> None:
    con.execute(
        "UPDATE batches SET status = ?, completed = ?, failed = ?, output_file_id = ?, "
        "error_file_id = ?, message = coalesce(?, message), polled_at = now() WHERE batch_key = ?",
        [info.status, info.completed, info.failed, info.output_file_id, info.error_file_id,
         info.message(), key])


def set_done(con: duckdb.DuckDBPyConnection, key: str, state: str, message: str | None = None) -> None:
    assert state in CLOSED_STATES
    con.execute("UPDATE batches SET state = ?, message = coalesce(?, message), ended_at = now() "
                "WHERE batch_key = ?", [state, message, key])


def open_batches(con: duckdb.DuckDBPyConnection) -> list[BatchRow]:
    """Every batch still in flight, oldest first."""
    rows = con.execute(f"SELECT {_COLUMNS} FROM batches WHERE state IN {OPEN_STATES} "
                       "ORDER BY created_at, batch_key").fetchall()
    return [BatchRow(*r) for r in rows]


def request_ids(con: duckdb.DuckDBPyConnection, key: str) -> list[str]:
    """A batch's requests in the order of its file's lines."""
    return [r for (r,) in con.execute(
        "SELECT request_id FROM batch_requests WHERE batch_key = ? ORDER BY position", [key]).fetchall()]


def held_back(con: duckdb.DuckDBPyConnection, ids: list[str], run_id: int) -> set[str]:
    """Which of `ids` must not go into a new batch now: in flight in an open batch, or
    failed earlier in this run (with --retry-failed they would otherwise come round again)."""
    rows = con.execute(
        f"""
        SELECT br.request_id FROM batch_requests br JOIN batches b USING (batch_key)
        WHERE b.state IN {OPEN_STATES} AND br.request_id IN (SELECT unnest($ids))
        UNION ALL
        SELECT request_id FROM failures WHERE run_id = $run AND request_id IN (SELECT unnest($ids))
        """, {"ids": ids, "run": run_id}).fetchall()
    return {r for (r,) in rows}


def in_flight(con: Any) -> tuple[int, int]:
    """(open batches, requests in them): what an online run would send a second time."""
    [(batches, requests)] = con.execute(
        f"SELECT count(*), coalesce(sum(requests), 0) FROM batches WHERE state IN {OPEN_STATES}"
    ).fetchall()
    return int(batches), int(requests)


LIST_SQL = """
SELECT b.batch_key, b.run_id, b.endpoint, b.state, b.status, b.batch_id, b.requests, b.bytes,
       b.completed, b.failed, b.message, b.created_at, b.polled_at, b.ended_at,
       (SELECT count(*) FROM batch_requests br JOIN responses s USING (request_id)
        WHERE br.batch_key = b.batch_key) AS answered
FROM batches b ORDER BY b.created_at, b.batch_key
"""


def list_batches(con: Any) -> list[dict[str, Any]]:
    """Every batch of the store, as dicts (what `synthgen batch status` shows)."""
    cur = con.execute(LIST_SQL)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
