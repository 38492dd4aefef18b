"""Read while a run writes: status, sql, export and open_store() during a live run, through
the run itself, and nothing a reader sends can write."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import duckdb
import pytest
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import TeacherServer, make_prompts, write_jsonl

import synthgen as sg
from synthgen.errors import StoreError
from synthgen.store import LiveConnection


@pytest.fixture
def live_run(tmp_path):
    """A generate run in its own process, slow enough to be read from for seconds."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p, "idx": i} for i, p in enumerate(make_prompts(600))])
    db = tmp_path / "c.duckdb"
    with TeacherServer(latency=0.05) as teacher:
        proc = start_synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                              "--base-url", teacher.base_url, "--concurrency", "4")
        deadline = time.monotonic() + 30
        while sum(teacher.received.values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield db, teacher, proc
        proc.terminate()
        proc.communicate(timeout=30)


def count(db) -> int:
    result = synthgen("sql", "--db", db, "--format", "csv", "SELECT count(*) AS n FROM corpus")
    assert result.returncode == 0, result.stderr
    return int(result.stdout.splitlines()[1])


def test_sql_status_and_export_work_during_a_run_and_see_it_grow(live_run, tmp_path):
    db, _, proc = live_run
    first = count(db)
    time.sleep(1.5)
    second = count(db)
    assert 0 < first < second < 600, (first, second)
    assert proc.poll() is None, "the run ended before the reads; the test proves nothing"

    status = synthgen("status", "--db", db)
    assert status.returncode == 0, status.stderr
    assert "running" in status.stdout and "600 requests" in status.stdout
    as_json = synthgen("status", "--db", db, "--json")
    assert json.loads(as_json.stdout.splitlines()[-1])["status"] == "running"

    out = tmp_path / "live.jsonl"
    exported = synthgen("export", "--db", db, "--out", out)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) >= second
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    parquet = synthgen("export", "--db", db, "--out", tmp_path / "live.parquet")
    assert parquet.returncode == 0, parquet.stderr


def test_open_store_during_a_run_gives_duckdb_results(live_run):
    db, _, proc = live_run
    con = sg.open_store(db)
    assert isinstance(con, LiveConnection)
    [(n,)] = con.sql("SELECT count(*) FROM corpus").fetchall()
    cur = con.execute("SELECT request_id, metadata->>'idx' AS idx FROM corpus WHERE line <= ?", [5])
    assert [d[0] for d in cur.description] == ["request_id", "idx"]
    assert len(cur.fetchall()) <= 5 and n > 0
    assert con.sql("FROM runs").fetchall()[0][1] is not None
    con.close()
    assert proc.poll() is None


@pytest.mark.parametrize("query", [
    "DELETE FROM responses",
    "WITH d AS (DELETE FROM responses RETURNING *) SELECT count(*) FROM d",
    "SELECT 1; DELETE FROM responses",
    "ATTACH 'other.duckdb' AS o",
    "SET memory_limit = '1GB'",
    "COPY (SELECT 1) TO 'evil.csv'",
    "SELECT * FROM read_text('/etc/hostname')",
    "CREATE TABLE x AS SELECT 1",
])
def test_nothing_a_reader_sends_writes_or_reads_other_files(live_run, tmp_path, query):
    db, _, proc = live_run
    before = count(db)
    result = synthgen("sql", "--db", db, query, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr and result.stderr.startswith("error:")
    assert not (tmp_path / "evil.csv").exists() and not (tmp_path / "other.duckdb").exists()
    assert count(db) >= before, "rows vanished"
    assert proc.poll() is None, "the reader's query hurt the run"


def test_a_run_killed_leaves_a_store_every_command_opens(live_run):
    db, _, proc = live_run
    proc.kill()
    proc.wait(10)
    result = synthgen("status", "--db", db)  # the socket of the dead run is left behind
    assert result.returncode == 0, result.stderr
    assert count(db) > 0


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


def test_a_store_locked_by_something_else_says_so_plainly(tmp_path, teacher):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    db = tmp_path / "c.duckdb"
    assert synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                    "--base-url", teacher.base_url).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True,
                              env=clean_env())
    try:
        assert holder.stdout.readline().strip() == "holding"
        for cmd in (("status", "--db", db), ("sql", "--db", db, "SELECT 1")):
            result = synthgen(*cmd)
            assert result.returncode == 2
            assert f"locked by process {holder.pid}, which is not a synthgen run" in result.stderr
            assert "Traceback" not in result.stderr
        with pytest.raises(StoreError, match="not a synthgen run"):
            sg.open_store(db)
    finally:
        holder.kill()
        holder.wait()
    assert duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM corpus").fetchone() == (1,)
