"""The DuckDB store: schema, migrations and read access.

Everything synthgen knows lives in one DuckDB file:

    runs            one row per `synthgen generate` invocation (config without secrets)
    plans           one row per distinct (input, template, model, sampling) job
    plan_requests   which requests a plan contains (each once), with its first source line
    requests        one row per request: id, messages, parameters, metadata (ids unique by
                    construction: the planner inserts only ids it does not find)
    responses       one row per answered request (PRIMARY KEY: an answer is stored once)
    failures        one row per request that ended without an answer (with its messages)
    invalid_inputs  input lines skipped by --skip-invalid, with the reason
    evals           student evaluations (written by `synthgen eval`)
    corpus          VIEW: responses joined to their requests, the thing people query

Schema changes are ordered, named migrations recorded in `schema_migrations`,
never "delete your database".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from .errors import StoreError

T = TypeVar("T")

# One entry per generated token: the chosen token, and the teacher's top-K alternatives.
# `id` is the teacher's token id where the server reports it (llama.cpp does), else NULL.
LOGPROBS_TYPE = (
    "STRUCT(token VARCHAR, id INTEGER, logprob DOUBLE, "
    "top_logprobs STRUCT(token VARCHAR, id INTEGER, logprob DOUBLE)[])[]"
)


def _m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY,
            plan_key VARCHAR,
            status VARCHAR,
            started_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ,
            model VARCHAR,
            base_urls VARCHAR[],
            config JSON,
            versions JSON,
            planned BIGINT,
            answered BIGINT,
            failed BIGINT,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            message VARCHAR
        );
        CREATE TABLE plans (
            plan_key VARCHAR PRIMARY KEY,
            source VARCHAR,
            fingerprint VARCHAR,
            total BIGINT,
            invalid BIGINT,
            created_at TIMESTAMPTZ
        );
        CREATE TABLE plan_requests (
            plan_key VARCHAR,
            request_id VARCHAR,
            line BIGINT
        );
        CREATE TABLE requests (
            request_id VARCHAR PRIMARY KEY,
            run_id INTEGER,
            line BIGINT,
            sample_index INTEGER,
            model VARCHAR,
            messages JSON,
            params JSON,
            metadata JSON,
            created_at TIMESTAMPTZ
        );
        """
    )
    con.execute(
        f"""
        CREATE TABLE responses (
            request_id VARCHAR PRIMARY KEY,
            run_id INTEGER,
            sample_index INTEGER,
            text VARCHAR,
            finish_reason VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms DOUBLE,
            attempts INTEGER,
            model VARCHAR,
            endpoint VARCHAR,
            created_at TIMESTAMPTZ,
            logprobs {LOGPROBS_TYPE}
        );
        CREATE TABLE failures (
            request_id VARCHAR PRIMARY KEY,
            run_id INTEGER,
            messages JSON,
            error_type VARCHAR,
            status_code INTEGER,
            message VARCHAR,
            attempts INTEGER,
            created_at TIMESTAMPTZ
        );
        CREATE TABLE invalid_inputs (
            plan_key VARCHAR,
            line BIGINT,
            error VARCHAR,
            raw VARCHAR
        );
        CREATE TABLE evals (
            eval_id VARCHAR,
            created_at TIMESTAMPTZ,
            model_dir VARCHAR,
            label VARCHAR,
            query VARCHAR,
            rows BIGINT,
            metrics JSON
        );
        CREATE VIEW corpus AS
        SELECT r.request_id, q.run_id, q.line, r.sample_index, q.messages,
               r.text AS response, r.finish_reason, r.prompt_tokens, r.completion_tokens,
               r.model, r.logprobs, q.metadata, q.params, r.latency_ms, r.attempts,
               r.endpoint, r.created_at
        FROM responses r JOIN requests q USING (request_id);
        """
    )


def _m002_requests_without_index(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the PRIMARY KEY on `requests` and make `plan_requests` one row per request.

    The key's in-memory index cost ~120 MB at a million requests and its checks made
    planning slower; the planner already dedupes with an anti-join against the table
    (one process writes a store at a time: DuckDB locks the file). One row per request
    in `plan_requests` turns every per-plan count into a plain count(*).
    DuckDB cannot drop a key in place, so both tables are rebuilt.
    """
    con.execute(
        """
        DROP VIEW corpus;
        CREATE TABLE requests_new (
            request_id VARCHAR,
            run_id INTEGER,
            line BIGINT,
            sample_index INTEGER,
            model VARCHAR,
            messages JSON,
            params JSON,
            metadata JSON,
            created_at TIMESTAMPTZ
        );
        INSERT INTO requests_new SELECT * FROM requests;
        DROP TABLE requests;
        ALTER TABLE requests_new RENAME TO requests;
        CREATE TABLE plan_requests_new AS
            SELECT plan_key, request_id, min(line) AS line FROM plan_requests
            GROUP BY plan_key, request_id ORDER BY plan_key, line;
        DROP TABLE plan_requests;
        ALTER TABLE plan_requests_new RENAME TO plan_requests;
        CREATE VIEW corpus AS
        SELECT r.request_id, q.run_id, q.line, r.sample_index, q.messages,
               r.text AS response, r.finish_reason, r.prompt_tokens, r.completion_tokens,
               r.model, r.logprobs, q.metadata, q.params, r.latency_ms, r.attempts,
               r.endpoint, r.created_at
        FROM responses r JOIN requests q USING (request_id);
        """
    )


# Ordered: append new migrations at the end, never edit or reorder old ones.
MIGRATIONS: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_requests_without_index", _m002_requests_without_index),
]


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Apply the migrations this file has not seen yet, each in its own transaction."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, "
        "applied_at TIMESTAMPTZ DEFAULT now())"
    )
    done = {row[0] for row in con.execute("SELECT name FROM schema_migrations").fetchall()}
    known = {name for name, _ in MIGRATIONS}
    if done - known:
        raise StoreError(
            f"this database was written by a newer synthgen (migrations {sorted(done - known)}); "
            "upgrade synthgen to use it"
        )
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        con.execute("BEGIN")
        try:
            fn(con)
            con.execute("INSERT INTO schema_migrations (name) VALUES (?)", [name])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and, unless read-only, create and migrate) a synthgen store."""
    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"{path}: no such database")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise StoreError(f"{path}: cannot open database ({_first_line(exc)})") from exc
    except duckdb.Error as exc:
        raise StoreError(f"{path}: not a DuckDB database ({_first_line(exc)})") from exc
    if read_only:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "schema_migrations" not in tables:
            con.close()
            raise StoreError(f"{path}: not a synthgen store (no schema_migrations table)")
    else:
        migrate(con)
    return con


