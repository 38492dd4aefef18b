"""One transaction of outcomes: how answers and failures go into the store.

Shared by the writer thread and by the import of recovery files, so both store exactly
the same columns and keep the same rule: an answer already stored is never replaced.
Answers go in as column lists (`unnest($ids), ...`: DuckDB converts the lists in C++ and
no Arrow is loaded into a plain run); a batch carrying logprobs goes through an Arrow
table, which builds the nested column about twice as fast as DuckDB's JSON cast.
"""

from __future__ import annotations

import contextlib

import duckdb
import orjson

from ..types import Answer, Failure


def commit(con: duckdb.DuckDBPyConnection, run_id: int, answers: list[tuple],
           failures: list[Failure], replace_failures: bool = False) -> None:
    """One transaction: answers (request_id, sample_index, Answer, latency_ms, attempts)
    and failures of run `run_id`; an answer already stored is kept as it is."""
    arrow = bool(answers) and any(a[2].logprobs for a in answers)
    if arrow:
        con.register("_answers", _answers_arrow(answers))
    con.execute("BEGIN")
    try:
        if arrow:
            con.execute(INSERT_ANSWERS_ARROW, {"run": run_id})
        elif answers:
            con.execute(INSERT_ANSWERS, _answer_columns(answers, run_id))
        if answers and replace_failures:
            con.execute("DELETE FROM failures WHERE request_id IN (SELECT unnest($1))",
                        [[a[0] for a in answers]])
        if failures:
            con.execute(INSERT_FAILURES, _failure_columns(failures, run_id))
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT may have ended it already
            con.execute("ROLLBACK")
        raise
    finally:
        if arrow:
            con.unregister("_answers")


RESPONSE_COLUMNS = ("request_id, run_id, sample_index, text, finish_reason, prompt_tokens, "
                    "completion_tokens, latency_ms, attempts, model, endpoint, created_at, logprobs, "
                    "reasoning, tool_calls, refusal, json")

INSERT_ANSWERS = f"""
INSERT INTO responses ({RESPONSE_COLUMNS})
SELECT unnest($ids), $run, unnest($samples), unnest($texts), unnest($finish), unnest($pt),
       unnest($ct), unnest($latency), unnest($attempts), unnest($models), unnest($endpoints),
       now(), NULL, unnest($reasoning), unnest($tools)::JSON, unnest($refusals), unnest($json)::JSON
ON CONFLICT DO NOTHING
"""

INSERT_ANSWERS_ARROW = f"""
INSERT INTO responses ({RESPONSE_COLUMNS})
SELECT request_id, $run, sample_index, text, finish_reason, prompt_tokens, completion_tokens,
       latency_ms, attempts, model, endpoint, now(), logprobs, reasoning, tool_calls::JSON,
       refusal, json::JSON
FROM _answers ON CONFLICT DO NOTHING
"""

INSERT_FAILURES = """
INSERT OR REPLACE INTO failures
    (request_id, run_id, messages, error_type, status_code, message, attempts, created_at)
SELECT unnest($ids), $run, unnest($messages)::JSON, unnest($types), unnest($codes),
       unnest($messages_), unnest($attempts), now()
"""


def _json_text(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _answer_columns(rows: list[tuple], run_id: int) -> dict[str, object]:
    ids, samples, answers, latencies, attempts = zip(*rows, strict=True)
    a: tuple[Answer, ...] = answers
    return {
        "ids": list(ids), "run": run_id, "samples": list(samples),
        "texts": [x.text for x in a], "finish": [x.finish_reason for x in a],
        "pt": [x.prompt_tokens for x in a], "ct": [x.completion_tokens for x in a],
        "latency": [float(x) for x in latencies], "attempts": list(attempts),
        "models": [x.model for x in a], "endpoints": [x.endpoint for x in a],
        "reasoning": [x.reasoning for x in a], "tools": [_json_text(x.tool_calls) for x in a],
        "refusals": [x.refusal for x in a], "json": [_json_text(x.json) for x in a],
    }


def _answers_arrow(rows: list[tuple]):
    import pyarrow as pa  # only runs that ask for logprobs pay for Arrow

    top = pa.struct([("token", pa.string()), ("id", pa.int32()), ("logprob", pa.float64())])
    logprobs_type = pa.list_(pa.struct([("token", pa.string()), ("id", pa.int32()),
                                        ("logprob", pa.float64()), ("top_logprobs", pa.list_(top))]))
    ids, samples, answers, latencies, attempts = zip(*rows, strict=True)
    a: tuple[Answer, ...] = answers
    return pa.table({
        "request_id": pa.array(ids, pa.string()),
        "sample_index": pa.array(samples, pa.int32()),
        "text": pa.array([x.text for x in a], pa.string()),
        "finish_reason": pa.array([x.finish_reason for x in a], pa.string()),
        "prompt_tokens": pa.array([x.prompt_tokens for x in a], pa.int32()),
        "completion_tokens": pa.array([x.completion_tokens for x in a], pa.int32()),
        "latency_ms": pa.array(latencies, pa.float64()),
        "attempts": pa.array(attempts, pa.int32()),
        "model": pa.array([x.model for x in a], pa.string()),
        "endpoint": pa.array([x.endpoint for x in a], pa.string()),
        "logprobs": pa.array([x.logprobs for x in a], logprobs_type),
        "reasoning": pa.array([x.reasoning for x in a], pa.string()),
        "tool_calls": pa.array([_json_text(x.tool_calls) for x in a], pa.string()),
        "refusal": pa.array([x.refusal for x in a], pa.string()),
        "json": pa.array([_json_text(x.json) for x in a], pa.string()),
    })


def _failure_columns(rows: list[Failure], run_id: int) -> dict[str, object]:
    return {
        "ids": [f.request_id for f in rows], "run": run_id,
        "messages": [f.messages for f in rows], "types": [f.error_type for f in rows],
        "codes": [f.status_code for f in rows], "messages_": [f.message for f in rows],
        "attempts": [f.attempts for f in rows],
    }
