"""One transaction of outcomes: how answers and failures go into the store.

Shared by the writer thread and by the import of recovery files, so both store exactly
the same columns and keep the same rule: an answer already stored is never replaced.
Answers go in as column lists (`unnest($ids), ...`: DuckDB converts the lists in C++ and
no Arrow is loaded into a plain run); a batch carrying logprobs goes through an Arrow
table, which builds the nested column about twice as fast as DuckDB's JSON cast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import duckdb
import orjson

from .. import coerce
from ..types import Answer, Failure, Wasted
from . import wasted as wasted_attempts
from .tx import transaction

# What a row's own values raise (a count past INTEGER, text that is not UTF-8, a type Arrow
# cannot hold), as against the database failing (IOException: a full disk; FatalException).
DATA_ERRORS = (duckdb.ConversionException, duckdb.InvalidInputException,
               duckdb.TypeMismatchException, duckdb.OutOfRangeException,
               TypeError, ValueError, OverflowError)


def by_kind(outcomes: Sequence[tuple | Failure | Wasted]) -> tuple[list[tuple], list[Failure], list[Wasted]]:
    """Outcomes as `commit` takes them: answers (tuples), failures and wasted attempts, each
    in arrival order (the writer's batches and a recovery file's records alike)."""
    answers: list[tuple] = []
    failures: list[Failure] = []
    wasted: list[Wasted] = []
    for item in outcomes:
        if isinstance(item, Failure):
            failures.append(item)
        elif isinstance(item, Wasted):
            wasted.append(item)
        else:
            answers.append(item)
    return answers, failures, wasted


def commit(con: duckdb.DuckDBPyConnection, run_id: int, answers: list[tuple],
           failures: list[Failure], replace_failures: bool = False,
           wasted: Sequence[Wasted] = ()) -> None:
    """One transaction: answers (request_id, sample_index, Answer, latency_ms, attempts),
    failures and wasted (paid, not kept) attempts of run `run_id`; an answer already
    stored is kept as it is."""
    arrow = bool(answers) and any(a[2].logprobs for a in answers)
    if arrow:
        con.register("_answers", _answers_arrow(answers))
    try:
        with transaction(con):
            if arrow:
                con.execute(INSERT_ANSWERS_ARROW, {"run": run_id})
            elif answers:
                con.execute(INSERT_ANSWERS, _answer_columns(answers, run_id))
            if answers and replace_failures:
                con.execute("DELETE FROM failures WHERE request_id IN (SELECT unnest($1))",
                            [[a[0] for a in answers]])
            if failures:
                con.execute(INSERT_FAILURES, _failure_columns(failures, run_id))
            if wasted:
                wasted_attempts.insert(con, run_id, list(wasted))
    finally:
        if arrow:
            con.unregister("_answers")


def commit_safely(con: duckdb.DuckDBPyConnection, run_id: int, answers: list[tuple],
                  failures: list[Failure], replace_failures: bool = False,
                  wasted: Sequence[Wasted] = ()) -> list[Failure]:
    """`commit`, and where a row's own values cannot be stored (not a full disk: a data
    error), never the whole batch lost for it: the batch is split in halves until each such
    row is alone; an answer alone is stored with its fields coerced (synthgen.coerce), and
    one that still fails is filed under failures as 'unstorable'. Returns those filed.

    Every backend coerces what it reads, so this is the second line: a user's own
    transport, or a recovery file of an older synthgen, cannot lock a store either."""
    try:
        commit(con, run_id, answers, failures, replace_failures, wasted)
        return []
    except DATA_ERRORS:
        if wasted:  # the paid attempts apart, each made safe; then the rest as below
            _commit_wasted(con, run_id, wasted)
            return commit_safely(con, run_id, answers, failures, replace_failures)
    try:
        commit(con, run_id, answers, failures, replace_failures)
        return []
    except DATA_ERRORS as exc:
        if len(answers) + len(failures) > 1:
            half_a, half_f = len(answers) // 2, len(failures) // 2
            return (commit_safely(con, run_id, answers[:half_a], failures[:half_f], replace_failures)
                    + commit_safely(con, run_id, answers[half_a:], failures[half_f:], replace_failures))
        error = exc
    if failures:  # one failure of ours: its text made safe
        f = failures[0]
        safe = Failure(f.request_id, f.messages, f.error_type, coerce.status(f.status_code),
                       _utf8(coerce.message(f.message, 2000)), coerce.count(f.attempts) or 1)
        commit(con, run_id, [], [safe], replace_failures)
        return []
    rid, k, answer, latency, attempts = answers[0]
    try:
        commit(con, run_id, [(rid, k, _safe_answer(answer), latency, attempts)], [], replace_failures)
        return []
    except DATA_ERRORS as exc:
        error = exc
    [(messages,)] = con.execute("SELECT messages::VARCHAR FROM requests WHERE request_id = ?",
                                [rid]).fetchall() or [("[]",)]
    failure = Failure(rid, messages, "unstorable", None,
                      _utf8(f"the answer could not be stored ({coerce.message(str(error), 500)})"),
                      coerce.count(attempts) or 1)
    commit(con, run_id, [], [failure], replace_failures)
    return [failure]


def _commit_wasted(con: duckdb.DuckDBPyConnection, run_id: int, wasted: Sequence[Wasted]) -> None:
    """Each wasted attempt alone, its fields coerced; one whose values still cannot be
    stored is left out (its usage is lost to the bill, never the batch it came with)."""
    for w in wasted:
        safe = Wasted(w.request_id, _utf8(w.key) or "", _utf8(w.error_type) or "error",
                      _safe_answer(w.answer))
        with contextlib.suppress(*DATA_ERRORS):
            commit(con, run_id, [], [], wasted=[safe])


def _utf8(text: str | None) -> str | None:
    """Text DuckDB takes: lone surrogates (which no UTF-8 can hold) replaced."""
    return None if text is None else text.encode("utf-8", "replace").decode("utf-8")


def _safe_answer(a: Answer) -> Answer:
    a = coerce.answer(a)
    a.text, a.reasoning, a.refusal = _utf8(a.text), _utf8(a.reasoning), _utf8(a.refusal)
    try:
        orjson.dumps(a.tool_calls)
        orjson.dumps(a.json)
    except TypeError:
        a.tool_calls, a.json = None, None
    return a


RESPONSE_COLUMNS = ("request_id, run_id, sample_index, text, finish_reason, prompt_tokens, "
                    "completion_tokens, latency_ms, attempts, model, endpoint, created_at, logprobs, "
                    "reasoning, tool_calls, refusal, json, cached_tokens, cache_write_tokens, "
                    "reasoning_tokens")

INSERT_ANSWERS = f"""
INSERT INTO responses ({RESPONSE_COLUMNS})
SELECT unnest($ids), $run, unnest($samples), unnest($texts), unnest($finish), unnest($pt),
       unnest($ct), unnest($latency), unnest($attempts), unnest($models), unnest($endpoints),
       now(), NULL, unnest($reasoning), unnest($tools)::JSON, unnest($refusals), unnest($json)::JSON,
       unnest($cached)::INTEGER, unnest($cache_write)::INTEGER, unnest($reasoning_tokens)::INTEGER
