"""A thread that turns items put from anywhere into batched commits: what both store writers
(answers, store/writer.py; teacher scores, store/scores.py) are made of.

DuckDB is fast at a few hundred rows per INSERT and slow at one row per INSERT, so callers
never write: they `put` each item, and this thread hands `commit` whatever arrived every
`interval` seconds (or at `max_batch` items, or at `close()`). A commit that raises stops
the committing, not the receiving: the failed batch and everything put after it are kept in
`unsaved` until `close()`, so the writer above can save them instead of paying for them
again, and `error` says why (the engine stops when it sees it).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

_STOP = object()


class BatchThread:
    """`put` from any thread; `commit(batch)` runs on this thread, one batch at a time."""

    def __init__(self, commit: Callable[[list[Any]], None], name: str, interval: float, max_batch: int):
        self._commit = commit
        self._interval = interval
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None
        self.unsaved: list[Any] = []  # received, not committed (after an error)
        self.cpu_seconds = 0.0  # CPU time of the thread, all of it (set when it ends)

    def start(self) -> BatchThread:
        self._thread.start()
        return self

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def close(self) -> None:
        """Commit everything put so far, then stop the thread (it never raises: see `error`)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.cpu_seconds = time.thread_time()

    def _loop(self) -> None:
        batch: list[Any] = []
        next_flush = time.monotonic() + self._interval
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=max(0.0, next_flush - time.monotonic()))
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)
                    if len(batch) >= self._max_batch:
                        break
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if batch and (stopping or time.monotonic() >= next_flush or len(batch) >= self._max_batch):
                try:
                    self._commit(batch)
                except BaseException as exc:  # the writer above reports it at close()
                    self.error = exc
                    self.unsaved = batch
                    if not stopping:
                        self._keep_the_rest()
                    return
                batch = []
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + self._interval

    def _keep_the_rest(self) -> None:
        """After a failed commit: hold on to everything still arriving (the answers to
        requests in flight) until close()."""
        while (item := self._queue.get()) is not _STOP:
            self.unsaved.append(item)
