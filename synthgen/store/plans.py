"""The plan tables: which requests each input (with its config) produced, and what of
them is still pending. The SQL of planning, in the store's room; `synthgen.plan` decides
what to plan and when.

    forget_unfinished   what a plan cut short left behind, deleted before planning again
    insert_batch        one committed batch of planned requests (deduped by anti-join)
    finish_plan         the last transaction of a plan: its invalid rows and its `plans` row
    pending_batches     a plan's pending requests in input order, in bounded memory
    plan_counts         answered, failed and pending requests of a plan
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import duckdb

from ..types import Request
from .memory import grow_memory, retry_out_of_memory
from .tx import transaction


def plan_row(con: duckdb.DuckDBPyConnection, key: str) -> tuple[int, int] | None:
    """(total, invalid) of a finished plan, or None when `key` has no finished plan."""
    row = con.execute("SELECT total, invalid FROM plans WHERE plan_key = ?", [key]).fetchone()
    return (row[0], row[1]) if row is not None else None


def has_plan(con: duckdb.DuckDBPyConnection, key: str) -> bool:
    return con.execute("SELECT 1 FROM plans WHERE plan_key = ?", [key]).fetchone() is not None


def forget_unfinished(con: duckdb.DuckDBPyConnection, key: str, run_id: int, replan: bool) -> None:
    """Delete what plans that never finished left behind (and, to plan a query again, the
    old copy of `key`).

    A plan is finished once its `plans` row exists (written in its last transaction).
    Requests are only ever added by the run that first planned them, so the requests of a
    run whose plan never finished are leftovers, unless an answer, a failure or a finished
    plan refers to them (a plan is sent while it is planned): those stay, and the next
    plan of the same input finds them.
    """
    with transaction(con):
        if replan:
            con.execute("DELETE FROM plans WHERE plan_key = ?", [key])
        con.execute("DELETE FROM invalid_inputs WHERE plan_key = ?", [key])
        con.execute("DELETE FROM duplicate_inputs WHERE plan_key NOT IN (SELECT plan_key FROM plans)")
        con.execute("DELETE FROM plan_requests WHERE plan_key NOT IN (SELECT plan_key FROM plans)")
        con.execute(
            """
            DELETE FROM requests q
            WHERE run_id IN (SELECT run_id FROM runs
                             WHERE run_id != $run
                               AND (plan_key IS NULL OR plan_key NOT IN (SELECT plan_key FROM plans)))
              AND NOT EXISTS (SELECT 1 FROM responses s WHERE s.request_id = q.request_id)
              AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.request_id = q.request_id)
              AND NOT EXISTS (SELECT 1 FROM plan_requests p WHERE p.request_id = q.request_id)
            """, {"run": run_id})


def insert_batch(con: duckdb.DuckDBPyConnection, key: str, run_id: int, model: str,
                  batch: list[tuple]) -> int:
    """Commit one batch; return how many requests it added to the plan.

    Dedupe is by anti-join, not by index: a prompt seen earlier in this plan is not added
    to the plan again (its first line is kept), and a request any plan already stored is
    not stored again (same id, same content). The batch reaches DuckDB as column lists
    (converted in C++), staged once in a temporary table for the two inserts.
    """
    ids, lines, samples, messages, params, metadata = (list(c) for c in zip(*batch, strict=True))
    with transaction(con):
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _plan_batch AS
            SELECT unnest($ids) AS request_id, unnest($lines)::BIGINT AS line,
                   unnest($samples)::INTEGER AS sample_index, unnest($messages) AS messages,
                   unnest($params) AS params, unnest($metadata)::VARCHAR AS metadata
            """,
            {"ids": ids, "lines": lines, "samples": samples, "messages": messages,
             "params": params, "metadata": metadata},
        )
        [(added,)] = con.execute(
            """
            INSERT INTO plan_requests
            SELECT $key, request_id, min(line) FROM _plan_batch b
            WHERE NOT EXISTS (SELECT 1 FROM plan_requests p
                              WHERE p.plan_key = $key AND p.request_id = b.request_id)
            GROUP BY request_id ORDER BY min(line)
            """,
            {"key": key},
        ).fetchall()
        [(inserted,)] = con.execute(
            """
            INSERT INTO requests
            SELECT DISTINCT ON (request_id) request_id, $run, line, sample_index, $model,
                   messages::JSON, params::JSON, metadata::JSON, now()
            FROM _plan_batch b
            WHERE NOT EXISTS (SELECT 1 FROM requests r WHERE r.request_id = b.request_id)
            ORDER BY request_id, line
            """,
            {"run": run_id, "model": model},
        ).fetchall()
        if inserted < len(set(ids)):
            # Requests an earlier plan stored (same prompt, same parameters): the metadata is
            # the input's as it is now, so an edit of a line's other fields is what exports.
            con.execute(
                """
                UPDATE requests SET metadata = b.metadata::JSON
                FROM (SELECT DISTINCT ON (request_id) request_id, metadata FROM _plan_batch
                      ORDER BY request_id, line) b
                WHERE requests.request_id = b.request_id
                  AND requests.metadata::VARCHAR IS DISTINCT FROM b.metadata
                """)
        # A line whose request an earlier line already made: one request, one answer, but
        # its own metadata is kept (sample 0 stands for the line).
        con.execute(
            """
            INSERT INTO duplicate_inputs
            SELECT $key, b.line, b.request_id, b.metadata::JSON FROM _plan_batch b
            JOIN plan_requests p ON p.plan_key = $key AND p.request_id = b.request_id
            WHERE b.sample_index = 0 AND b.line != p.line
            """,
            {"key": key},
        )
        con.execute("DROP TABLE _plan_batch")
    return added


