"""Attempts the teacher answered, and the provider billed, that were not kept.

A schema misfit or an answer max_tokens cut is paid for like any answer, then sent
again. The bill is every attempt the teacher answered, so each such attempt's usage is
stored here, once (`attempt_key` is the run and attempt online, the batch for a Batch API
line: ingesting a file again stores nothing twice), with its text (why it was not kept).
`billed_attempts` is the whole bill: the kept answers and these, one row per attempt.
"""

from __future__ import annotations

import duckdb

from ..types import Wasted


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """009_wasted_attempts: the table, and the bill as a view over it and `responses`."""
    con.execute(
        """
        CREATE TABLE wasted_attempts (
            attempt_key VARCHAR PRIMARY KEY,
            request_id VARCHAR,
            run_id INTEGER,
            error_type VARCHAR,
            finish_reason VARCHAR,
            text VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            cache_write_tokens INTEGER,
            reasoning_tokens INTEGER,
            model VARCHAR,
            endpoint VARCHAR,
            created_at TIMESTAMPTZ
        );
        CREATE VIEW billed_attempts AS
        SELECT request_id, run_id, 'kept' AS outcome, prompt_tokens, completion_tokens,
               cached_tokens, cache_write_tokens, reasoning_tokens, created_at
        FROM responses
        UNION ALL
        SELECT request_id, run_id, error_type, prompt_tokens, completion_tokens,
               cached_tokens, cache_write_tokens, reasoning_tokens, created_at
        FROM wasted_attempts;
        """
    )


INSERT_WASTED = """
INSERT INTO wasted_attempts
SELECT unnest($keys), unnest($ids), $run, unnest($types), unnest($finish), unnest($texts),
       unnest($pt)::INTEGER, unnest($ct)::INTEGER, unnest($cached)::INTEGER,
       unnest($cache_write)::INTEGER, unnest($reasoning)::INTEGER, unnest($models),
       unnest($endpoints), now()
ON CONFLICT DO NOTHING
"""


def insert(con: duckdb.DuckDBPyConnection, run_id: int, rows: list[Wasted]) -> None:
    a = [w.answer for w in rows]
    con.execute(INSERT_WASTED, {
        "keys": [w.key for w in rows], "ids": [w.request_id for w in rows], "run": run_id,
        "types": [w.error_type for w in rows], "finish": [x.finish_reason for x in a],
        "texts": [x.text for x in a], "pt": [x.prompt_tokens for x in a],
        "ct": [x.completion_tokens for x in a], "cached": [x.cached_tokens for x in a],
        "cache_write": [x.cache_write_tokens for x in a],
        "reasoning": [x.reasoning_tokens for x in a], "models": [x.model for x in a],
        "endpoints": [x.endpoint for x in a],
    })
