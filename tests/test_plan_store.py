"""Planning in committed batches: dedupe across batches, no leftovers after a crash or a
bad file, and stores written before the change migrate with their data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from synthgen import plan, store
from synthgen.config import GenerateConfig
from synthgen.errors import InputError
from synthgen.store import plans, schema

ROOT = Path(__file__).resolve().parent.parent


def _cfg(path: Path, db: Path) -> GenerateConfig:
    return GenerateConfig(input=path, db=db, model="m", base_urls=["http://127.0.0.1:9/v1"])


def _new_run(con: duckdb.DuckDBPyConnection) -> int:
    run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()[0][0]
    con.execute("INSERT INTO runs (run_id, status) VALUES (?, 'running')", [run_id])
    return run_id


def _write(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(f'{{"prompt": "{p}"}}\n' for p in prompts))
    return path


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    return con.execute(
        "SELECT (SELECT count(*) FROM requests), (SELECT count(DISTINCT request_id) FROM requests), "
        "(SELECT count(*) FROM plan_requests)"
    ).fetchall()[0]


def test_duplicates_across_batches_are_one_request_at_their_first_line(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "BATCH_ROWS", 3)  # 10 lines: four committed batches
    prompts = ["a", "b", "c", "d", "a", "e", "b", "f", "g", "a"]
    path = _write(tmp_path / "in.jsonl", prompts)
    con = store.connect(tmp_path / "s.duckdb")
    p = plan.make_plan(con, _cfg(path, tmp_path / "s.duckdb"), _new_run(con), None)
    assert p.total == 7
    assert _counts(con) == (7, 7, 7)
    lines = dict(con.execute(
        "SELECT r.messages->>'$[0].content', p.line FROM plan_requests p JOIN requests r USING (request_id)"
    ).fetchall())
    assert lines == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 6, "f": 8, "g": 9}
    pending = [row[3] for batch in plan.pending_batches(con, p.key, False, rows=2, lines=4)
               for row in batch]
    assert pending == [1, 2, 3, 4, 6, 8, 9], "pending comes in input order, chunk after chunk"
    assert plan.plan_counts(con, p.key) == {"total": 7, "answered": 0, "failed": 0, "pending": 7}

    # A second plan of an overlapping file shares the stored requests instead of copying them.
    other = _write(tmp_path / "other.jsonl", ["a", "z"])
    q = plan.make_plan(con, _cfg(other, tmp_path / "s.duckdb"), _new_run(con), None)
    assert q.total == 2
    assert _counts(con) == (8, 8, 9)


def test_a_bad_line_after_committed_batches_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "BATCH_ROWS", 2)
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    good = plan.make_plan(con, _cfg(_write(tmp_path / "good.jsonl", ["a", "b"]), db), _new_run(con), None)
    con.execute("UPDATE runs SET plan_key = ? WHERE run_id = 1", [good.key])
    before = _counts(con)

    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "new1"}\n{"prompt": "new2"}\n{"prompt": "new3"}\nnot json\n')
    with pytest.raises(InputError):
        plan.make_plan(con, _cfg(path, db), _new_run(con), None)
    assert _counts(con) == before, "the batches committed before the bad line are taken back"
    assert con.execute("SELECT count(*) FROM plans").fetchall()[0][0] == 1


CRASH = """
import os, sys
from pathlib import Path
from synthgen import plan, store
from synthgen.store import schema
from synthgen.config import GenerateConfig
plan.BATCH_ROWS = 2
done = 0
insert = plan.insert_batch  # the planner calls store.plans.insert_batch by this name
def insert_then_die(*args):
    global done
    n = insert(*args)
    done += 1
    if done == 2:
        os._exit(9)  # a kill: no except, no finally, no cleanup
    return n
plan.insert_batch = insert_then_die
con = store.connect(sys.argv[2])
con.execute("INSERT INTO runs (run_id, status) VALUES (7, 'running')")
cfg = GenerateConfig(input=Path(sys.argv[1]), db=Path(sys.argv[2]), model="m", base_urls=["http://127.0.0.1:9/v1"])
plan.make_plan(con, cfg, 7, None)
"""


def test_a_kill_mid_plan_leaves_nothing_the_next_plan_keeps(tmp_path):
    path = _write(tmp_path / "in.jsonl", [f"p{i}" for i in range(9)])
    db = tmp_path / "s.duckdb"
    killed = subprocess.run([sys.executable, "-c", CRASH, str(path), str(db)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    con = store.connect(db)
    assert _counts(con) == (4, 4, 4), "two committed batches, and no plans row"
    assert con.execute("SELECT count(*) FROM plans").fetchall()[0][0] == 0

    p = plan.make_plan(con, _cfg(path, db), _new_run(con), None)
    assert p.total == 9
    assert _counts(con) == (9, 9, 9), "leftovers are replaced, not duplicated"
    assert con.execute("SELECT DISTINCT run_id FROM requests").fetchall() == [(8,)], "the new run owns them"


def test_a_store_from_before_the_index_change_migrates_with_its_data(tmp_path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, "
                "applied_at TIMESTAMPTZ DEFAULT now())")
    schema._m001_initial(con)
    con.execute("INSERT INTO schema_migrations (name) VALUES ('001_initial')")
    con.execute("INSERT INTO requests (request_id, line, messages) VALUES ('r1', 1, '[]'), ('r2', 2, '[]')")
    # the old planner kept one row per input line, repeats included
    con.execute("INSERT INTO plan_requests VALUES ('k', 'r1', 1), ('k', 'r2', 2), ('k', 'r1', 3)")
    con.execute("INSERT INTO responses (request_id, text) VALUES ('r1', 'answer')")
    con.close()

    con = store.connect(db)
    assert con.execute("SELECT request_id, response FROM corpus").fetchall() == [("r1", "answer")]
    kept = sorted(con.execute("SELECT request_id, line FROM plan_requests").fetchall())
    assert kept == [("r1", 1), ("r2", 2)]
    assert plan.plan_counts(con, "k") == {"total": 2, "answered": 1, "failed": 0, "pending": 1}
    keys = con.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'requests' "
                       "AND constraint_type = 'PRIMARY KEY'").fetchall()[0][0]
    assert keys == 0


def test_counts_split_into_hash_partitions_add_up_to_one_count(tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    path = _write(tmp_path / "in.jsonl", [f"p{i}" for i in range(40)])
    p = plan.make_plan(con, _cfg(path, db), _new_run(con), None)
    ids = [r[0] for r in con.execute("SELECT request_id FROM plan_requests ORDER BY line").fetchall()]
    con.executemany("INSERT INTO responses (request_id, text) VALUES (?, 'a')", [[i] for i in ids[:17]])
    con.executemany("INSERT INTO failures (request_id, message) VALUES (?, 'x')", [[i] for i in ids[15:25]])
    whole = plan.plan_counts(con, p.key)
    assert whole == {"total": 40, "answered": 17, "failed": 8, "pending": 15}
    monkeypatch.setattr(plans, "COUNT_PARTITION", 3)  # 14 partitions of about 3 requests
    assert plan.plan_counts(con, p.key, total=40) == whole
