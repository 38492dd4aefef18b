"""Batch outcomes into the store, exactly once by custom_id, and by fault class.

The same for a batch this run collected from the API and for an output file made
elsewhere (`vllm run-batch`, `synthgen batch ingest`):

    Answer          -> responses, through the writer's own INSERT ... ON CONFLICT DO NOTHING
                       (`store.commit`): a request answered already keeps its answer
    RejectedFault   -> failures at once (another attempt would get the same answer)
    RetryableFault  -> batch_errors (one attempt); the request goes into a later batch,
                       or to failures once it has had --max-attempts
    NotRun          -> nothing: the batch ended before it ran; a later batch takes it

Unlike online mode, a 429 line counts as an attempt: there is no Retry-After to wait out,
and each new try is another batch (up to a day), so --max-attempts bounds them all.

A custom_id that is no request of the store (or not of this batch) is counted and left
alone: an answer is only ever stored next to its own prompt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ..backends.openai_batch import BadLine, outcome
from ..errors import CutShort, NotRun, RejectedFault, RetryableFault, SchemaMismatch, TeacherFault
from ..fit import AnswerSchema, paid_misfit
from ..store.commit import commit_safely
from ..store.memory import retry_out_of_memory
from ..store.tx import transaction
from ..types import SCHEMA_KEY, Answer, Failure, Wasted
from .files import read_lines

CHUNK = 5_000
# One line of an output file -> (custom_id, Answer or fault): the API's own (its client's
# `outcome`); OpenAI's format by default (its Batch API and `vllm run-batch` write it).
Parse = Callable[[bytes, str], "tuple[str, Answer | TeacherFault]"]


@dataclass
class Tally:
    """What ingesting did, summed over chunks (and files)."""

    answered: int = 0
    already: int = 0       # answered before: nothing stored
    failed: int = 0
    retry: int = 0         # left pending for a later batch
    not_run: int = 0
    unknown: int = 0       # custom_id of no request here
    bad_lines: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    errors: Counter = field(default_factory=Counter)    # retryable errors by kind
    failures: Counter = field(default_factory=Counter)  # failures by kind
    seen: set[str] = field(default_factory=set)         # custom_ids met (of this batch)

    def count_usage(self, answer: Answer) -> None:
        """One billed line's tokens (a kept answer, or a misfit that was paid for)."""
        self.prompt_tokens += answer.prompt_tokens or 0
        self.completion_tokens += answer.completion_tokens or 0
        self.cached_tokens += answer.cached_tokens or 0
        self.cache_write_tokens += answer.cache_write_tokens or 0

    @property
    def requeued(self) -> int:
        return self.retry + self.not_run

    def add(self, other: Tally) -> None:
        """Sum another tally into this one (its `seen` set is not kept)."""
        for name in ("answered", "already", "failed", "retry", "not_run", "unknown", "bad_lines",
                     "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        self.failures.update(other.failures)


@dataclass
class Context:
    """Where outcomes go: the run that stores them, the batch they came from (None for a
    file made elsewhere) and its requests, and the attempt limit."""

    run_id: int
    max_attempts: int
    batch_key: str | None = None
    members: set[str] | None = None  # the batch's request ids; None: any request of the store
    latency_ms: float = 0.0


KNOWN_SQL = f"""
SELECT q.request_id, q.sample_index, q.messages::VARCHAR,
       EXISTS (SELECT 1 FROM responses s WHERE s.request_id = q.request_id),
       (SELECT count(*) FROM batch_errors e
        WHERE e.request_id = q.request_id AND e.batch_key IS DISTINCT FROM $key),
       q.params->>'{SCHEMA_KEY}', q.params::VARCHAR
FROM requests q WHERE q.request_id IN (SELECT unnest($ids))
"""


def store_outcomes(con: duckdb.DuckDBPyConnection, ctx: Context,
                   outcomes: Iterable[tuple[str, Answer | TeacherFault]], tally: Tally) -> None:
    """Store one chunk of (custom_id, outcome); a chunk is at most a few thousand."""
    chunk = []
    for cid, result in outcomes:
        if ctx.members is not None and cid not in ctx.members:
            tally.unknown += 1  # a line for a request this batch never carried
        else:
            chunk.append((cid, result))
    if not chunk:
        return
    ids = list(dict.fromkeys(cid for cid, _ in chunk))
    known = {r[0]: r[1:] for r in retry_out_of_memory(con, lambda: con.execute(
        KNOWN_SQL, {"ids": ids, "key": ctx.batch_key}).fetchall())}
    answers: list[tuple] = []
    failures: list[Failure] = []
    errors: list[tuple] = []
    wasted: list[Wasted] = []
    for cid, result in chunk:
        if cid not in known:
            tally.unknown += 1
            continue
        if cid in tally.seen:
            continue  # a second line for one request: the first one counts
        tally.seen.add(cid)
        sample_index, messages, answered, prior, schema, params = known[cid]
        attempts = prior + 1
        if isinstance(result, Answer) and schema is not None and not answered:
            try:  # the request asked for a schema: a batch answer must fit it as an online one
                result.json = AnswerSchema.of_text(schema).parse(result)
            except SchemaMismatch as misfit:
                paid = result  # billed, not kept: in the bill (store/wasted.py)
                result = paid_misfit(misfit, paid, params)
                wasted.append(Wasted(cid, f"{ctx.batch_key or 'file'}/{cid}", result.kind, paid))
                tally.count_usage(paid)
        if isinstance(result, Answer):
            if answered:
                tally.already += 1
                continue
            answers.append((cid, sample_index, result, ctx.latency_ms, attempts))
            tally.answered += 1
            tally.count_usage(result)
            continue
        if answered:
            tally.already += 1
            continue
        if isinstance(result, NotRun):
            tally.not_run += 1
            continue
        if isinstance(result, RetryableFault):
            tally.errors[result.kind] += 1
            if ctx.batch_key is not None:
                errors.append((cid, result.kind, result.status_code, result.message))
            if attempts < ctx.max_attempts:
                tally.retry += 1
                continue
        elif not isinstance(result, RejectedFault | CutShort):
            tally.retry += 1  # no class that says what to do: leave it pending
            continue
        failures.append(Failure(cid, messages, result.kind, result.status_code, result.message, attempts))
        tally.failed += 1
        tally.failures[result.kind] += 1
    if errors:
        retry_out_of_memory(con, lambda: _insert_errors(con, ctx.batch_key, errors))
    if answers or failures or wasted:
        # replace_failures: an answer stored means that request did not fail after all.
        retry_out_of_memory(con, lambda: commit_safely(con, ctx.run_id, answers, failures, True, wasted))


def _insert_errors(con: duckdb.DuckDBPyConnection, key: str | None, rows: list[tuple]) -> None:
    ids, kinds, codes, messages = (list(c) for c in zip(*rows, strict=True))
    with transaction(con):
        con.execute(
            "INSERT INTO batch_errors SELECT $key, unnest($ids), unnest($kinds), "
            "unnest($codes)::INTEGER, unnest($messages), now() ON CONFLICT DO NOTHING",
            {"key": key, "ids": ids, "kinds": kinds, "codes": codes, "messages": messages})


def ingest_file(con: duckdb.DuckDBPyConnection, path: Path, ctx: Context, endpoint: str,
                tally: Tally, keep_seen: bool = True, parse: Parse = outcome) -> None:
    """Every line of an output or error file, a chunk per transaction (bounded memory at
    any file size; a kill halfway loses nothing: ingesting again stores only the rest).
    Without `keep_seen` the ids met are forgotten after each chunk (a file of any size
    stays in bounded memory; the store's key still keeps each answer once)."""
    for lines in read_lines(path, CHUNK):
        parsed = []
        for raw in lines:
            try:
                parsed.append(parse(raw, endpoint))
            except BadLine:
                tally.bad_lines += 1
        store_outcomes(con, ctx, parsed, tally)
        if not keep_seen:
            tally.seen.clear()