def finish_plan(con: duckdb.DuckDBPyConnection, key: str, source: str, fingerprint: str,
                invalid_rows: Iterable[tuple[int, str, str]], invalid: int) -> tuple[int, int]:
    """The plan's last transaction: its invalid rows (those kept) and its `plans` row, which
    makes it a finished plan. Returns (requests in the plan, lines that repeated one)."""
    [(total,)] = con.execute("SELECT count(*) FROM plan_requests WHERE plan_key = ?", [key]).fetchall()
    [(duplicates,)] = con.execute(
        "SELECT count(*) FROM duplicate_inputs WHERE plan_key = ?", [key]).fetchall()
    rows = [(key, line, err, raw) for line, err, raw in invalid_rows]
    with transaction(con):
        if rows:
            con.executemany("INSERT INTO invalid_inputs VALUES (?, ?, ?, ?)", rows)
        con.execute("INSERT INTO plans VALUES (?, ?, ?, ?, ?, now())",
                    [key, source, fingerprint, total, invalid])
    return total, duplicates


def done_in_lines(con: duckdb.DuckDBPyConnection, key: str, lo: int, hi: int, retry_failed: bool) -> int:
    """How many of the plan's requests of lines lo <= line < hi need no sending."""
    [(done,)] = con.execute(DONE_IN_LINES_SQL, {"key": key, "lo": lo, "hi": hi,
                                                "retry_failed": retry_failed}).fetchall()
    return done


PENDING_SQL = """
SELECT p.request_id, r.messages, r.params, p.line, r.sample_index
FROM plan_requests p JOIN requests r USING (request_id)
WHERE p.plan_key = $key AND p.line >= $lo AND p.line < $hi
  AND NOT EXISTS (SELECT 1 FROM responses s WHERE s.request_id = p.request_id)
  AND ($retry_failed OR NOT EXISTS (SELECT 1 FROM failures f WHERE f.request_id = p.request_id))
ORDER BY p.line, r.sample_index
"""


PENDING_LINES = 25_000

# How many of a plan's requests in a range of lines need no sending (what progress counts
# as already done).
DONE_IN_LINES_SQL = """
SELECT count(*) FROM plan_requests p
WHERE p.plan_key = $key AND p.line >= $lo AND p.line < $hi
  AND (EXISTS (SELECT 1 FROM responses s WHERE s.request_id = p.request_id)
       OR (NOT $retry_failed AND EXISTS (SELECT 1 FROM failures f WHERE f.request_id = p.request_id)))
"""


