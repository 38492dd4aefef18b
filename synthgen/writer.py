"""The single DuckDB writer: a thread that turns a stream of outcomes into batched commits.

DuckDB is fast at a few hundred rows per INSERT and slow at one row per INSERT, so the
engine never writes: it hands each outcome to this thread, which commits whatever arrived
every `flush_interval` seconds (0.1 s by default). A kill therefore loses at most the
requests in flight plus one interval of answers, which the next run simply sends again.

Answers and failures are inserted through Arrow tables (one C-level copy per batch).
`responses` and `failures` are keyed by request id, so an answer can never be stored twice.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from .client import Answer

_TOP = pa.struct([("token", pa.string()), ("id", pa.int32()), ("logprob", pa.float64())])
LOGPROBS_ARROW = pa.list_(pa.struct([
    ("token", pa.string()), ("id", pa.int32()), ("logprob", pa.float64()),
    ("top_logprobs", pa.list_(_TOP)),
]))

MAX_BATCH = 20_000
_STOP = object()


@dataclass(slots=True)
class Failure:
    request_id: str
    messages: str
    error_type: str
    status_code: int | None
    message: str
    attempts: int


class Writer:
    """Owns the only write connection during a run. Thread-safe `put_*`, then `close()`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, run_id: int, flush_interval: float = 0.1,
                 replace_failures: bool = False):
        self._con = con
        self._run_id = run_id
        self._interval = flush_interval
        self._replace_failures = replace_failures
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="synthgen-writer", daemon=True)
        self.committed_answers = 0
        self.committed_failures = 0
        self.commits = 0
        self.busy_seconds = 0.0  # wall time inside commits (counts GIL and fsync waits too)
        self.cpu_seconds = 0.0  # CPU time of the writer thread, all of it (set when it ends)
        self.error: BaseException | None = None

    def start(self) -> Writer:
        self._thread.start()
        return self

    def put_answer(self, request_id: str, sample_index: int, answer: Answer, latency_ms: float,
                   attempts: int) -> None:
        self._queue.put((request_id, sample_index, answer, latency_ms, attempts))

    def put_failure(self, failure: Failure) -> None:
        self._queue.put(failure)

    def close(self) -> None:
        """Commit everything queued and stop the thread; re-raise a write error."""
        self._queue.put(_STOP)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.cpu_seconds = time.thread_time()

    def _loop(self) -> None:
        answers: list[tuple] = []
        failures: list[Failure] = []
        next_flush = time.monotonic() + self._interval
        stopping = False
        while not stopping:
            timeout = max(0.0, next_flush - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    (failures if isinstance(item, Failure) else answers).append(item)
                    if len(answers) + len(failures) >= MAX_BATCH:
                        break
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if (answers or failures) and (stopping or time.monotonic() >= next_flush
                                          or len(answers) + len(failures) >= MAX_BATCH):
                try:
                    self._flush(answers, failures)
                except BaseException as exc:  # reported by close(); the engine stops on it
                    self.error = exc
                    return
                answers, failures = [], []
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + self._interval

    def _flush(self, answers: list[tuple], failures: list[Failure]) -> None:
        t0 = time.perf_counter()
        con = self._con
        con.execute("BEGIN")
        try:
            if answers:
                con.register("_answers", _answers_table(answers))
                con.execute(
                    """
                    INSERT INTO responses
                    SELECT request_id, $run, sample_index, text, finish_reason, prompt_tokens,
                           completion_tokens, latency_ms, attempts, model, endpoint, now(), logprobs
                    FROM _answers ON CONFLICT DO NOTHING
                    """,
                    {"run": self._run_id},
                )
                if self._replace_failures:
                    con.execute("DELETE FROM failures WHERE request_id IN "
                                "(SELECT request_id FROM _answers)")
                con.unregister("_answers")
            if failures:
                con.register("_failures", _failures_table(failures))
                con.execute(
                    """
                    INSERT OR REPLACE INTO failures
                    SELECT request_id, $run, messages::JSON, error_type, status_code, message,
                           attempts, now()
                    FROM _failures
                    """,
                    {"run": self._run_id},
                )
                con.unregister("_failures")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.committed_answers += len(answers)
        self.committed_failures += len(failures)
        self.commits += 1
        self.busy_seconds += time.perf_counter() - t0


def _answers_table(rows: list[tuple]) -> pa.Table:
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
        "logprobs": pa.array([x.logprobs for x in a], LOGPROBS_ARROW),
    })


def _failures_table(rows: list[Failure]) -> pa.Table:
    return pa.table({
        "request_id": pa.array([f.request_id for f in rows], pa.string()),
        "messages": pa.array([f.messages for f in rows], pa.string()),
        "error_type": pa.array([f.error_type for f in rows], pa.string()),
        "status_code": pa.array([f.status_code for f in rows], pa.int32()),
        "message": pa.array([f.message for f in rows], pa.string()),
        "attempts": pa.array([f.attempts for f in rows], pa.int32()),
    })
