"""DuckDB's memory limit during a run: small to start, headroom kept above what cannot be
evicted, and raised (not failed) when one batch needs more."""

from __future__ import annotations

import duckdb
import pytest

from synthgen import store
from synthgen.store import memory
from synthgen.store.writer import Writer
from synthgen.types import Answer

MB = 2**20


def _limit(con: duckdb.DuckDBPyConnection) -> int:
    return memory._memory_limit(con)


def test_a_run_starts_small_and_keeps_headroom_above_the_key_index(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    con.execute("SET checkpoint_threshold = '1GB'")  # keep the new index in memory
    memory.limit_memory(con, 32 * MB)
    assert _limit(con) == 32 * MB
    memory.keep_headroom(con, 32 * MB)
    assert _limit(con) < 40 * MB, "an empty store pins (almost) nothing: the limit stays"

    con.execute("SET memory_limit = '1GB'")
    con.execute("INSERT INTO responses (request_id, text) "
                "SELECT md5(i::VARCHAR), 'a' FROM range(300000) t(i)")
    [(pinned,)] = con.execute(memory._PINNED_SQL).fetchall()
    assert pinned > 10 * MB, "the primary key's index is held in memory"
    memory.limit_memory(con, 32 * MB)
    memory.keep_headroom(con, 32 * MB)
    assert _limit(con) >= pinned + 31 * MB


def test_the_writer_makes_room_for_a_batch_larger_than_the_limit(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    memory.limit_memory(con, 32 * MB)
    con.execute("INSERT INTO runs (run_id, status) VALUES (1, 'running')")
    w = Writer(con.cursor(), 1, flush_interval=60)  # one batch: everything, at close
    text = "x" * 20_000
    for i in range(3000):  # ~60 MB of answers
        w.put_answer(f"r{i}", 0, Answer(text, "stop", 1, 1, "m", None, "u", {}), 1.0, 1)
    w.start().close()
    assert w.commits == 1
    assert con.execute("SELECT count(*), min(length(text)) FROM responses").fetchall() == [(3000, 20_000)]
    assert _limit(con) > 32 * MB + 2 * 60_000_000


def test_out_of_memory_raises_the_limit_and_runs_the_work_again(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    memory.limit_memory(con, 32 * MB)
    calls = []

    def work():
        calls.append(_limit(con))
        if len(calls) < 3:
            raise duckdb.OutOfMemoryException("simulated")
        return "done"

    assert memory.retry_out_of_memory(con, work) == "done"
    assert calls == [32 * MB, 64 * MB, 128 * MB]


def test_at_the_ceiling_the_error_stands(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    memory.limit_memory(con, 32 * MB)
    assert memory.grow_memory(con, ceiling=32 * MB) is False
    with pytest.raises(duckdb.OutOfMemoryException):
        memory.retry_out_of_memory(con, lambda: (_ for _ in ()).throw(duckdb.OutOfMemoryException("x")))
