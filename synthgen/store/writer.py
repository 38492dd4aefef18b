"""The single DuckDB writer: a thread that turns a stream of outcomes into batched commits.

DuckDB is fast at a few hundred rows per INSERT and slow at one row per INSERT, so the
engine never writes: it hands each outcome to this thread, which commits whatever arrived
every `flush_interval` seconds (0.1 s by default). A kill therefore loses at most the
requests in flight plus one interval of answers, which the next run simply sends again.

Each batch goes in as one INSERT of column lists (`unnest($ids), unnest($texts), ...`):
DuckDB converts the lists in C++, and no Arrow (with pandas behind it, ~90 MB resident)
is loaded into a plain run. A batch carrying logprobs goes through an Arrow table instead:
Arrow turns nested lists into the typed column about twice as fast as DuckDB's JSON cast
(100 answers of 1,000 tokens with top-20: 1.9 s against 3.7 s). `responses` and
`failures` are keyed by request id, so an answer can never be stored twice.
"""

from __future__ import annotations

import queue
import threading
import time

import duckdb

from ..types import Answer, Failure
from .memory import RUN_MEMORY_LIMIT, keep_headroom, retry_out_of_memory

MAX_BATCH = 20_000
BIG_BATCH_BYTES = 4 * 2**20
_STOP = object()


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
                    # Room for this batch above what DuckDB cannot evict: running out
                    # inside COMMIT invalidates the database instead of raising. Checked
                    # on every large batch, else every tenth: the two queries on each of
                    # ten commits a second took ~3% of a core, and the index grows by
                    # well under 1 MB between checks.
                    size = _batch_bytes(answers, failures)
                    if size > BIG_BATCH_BYTES or self.commits % 10 == 0:
                        keep_headroom(self._con, RUN_MEMORY_LIMIT + 2 * size)
                    retry_out_of_memory(self._con, lambda a=answers, f=failures: self._flush(a, f))
                except BaseException as exc:  # reported by close(); the engine stops on it
                    self.error = exc
                    return
                answers, failures = [], []
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + self._interval

    def _flush(self, answers: list[tuple], failures: list[Failure]) -> None:
        t0 = time.perf_counter()
        con = self._con
        arrow = bool(answers) and any(a[2].logprobs for a in answers)
        if arrow:
            con.register("_answers", _answers_arrow(answers))
        con.execute("BEGIN")
        try:
            if arrow:
                con.execute(INSERT_ANSWERS_ARROW, {"run": self._run_id})
            elif answers:
                con.execute(INSERT_ANSWERS, _answer_columns(answers, self._run_id))
            if answers and self._replace_failures:
                con.execute("DELETE FROM failures WHERE request_id IN (SELECT unnest($1))",
                            [[a[0] for a in answers]])
            if failures:
                con.execute(INSERT_FAILURES, _failure_columns(failures, self._run_id))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            if arrow:
                con.unregister("_answers")
        self.committed_answers += len(answers)
        self.committed_failures += len(failures)
        self.commits += 1
        self.busy_seconds += time.perf_counter() - t0


INSERT_ANSWERS = """
INSERT INTO responses
SELECT unnest($ids), $run, unnest($samples), unnest($texts), unnest($finish), unnest($pt),
       unnest($ct), unnest($latency), unnest($attempts), unnest($models), unnest($endpoints),
       now(), NULL
ON CONFLICT DO NOTHING
"""

INSERT_ANSWERS_ARROW = """
INSERT INTO responses
SELECT request_id, $run, sample_index, text, finish_reason, prompt_tokens, completion_tokens,
       latency_ms, attempts, model, endpoint, now(), logprobs
FROM _answers ON CONFLICT DO NOTHING
"""

INSERT_FAILURES = """
INSERT OR REPLACE INTO failures
SELECT unnest($ids), $run, unnest($messages)::JSON, unnest($types), unnest($codes),
       unnest($messages_), unnest($attempts), now()
"""


def _batch_bytes(answers: list[tuple], failures: list[Failure]) -> int:
    """A rough size of a batch in DuckDB: its text, plus ~100 bytes of other columns a row,
    plus ~40 bytes a logprob entry."""
    size = sum(len(a[2].text or "") + 100 for a in answers)
    size += sum(40 * sum(1 + len(t.get("top_logprobs") or ()) for t in a[2].logprobs)
                for a in answers if a[2].logprobs)
    return size + sum(len(f.messages) + len(f.message) + 100 for f in failures)


def _answer_columns(rows: list[tuple], run_id: int) -> dict[str, object]:
    ids, samples, answers, latencies, attempts = zip(*rows, strict=True)
    a: tuple[Answer, ...] = answers
    return {
        "ids": list(ids), "run": run_id, "samples": list(samples),
        "texts": [x.text for x in a], "finish": [x.finish_reason for x in a],
        "pt": [x.prompt_tokens for x in a], "ct": [x.completion_tokens for x in a],
        "latency": [float(x) for x in latencies], "attempts": list(attempts),
        "models": [x.model for x in a], "endpoints": [x.endpoint for x in a],
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
    })


def _failure_columns(rows: list[Failure], run_id: int) -> dict[str, object]:
    return {
        "ids": [f.request_id for f in rows], "run": run_id,
        "messages": [f.messages for f in rows], "types": [f.error_type for f in rows],
        "codes": [f.status_code for f in rows], "messages_": [f.message for f in rows],
        "attempts": [f.attempts for f in rows],
    }