# A run's DuckDB working memory. DuckDB treats its limit as a cache size as much as a
# cap: without one it keeps every block a run touched (a million-prompt run held ~250 MB
# of cached table blocks and finished query results). Sorts and joins spill to disk
# beyond it; a batch that truly needs more (long top-20 logprobs) raises it, see below.
# The responses key's index counts against the limit and cannot be evicted (~67 MB at a
# million answers), so the writer keeps this much free above it (`keep_headroom`).
# A million-prompt run took as long at 32 MB as at 64 MB and peaked ~30 MB lower.
RUN_MEMORY_LIMIT = 32 * 2**20
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def limit_memory(con: duckdb.DuckDBPyConnection, limit: int = RUN_MEMORY_LIMIT) -> None:
    """Start a run with a small DuckDB memory limit (never above DuckDB's own default)."""
    if limit < _memory_limit(con):
        con.execute(f"SET memory_limit = '{limit}B'")


# Memory DuckDB cannot evict: the responses key's index and in-memory tables.
_PINNED_SQL = ("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
               "WHERE tag IN ('ART_INDEX', 'IN_MEMORY_TABLE')")


def keep_headroom(con: duckdb.DuckDBPyConnection, headroom: int = RUN_MEMORY_LIMIT) -> None:
    """Raise the limit so that `headroom` stays free above the memory DuckDB cannot evict.

    The writer calls this as the index grows: left to out-of-memory errors, the limit
    doubled (64 -> 128 -> 256 MB in a million-answer run) and the cache filled the slack.
    """
    [(pinned,)] = con.execute(_PINNED_SQL).fetchall()
    want = min(int(pinned + headroom), _ceiling())
    if want > _memory_limit(con):
        con.execute(f"SET memory_limit = '{want}B'")


def grow_memory(con: duckdb.DuckDBPyConnection, ceiling: int | None = None) -> bool:
    """Double DuckDB's memory limit after an out-of-memory error; False at the ceiling
    (80% of the machine's memory, DuckDB's default), where the error should stand."""
    ceiling = ceiling or _ceiling()
    current = _memory_limit(con)
    grown = min(2 * current, ceiling)
    # DuckDB reads the limit back rounded ('18.7 GiB'), so "at the ceiling" means "within
    # 1% of it": comparing exactly retried an out-of-memory error forever.
    if grown <= current * 1.01:
        return False
    con.execute(f"SET memory_limit = '{grown}B'")
    return True


def retry_out_of_memory(con: duckdb.DuckDBPyConnection, fn: Callable[[], T]) -> T:
    """Run `fn` (one transaction or one query); if DuckDB runs out of its limit, grow the
    limit and run it again. `fn` must roll back what it did before raising."""
    while True:
        try:
            return fn()
        except duckdb.OutOfMemoryException:
            if not grow_memory(con):
                raise


def _ceiling() -> int:
    return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _memory_limit(con: duckdb.DuckDBPyConnection) -> int:
    [(text,)] = con.execute("SELECT current_setting('memory_limit')").fetchall()
    number, _, unit = str(text).strip().partition(" ")
    if not unit:  # e.g. '134217728B'
        unit = number.lstrip("0123456789.")
        number = number[: len(number) - len(unit)]
    return int(float(number) * _UNITS.get(unit.upper() or "B", 1))


def open_store(path: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Public entry point: a DuckDB connection to a store, read-only unless asked.

    Query it with SQL, e.g. ``open_store("corpus.duckdb").sql("FROM corpus LIMIT 5")``.
    """
    return connect(path, read_only=read_only)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def arrow_batches(con: duckdb.DuckDBPyConnection, query: str, params: object = None,
                  batch_size: int = 4096):
    """A streaming Arrow RecordBatchReader over a query (DuckDB 1.x and 2.x spell it apart)."""
    rel = con.sql(query, params=params)
    if hasattr(rel, "to_arrow_reader"):
        return rel.to_arrow_reader(batch_size)
    return rel.fetch_arrow_reader(batch_size)
