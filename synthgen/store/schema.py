"""The store's schema: every table, and the ordered migrations that build it.

Everything synthgen knows lives in one DuckDB file:

    runs            one row per `synthgen generate` invocation (config without secrets)
    plans           one row per distinct (input, template, model, sampling) job
    plan_requests   which requests a plan contains (each once), with its first source line
    requests        one row per request: id, messages, parameters, metadata (ids unique by
                    construction: the planner inserts only ids it does not find)
    responses       one row per answered request (PRIMARY KEY: an answer is stored once):
                    text, reasoning, tool calls, refusal, parsed json, logprobs, usage
    failures        one row per request that ended without an answer (with its messages)
    invalid_inputs  input lines skipped by --skip-invalid, with the reason
    duplicate_inputs  lines that repeat an earlier line's request, with their own metadata
    evals           student evaluations (written by `synthgen eval`)
    batches         one row per Batch API batch: our key, the API's ids, state, counts
    batch_requests  which requests each batch carries (its file's lines, in order)
    batch_errors    every retryable error line of a batch (what counts a request's attempts)
    stages          one row per recipe stage: its recipe, plan, status, rows and kept
    stage_rows      every row of every stage: its parent, kept or the rule that removed it
    pass_rates      verified samples per prompt (best-of-n)
    preference_pairs  chosen/rejected answers to one prompt, from judge scores
    wasted_attempts  attempts the teacher answered (and billed) that were not kept: schema
                    misfits, answers max_tokens cut; their usage, text and fault
    billed_attempts  VIEW: the bill, one row per attempt answered (kept, or wasted)
    tool_results    what each tool call of an episode returned, once (`synthgen episodes`)
    scores          one row per (answer, teacher, K): the teacher's log-probabilities of that
                    answer's own tokens, position by position (PRIMARY KEY score_id)
    score_failures  one row per scoring request that ended without scores
    corpus          VIEW: responses joined to their requests, the thing people query;
                    with each answer's logprobs_mode and logprobs_temperature (its run's)
    stage_requests  VIEW: which requests belong to which recipe stage's plan
    scored          VIEW: scores joined to the answers they score (what OPD trains on)
    <stage name>    VIEW per recipe stage: its kept rows, corpus's columns + parent_request_id

Schema changes are ordered, named migrations recorded in `schema_migrations`,
never "delete your database".
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from ..errors import StoreError
from . import scores, views, wasted
from .columns import LOGPROBS_TYPE
from .tx import transaction


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


CORPUS_VIEW = """
CREATE OR REPLACE VIEW corpus AS
SELECT r.request_id, q.run_id, q.line, r.sample_index, q.messages,
       r.text AS response, r.finish_reason, r.prompt_tokens, r.completion_tokens,
       r.model, r.logprobs, q.metadata, q.params, r.latency_ms, r.attempts,
       r.endpoint, r.created_at, r.reasoning, r.tool_calls, r.refusal, r.json
FROM responses r JOIN requests q USING (request_id)
"""


def _m003_answer_parts(con: duckdb.DuckDBPyConnection) -> None:
    """What an answer carries besides its text: the teacher's reasoning (R1-style traces),
    tool calls and refusals (an answer whose content is null is one of these, not nothing),
    and the parsed object of a schema-checked answer. All visible in `corpus`."""
    con.execute(
        """
        ALTER TABLE responses ADD COLUMN reasoning VARCHAR;
        ALTER TABLE responses ADD COLUMN tool_calls JSON;
        ALTER TABLE responses ADD COLUMN refusal VARCHAR;
        ALTER TABLE responses ADD COLUMN json JSON;
        """
    )
    con.execute(CORPUS_VIEW)


def _m004_duplicate_inputs(con: duckdb.DuckDBPyConnection) -> None:
    """Input lines whose request an earlier line of the same plan already made: one request,
    so one answer, but every line's metadata stays reachable here."""
    con.execute(
        """
        CREATE TABLE duplicate_inputs (
            plan_key VARCHAR,
            line BIGINT,
            request_id VARCHAR,
            metadata JSON
        );
        """
    )


