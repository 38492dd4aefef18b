"""The single DuckDB writer: a thread that turns a stream of outcomes into batched commits.

DuckDB is fast at a few hundred rows per INSERT and slow at one row per INSERT, so the
engine never writes: it hands each outcome to this writer's thread (store/batches.py),
which commits whatever arrived every `flush_interval` seconds (0.1 s by default). A kill
therefore loses at most the requests in flight plus one interval of answers, which the
next run simply sends again.

Each batch is one transaction (store/commit.py: column lists, Arrow only for logprobs:
100 answers of 1,000 tokens with top-20 took 1.9 s that way against 3.7 s through
DuckDB's JSON cast). `responses` and `failures` are keyed by request id, so an answer can
never be stored twice.

A commit that fails (a full disk, an unwritable file) loses nothing that was paid for:
the writer stops committing, keeps that batch and everything still arriving, and at
`close()` saves it to a recovery file (store/recovery.py) that the next run stores first.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from ..errors import StoreWriteError, first_line
from ..types import Answer, Failure, Wasted
from . import recovery
from .batches import BatchThread
from .commit import by_kind, commit_safely
from .memory import RUN_MEMORY_LIMIT, keep_headroom, retry_out_of_memory

MAX_BATCH = 20_000
BIG_BATCH_BYTES = 4 * 2**20


class Writer:
    """Owns the only write connection during a run. Thread-safe `put_*`, then `close()`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, run_id: int, flush_interval: float = 0.1,
                 replace_failures: bool = False, db: str | Path | None = None):
        self._con = con
        self._run_id = run_id
        self._db = db  # where a recovery file goes if a commit fails (None: nowhere)
        self._replace_failures = replace_failures
        self._thread = BatchThread(self._commit, "synthgen-writer", flush_interval, MAX_BATCH)
        self.committed_answers = 0
        self.committed_failures = 0
        self.commits = 0
        self.busy_seconds = 0.0  # wall time inside commits (counts GIL and fsync waits too)
        self.unstorable: list[Failure] = []  # answers whose values no column could hold

    @property
    def error(self) -> BaseException | None:
        """Why commits stopped (None while they go on): the engine stops when it sees one."""
        return self._thread.error

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the writer thread, all of it (set when it ends)."""
        return self._thread.cpu_seconds

    def start(self) -> Writer:
        self._thread.start()
        return self

    def put_answer(self, request_id: str, sample_index: int, answer: Answer, latency_ms: float,
                   attempts: int) -> None:
        self._thread.put((request_id, sample_index, answer, latency_ms, attempts))

    def put_failure(self, failure: Failure) -> None:
        self._thread.put(failure)

    def put_wasted(self, wasted: Wasted) -> None:
        """An attempt the teacher answered (billed) that was not kept: its usage is stored."""
        self._thread.put(wasted)

    def close(self) -> None:
        """Commit everything queued and stop the thread. After a failed commit, save what
        was not stored to a recovery file and raise StoreWriteError saying where."""
        self._thread.close()
        if self.error is None:
            return
        answers, failures, wasted = by_kind(self._thread.unsaved)
        saved_to, why = None, ""
        if self._db is not None and (answers or failures or wasted):
            try:
                saved_to = recovery.save(self._db, self._run_id, answers, failures, wasted)
            except OSError as exc:
                why = f" (no recovery file could be written either: {exc.strerror})"
        raise StoreWriteError(first_line(self.error), committed=self.committed_answers,
                              unsaved=len(answers) + len(failures), saved_to=saved_to,
                              why=why) from self.error

    def _commit(self, batch: list) -> None:
        answers, failures, wasted = by_kind(batch)
        # Room for this batch above what DuckDB cannot evict: running out inside COMMIT
        # invalidates the database instead of raising. Checked on every large batch, else
        # every tenth: the two queries on each of ten commits a second took ~3% of a core,
        # and the index grows by well under 1 MB between checks.
        size = _batch_bytes(answers, failures)
        if size > BIG_BATCH_BYTES or self.commits % 10 == 0:
            keep_headroom(self._con, RUN_MEMORY_LIMIT + 2 * size)
        retry_out_of_memory(self._con, lambda: self._flush(answers, failures, wasted))

    def _flush(self, answers: list[tuple], failures: list[Failure], wasted: list[Wasted]) -> None:
        t0 = time.perf_counter()
        filed = commit_safely(self._con, self._run_id, answers, failures, self._replace_failures,
                              wasted)
        self.unstorable += filed
        self.committed_answers += len(answers) - len(filed)
        self.committed_failures += len(failures) + len(filed)
        self.commits += 1
        self.busy_seconds += time.perf_counter() - t0


def _batch_bytes(answers: list[tuple], failures: list[Failure]) -> int:
    """A rough size of a batch in DuckDB: its text, plus ~100 bytes of other columns a row,
    plus ~40 bytes a logprob entry."""
    size = sum(len(a[2].text or "") + len(a[2].reasoning or "") + 100 for a in answers)
    size += sum(_entry_bytes(t) + sum(_entry_bytes(u) for u in _alternatives(t))
                for a in answers if a[2].logprobs for t in a[2].logprobs)
    return size + sum(len(f.messages) + len(f.message) + 100 for f in failures)


def _entry_bytes(entry: object) -> int:
    token = entry.get("token") if isinstance(entry, dict) else None
    return 40 + (len(token) if isinstance(token, str) else 0)


def _alternatives(entry: object) -> list:
    top = entry.get("top_logprobs") if isinstance(entry, dict) else None
    return top if isinstance(top, list) else []
