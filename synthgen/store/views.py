"""The `corpus` view: one row per answer with its prompt, as every reader sees it.

Each version is the view a migration (schema.py) creates; a newer one replaces the
older, so a store of any age shows the same columns once migrated.
"""

from __future__ import annotations

import duckdb

CORPUS_VIEW_007 = """
CREATE OR REPLACE VIEW corpus AS
SELECT r.request_id, q.run_id, q.line, r.sample_index, q.messages,
       r.text AS response, r.finish_reason, r.prompt_tokens, r.completion_tokens,
       r.model, r.logprobs, q.metadata, q.params, r.latency_ms, r.attempts,
       r.endpoint, r.created_at, r.reasoning, r.tool_calls, r.refusal, r.json,
       CASE WHEN r.logprobs IS NOT NULL THEN u.config->>'logprobs_mode' END AS logprobs_mode,
       CASE WHEN r.logprobs IS NULL THEN NULL
            WHEN u.config->>'logprobs_mode' = 'raw' THEN 1.0
            WHEN u.config->>'logprobs_mode' = 'processed'
                THEN coalesce(TRY_CAST(q.params->>'temperature' AS DOUBLE), 1.0)
       END AS logprobs_temperature
FROM responses r JOIN requests q USING (request_id) LEFT JOIN runs u ON u.run_id = r.run_id
"""


def logprobs_mode(con: duckdb.DuckDBPyConnection) -> None:
    """What distribution each answer's logprobs are: `raw` (the model's own, temperature 1:
    llama.cpp's server, vLLM's default raw_logprobs) or `processed` (after the request's
    temperature: vLLM's processed_logprobs, its V0 engine), and at what temperature.
    Recorded per run (runs.config's logprobs_mode, `generate --logprobs-mode`), so each
    answer has the mode of the run that answered it; NULL where nobody knows (a hosted
    API). KD reads both to compare the student at the teacher's temperature."""
    con.execute(CORPUS_VIEW_007)



CORPUS_VIEW_008 = CORPUS_VIEW_007.replace(
    "r.refusal, r.json,",
    "r.refusal, r.json, r.cached_tokens, r.cache_write_tokens, r.reasoning_tokens,")


def usage_parts(con: duckdb.DuckDBPyConnection) -> None:
    """The parts of an answer's usage providers price apart: prompt tokens read from a cache
    (OpenAI's cached_tokens, Anthropic's cache_read_input_tokens), prompt tokens written
    to one (Anthropic's cache_creation_input_tokens), and reasoning tokens (within the
    completion tokens). NULL where the teacher did not say."""
    con.execute("ALTER TABLE responses ADD COLUMN cached_tokens INTEGER")
    con.execute("ALTER TABLE responses ADD COLUMN cache_write_tokens INTEGER")
    con.execute("ALTER TABLE responses ADD COLUMN reasoning_tokens INTEGER")
    con.execute("ALTER TABLE runs ADD COLUMN cached_tokens BIGINT")
    con.execute("ALTER TABLE runs ADD COLUMN cache_write_tokens BIGINT")
    con.execute(CORPUS_VIEW_008)