def _m005_batch_api(con: duckdb.DuckDBPyConnection) -> None:
    """Batch API batches, recorded before anything is uploaded so that a killed run
    re-attaches to what it submitted instead of paying for it twice.

    `batch_key` is synthgen's own name for a batch, sent as the batch's metadata: a batch
    created just before a kill (its id never recorded) is found again by it. `state` is
    ours (preparing: rows written, nothing uploaded; uploaded: the input file id is known;
    submitted: the batch id is known; ingested: its output and error files are stored;
    lost: the API no longer knows it), `status` the API's last word. A request is in
    flight while a batch of it is not ingested or lost.
    """
    con.execute(
        """
        CREATE TABLE batches (
            batch_key VARCHAR PRIMARY KEY,
            run_id INTEGER,
            plan_key VARCHAR,
            endpoint VARCHAR,
            state VARCHAR,
            status VARCHAR,
            batch_id VARCHAR,
            input_file_id VARCHAR,
            output_file_id VARCHAR,
            error_file_id VARCHAR,
            requests INTEGER,
            bytes BIGINT,
            completed INTEGER,
            failed INTEGER,
            message VARCHAR,
            created_at TIMESTAMPTZ,
            polled_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ
        );
        CREATE TABLE batch_requests (
            batch_key VARCHAR,
            request_id VARCHAR,
            position INTEGER
        );
        CREATE TABLE batch_errors (
            batch_key VARCHAR,
            request_id VARCHAR,
            error_type VARCHAR,
            status_code INTEGER,
            message VARCHAR,
            created_at TIMESTAMPTZ,
            PRIMARY KEY (batch_key, request_id)
        );
        """
    )


def _m006_recipes(con: duckdb.DuckDBPyConnection) -> None:
    """What recipes (`synthgen run`) add. A stage is a plan of its own (or, without a
    template, a choice of rows already stored); each stage's rows, with their parent and
    whether its `keep` kept them, are `stage_rows`, and a view named after the stage shows
    the kept ones with corpus's columns. Verifiers record pass rates per prompt, judges the
    preference pairs that `export --format preference` writes."""
    con.execute(
        """
        CREATE TABLE stages (
            stage VARCHAR PRIMARY KEY,
            recipe VARCHAR,
            position INTEGER,
            plan_key VARCHAR,
            status VARCHAR,
            spec JSON,
            rows BIGINT,
            kept BIGINT,
            updated_at TIMESTAMPTZ
        );
        CREATE TABLE stage_rows (
            stage VARCHAR,
            request_id VARCHAR,
            parent_request_id VARCHAR,
            kept BOOLEAN,
            rule VARCHAR,
            detail VARCHAR,
            other_request_id VARCHAR
        );
        CREATE TABLE pass_rates (
            stage VARCHAR,
            prompt JSON,
            samples INTEGER,
            passed INTEGER,
            pass_rate DOUBLE
        );
        CREATE TABLE preference_pairs (
            stage VARCHAR,
            chosen_request_id VARCHAR,
            rejected_request_id VARCHAR,
            chosen_score DOUBLE,
            rejected_score DOUBLE,
            created_at TIMESTAMPTZ
        );
        CREATE VIEW stage_requests AS
        SELECT s.recipe, s.stage, p.request_id
        FROM stages s JOIN plan_requests p USING (plan_key);
        """
    )


def _m010_tool_results(con: duckdb.DuckDBPyConnection) -> None:
    """What each tool call of an episode returned (synthgen/episodes.py), stored once: run
    again, an episode uses the stored result instead of running the tool a second time."""
    con.execute(
        """
        CREATE TABLE tool_results (
            call_key VARCHAR PRIMARY KEY,
            name VARCHAR,
            arguments VARCHAR,
            result VARCHAR,
            ok BOOLEAN,
            created_at TIMESTAMPTZ
        )
        """
    )


# Ordered: append new migrations at the end, never edit or reorder old ones.
MIGRATIONS: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_requests_without_index", _m002_requests_without_index),
    ("003_answer_parts", _m003_answer_parts),
    ("004_duplicate_inputs", _m004_duplicate_inputs),
    ("005_batch_api", _m005_batch_api),
    ("006_recipes", _m006_recipes),
    ("007_logprobs_mode", views.logprobs_mode),
    ("008_usage_parts", views.usage_parts),
    ("009_wasted_attempts", wasted.migrate),
    ("010_tool_results", _m010_tool_results),
    ("011_scores", scores.migrate),
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
        with transaction(con):
            fn(con)
            con.execute("INSERT INTO schema_migrations (name) VALUES (?)", [name])
