"""The DuckDB store: schema, migrations and read access.

Everything synthgen knows lives in one DuckDB file:

    runs            one row per `synthgen generate` invocation (config without secrets)
    plans           one row per distinct (input, template, model, sampling) job
    plan_requests   which requests a plan contains, with their source line
    requests        one row per request: id, messages, parameters, metadata
    responses       one row per answered request (PRIMARY KEY: an answer is stored once)
    failures        one row per request that ended without an answer (with its messages)
    invalid_inputs  input lines skipped by --skip-invalid, with the reason
    evals           student evaluations (written by `synthgen eval`)
    corpus          VIEW: responses joined to their requests, the thing people query

Schema changes are ordered, named migrations recorded in `schema_migrations`,
never "delete your database".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from .errors import StoreError

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


# Ordered: append new migrations at the end, never edit or reorder old ones.
MIGRATIONS: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    ("001_initial", _m001_initial),
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