ON CONFLICT DO NOTHING
"""

INSERT_ANSWERS_ARROW = f"""
INSERT INTO responses ({RESPONSE_COLUMNS})
SELECT request_id, $run, sample_index, text, finish_reason, prompt_tokens, completion_tokens,
       latency_ms, attempts, model, endpoint, now(), logprobs, reasoning, tool_calls::JSON,
       refusal, json::JSON, cached_tokens, cache_write_tokens, reasoning_tokens
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
        "cached": [x.cached_tokens for x in a], "cache_write": [x.cache_write_tokens for x in a],
        "reasoning_tokens": [x.reasoning_tokens for x in a],
    }


def warm_arrow() -> None:
    """Import Arrow and build one array now, before the first answer. pyarrow's first
    `pa.array` imports pandas (0.6 s on an idle core; 2.5 s measured under load): paid by a
    writer's first commit, it kept every answer received meanwhile uncommitted, and a kill -9
    in that window lost them all (test_vllm_score's SIGKILL test stored 0 of 8+ received)."""
    import pyarrow as pa

    pa.array([0], pa.int32())


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
        "cached_tokens": pa.array([x.cached_tokens for x in a], pa.int32()),
        "cache_write_tokens": pa.array([x.cache_write_tokens for x in a], pa.int32()),
        "reasoning_tokens": pa.array([x.reasoning_tokens for x in a], pa.int32()),
    })


def _failure_columns(rows: list[Failure], run_id: int) -> dict[str, object]:
    return {
        "ids": [f.request_id for f in rows], "run": run_id,
        "messages": [f.messages for f in rows], "types": [f.error_type for f in rows],
        "codes": [f.status_code for f in rows], "messages_": [f.message for f in rows],
        "attempts": [f.attempts for f in rows],
    }