def pending_batches(con: duckdb.DuckDBPyConnection, key: str, retry_failed: bool,
                    rows: int = 4096, lines: int = PENDING_LINES, lo: int | None = None,
                    hi: int | None = None) -> Iterator[list[Request]]:
    """Pending requests of a plan in input order (lines lo <= line < hi, default all), in
    lists of up to `rows` Requests.

    Queried `lines` input lines at a time: one query over the whole plan would join, sort
    and hold every pending request at once (~140 MB at a million requests, more than the
    rest of a run). 25,000 lines keep a query's working memory near 15 MB while the
    per-query cost (a scan of `requests` for the join) stays ~4 s per million requests.
    """
    [(first, last)] = con.execute(
        "SELECT min(line), max(line) FROM plan_requests WHERE plan_key = $key "
        "AND line >= coalesce($lo, 0) AND ($hi IS NULL OR line < $hi)",
        {"key": key, "lo": lo, "hi": hi}).fetchall()
    if first is None:
        return
    start = first
    while start <= last:
        end = start + lines if hi is None else min(start + lines, hi)
        yield from _pending_range(con, key, retry_failed, rows, start, end)
        start += lines


def _pending_range(con: duckdb.DuckDBPyConnection, key: str, retry_failed: bool, rows: int,
                   lo: int, hi: int) -> Iterator[list[Request]]:
    """The pending requests of lines lo <= line < hi. DuckDB may run out of its limit while
    the result streams (the writer's commits share it), not only when the query starts:
    then the limit grows and the query runs again from just after the last request given
    (by line and sample, the result's order), so none is given twice."""
    after: tuple[int, int] | None = None
    while True:
        params = {"key": key, "retry_failed": retry_failed, "lo": lo if after is None else after[0],
                  "hi": hi}
        cur = retry_out_of_memory(con, lambda p=params: con.execute(PENDING_SQL, p))
        try:
            while batch := cur.fetchmany(rows):
                if after is not None:
                    batch = [r for r in batch if (r[3], r[4]) > after]
                if batch:
                    after = (batch[-1][3], batch[-1][4])
                    yield [Request(*r) for r in batch]
            return
        except duckdb.OutOfMemoryException:
            if not grow_memory(con):
                raise


# Requests counted per hash-partition query in `plan_counts`. One query over a million
# requests builds a ~70 MB hash table of request ids; on top of the responses key's index
# (also counted against DuckDB's limit) that pushed a million-prompt run's memory limit up
# twice at its very end. A quarter million ids per query keeps the table near 15 MB.
COUNT_PARTITION = 250_000

PLAN_COUNTS_SQL = """
    SELECT count(*),
           count(*) FILTER (WHERE s.request_id IS NOT NULL),
           count(*) FILTER (WHERE s.request_id IS NULL AND f.request_id IS NOT NULL)
    FROM (SELECT request_id FROM plan_requests
          WHERE plan_key = $key AND hash(request_id) % $parts = $part) p
         LEFT JOIN (SELECT request_id FROM responses
                    WHERE hash(request_id) % $parts = $part) s USING (request_id)
         LEFT JOIN (SELECT request_id FROM failures
                    WHERE hash(request_id) % $parts = $part) f USING (request_id)
"""


def plan_counts(con: duckdb.DuckDBPyConnection, key: str, total: int = 0) -> dict[str, int]:
    """Answered, failed and pending requests of a plan, counted by the database.

    `total` (the plan's size, when known) splits the count into hash partitions of about
    COUNT_PARTITION requests, trading a few scans of the tables for a small hash table.
    """
    parts = max(1, -(-total // COUNT_PARTITION))
    sums = [0, 0, 0]
    for part in range(parts):
        row = retry_out_of_memory(con, lambda p=part: con.execute(
            PLAN_COUNTS_SQL, {"key": key, "parts": parts, "part": p}).fetchone())
        sums = [a + b for a, b in zip(sums, row, strict=True)]
    total, answered, failed = sums
    return {"total": total, "answered": answered, "failed": failed,
            "pending": total - answered - failed}
