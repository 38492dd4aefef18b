"""The batching thread under both store writers (store/batches.py): everything put is
committed by close(), in batches; a commit that raises keeps its batch and everything put
after it (nothing received is dropped on the floor), and the score writer then says how
many scores it could not store instead of raising a bare DuckDB error."""

from __future__ import annotations

import threading
import time

import duckdb
import pytest

from synthgen.errors import StoreWriteError
from synthgen.store.batches import BatchThread
from synthgen.store.scores import ScoreMeta, ScoreWriter
from synthgen.types import Answer


def test_everything_put_is_committed_by_close_in_batches_of_at_most_max_batch() -> None:
    batches: list[list[int]] = []
    thread = BatchThread(batches.append, "test-batches", interval=60.0, max_batch=7).start()
    for i in range(50):
        thread.put(i)
    thread.close()
    assert [i for b in batches for i in b] == list(range(50))  # all of them, in order, once
    assert max(len(b) for b in batches) <= 7 and thread.error is None and thread.unsaved == []


def test_a_failed_commit_keeps_its_batch_and_everything_put_after_it() -> None:
    committed: list[int] = []
    failed = threading.Event()

    def commit(batch: list[int]) -> None:
        if 10 in batch:
            failed.set()
            raise OSError(28, "No space left on device")
        committed.extend(batch)

    thread = BatchThread(commit, "test-batches", interval=0.01, max_batch=5).start()
    for i in range(10):
        thread.put(i)
    deadline = time.monotonic() + 10
    while len(committed) < 10:  # the first ten are stored before the failing one arrives
        assert time.monotonic() < deadline, "the first ten were never committed"
        time.sleep(0.01)
    for i in range(10, 20):
        thread.put(i)
    failed.wait(10)
    for i in range(20, 25):  # arriving after the failure: kept, not committed, not lost
        thread.put(i)
    thread.close()
    assert isinstance(thread.error, OSError)
    assert committed == list(range(10))
    assert sorted(thread.unsaved) == list(range(10, 25))


def test_the_score_writer_names_the_scores_it_could_not_store() -> None:
    con = duckdb.connect()  # no `scores` table: every commit fails
    jobs = {f"s{i}": ScoreMeta(f"r{i}", "teacher", 5, 3) for i in range(3)}
    writer = ScoreWriter(con.cursor(), jobs).start()
    for i in range(3):
        writer.put_answer(f"s{i}", 0, Answer("ok", "stop", 3, 1, "teacher", None, "local"), 1.0, 1)
    with pytest.raises(StoreWriteError, match=r"3 received were not stored.*asks the teacher for them again"):
        writer.close()
