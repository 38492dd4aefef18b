"""Sharded runs without Ray: the driver's plan, each shard's generate(), the fold, `synthgen merge`.

The Ray tests (test_ray.py) run the same steps with each shard in its own actor; here the
shards run one after another in this process, so the store side is checked in the default
suite: disjoint hash ranges, every answer stored once next to its own prompt, a rerun that
sends nothing, a fold run twice that changes nothing.
"""

from __future__ import annotations

import hashlib
import random

import duckdb
import pytest
from conftest import synthgen
from teacher_server import TeacherServer, answer, make_prompts, write_jsonl

import synthgen as sg
from synthgen import sharding
from synthgen.config import GenerateConfig
from synthgen.store.merge import merge_stores


def snapshot(db) -> dict[str, list]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("requests", "responses", "failures", "plan_requests", "plans", "runs")}
    finally:
        con.close()


def stored(db) -> list[tuple[str, str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, messages->>'$[0].content', response FROM corpus").fetchall()
    finally:
        con.close()


def test_shard_ranges_are_disjoint_and_cover_every_id():
    rng = random.Random(7)
    ids = [hashlib.blake2b(str(rng.random()).encode(), digest_size=16).hexdigest() for _ in range(3000)]
    ids += ["0" * 32, "f" * 32]
    for count in (1, 2, 3, 7, 16):
        ranges = [sharding.bounds(i, count) for i in range(count)]
        for rid in ids:
            inside = [i for i, (lo, hi) in enumerate(ranges) if rid >= lo and (hi is None or rid < hi)]
            assert inside == [sharding.shard_of(rid, count)], (rid, count)
    # roughly even: no shard of 4 has under a fifth of 3,000 ids
    sizes = [sum(sharding.shard_of(r, 4) == i for r in ids) for i in range(4)]
    assert min(sizes) > 600, sizes


def run_shards_here(cfg: GenerateConfig, count: int, **finish) -> sg.RunSummary:
    """What `generate --ray --shards` does, with each shard's generate() run in this process."""
    job = sharding.prepare(cfg, count)
    outcomes = []
    for shard in job.shards:
        outcome = sharding.ShardOutcome(shard)
        if shard.pending:
            outcome.summary = sg.generate(shard.config(cfg))
        outcomes.append(outcome)
    return sharding.finish(cfg, job, outcomes, **finish)


def test_shards_store_every_prompt_once_and_a_rerun_sends_nothing(tmp_path):
    prompts = make_prompts(120)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p, "k": i} for i, p in enumerate(prompts)])
    with TeacherServer() as teacher:
        cfg = GenerateConfig(input=tmp_path / "in.jsonl", db=tmp_path / "main.duckdb", model="m",
                             base_urls=[teacher.base_url], concurrency=8)
        summary = run_shards_here(cfg, 3, keep_shards=True)
        assert (summary.status, summary.answered, summary.pending, summary.total) == ("done", 120, 0, 120)
        assert sum(teacher.received.values()) == 120 and set(teacher.received.values()) == {1}
        rows = stored(tmp_path / "main.duckdb")
        assert len(rows) == len({r[0] for r in rows}) == 120
        assert all(response == answer(prompt) for _, prompt, response in rows)
        # each shard answered only its own range
        for i, path in enumerate(sharding.shard_paths(tmp_path / "main.duckdb", 3)):
            ids = [r[0] for r in stored(path)]
            assert ids and all(sharding.shard_of(rid, 3) == i for rid in ids)
        # export reads the job's own (full) plan, with each line's metadata
        assert sg.export(tmp_path / "main.duckdb", tmp_path / "out.jsonl") == 120
        before = snapshot(tmp_path / "main.duckdb")
        again = run_shards_here(cfg, 3)
        assert (again.status, again.answered, again.pending) == ("done", 0, 0)
        assert sum(teacher.received.values()) == 120
        # the same job with a different shard count also finds everything stored
        other = run_shards_here(cfg, 2)
        assert (other.status, other.answered) == ("done", 0)
        assert sum(teacher.received.values()) == 120
        after = snapshot(tmp_path / "main.duckdb")
        assert after["responses"] == before["responses"] and after["requests"] == before["requests"]
        # done: the shard stores were folded and removed
        assert not list(tmp_path.glob("main.shard-*"))


def test_a_shard_cut_short_is_finished_by_the_next_try(tmp_path):
    prompts = make_prompts(60)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    with TeacherServer() as teacher:
        cfg = GenerateConfig(input=tmp_path / "in.jsonl", db=tmp_path / "main.duckdb", model="m",
                             base_urls=[teacher.base_url], concurrency=4)
        job = sharding.prepare(cfg, 2)
        first = job.shards[0]
        sg.generate(first.config(cfg))  # shard 1 runs, shard 2 never does (its actor was killed)
        summary = sharding.finish(cfg, job, [sharding.ShardOutcome(first),
                                             sharding.ShardOutcome(job.shards[1], error="killed")])
        assert summary.status == "aborted" and summary.pending == job.shards[1].pending > 0
        assert summary.answered == first.pending
        again = run_shards_here(cfg, 2)
        assert (again.status, again.answered, again.pending) == ("done", job.shards[1].pending, 0)
        assert sum(teacher.received.values()) == 60 and set(teacher.received.values()) == {1}
        rows = stored(tmp_path / "main.duckdb")
        assert len(rows) == len({r[0] for r in rows}) == 60


def test_merge_twice_changes_nothing(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(40)] +
                [{"prompt": "x #always=400"}])
    with TeacherServer() as teacher:
        # two stores made by two independent runs of halves of the job: merge is all it takes
        for half, rows in (("a", range(0, 20)), ("b", range(20, 41))):
            lines = (tmp_path / "in.jsonl").read_text().splitlines()
            (tmp_path / f"{half}.jsonl").write_text("\n".join(lines[i] for i in rows) + "\n")
            sg.generate(input=tmp_path / f"{half}.jsonl", db=tmp_path / f"{half}.duckdb", model="m",
                        base_urls=[teacher.base_url])
    shards = [tmp_path / "a.duckdb", tmp_path / "b.duckdb"]
    result = synthgen("merge", "--db", tmp_path / "main.duckdb", *shards)
    assert result.returncode == 0, result.stderr
    assert "run 1: merged 40 answers" in result.stderr
    rows = stored(tmp_path / "main.duckdb")
    assert len(rows) == len({r[0] for r in rows}) == 40
    assert all(response == answer(prompt) for _, prompt, response in rows)
    con = duckdb.connect(str(tmp_path / "main.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), any_value(error_type) FROM failures").fetchone() == (1, "http_400")
    assert con.execute("SELECT status, answered, failed FROM runs").fetchall() == [("merged", 40, 1)]
    con.close()
    before = snapshot(tmp_path / "main.duckdb")
    again = synthgen("merge", "--db", tmp_path / "main.duckdb", *shards)
    assert again.returncode == 0, again.stderr
    assert "nothing to merge" in again.stderr
    assert snapshot(tmp_path / "main.duckdb") == before
    # the shards are read, never written
    assert merge_stores(tmp_path / "main.duckdb", shards)[0] is None


def test_merge_refuses_what_it_cannot_fold(tmp_path):
    plain = tmp_path / "plain.duckdb"
    duckdb.connect(str(plain)).close()
    result = synthgen("merge", "--db", tmp_path / "main.duckdb", plain)
    assert result.returncode == 2 and "not a synthgen store" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    itself = synthgen("merge", "--db", tmp_path / "main.duckdb", tmp_path / "main.duckdb")
    assert itself.returncode == 2 and "main store itself" in itself.stderr, itself.stderr
    missing = synthgen("merge", "--db", tmp_path / "main.duckdb", tmp_path / "nope.duckdb")
    assert missing.returncode == 2 and "nope.duckdb" in missing.stderr


def test_sharded_generate_needs_ray_and_a_teacher_everyone_reaches(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    base = ["generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb"]
    alone = synthgen(*base, "--shards", "2", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    assert alone.returncode == 2 and "--ray and --shards go together" in alone.stderr, alone.stderr
    with pytest.raises(sg.ConfigError, match="--shards needs a teacher"):
        sharding.prepare(GenerateConfig(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb"), 2)
    unknown = synthgen(*base, "--teacher", "nope", "--teacher-state-dir", tmp_path / "state")
    assert unknown.returncode == 2 and "--teacher nope: no teacher of that name" in unknown.stderr


def test_while_a_sharded_run_holds_the_store_a_second_generate_is_refused(tmp_path):
    """Issue 24 #2: a second `generate` on the main store of a sharded run answered every
    prompt itself while the shards did too (paid twice), and `status` called the live run
    killed. The driver holds the main store from prepare to finish, as any run holds its own."""
    prompts = make_prompts(60)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "main.duckdb"
    with TeacherServer() as teacher:
        cfg = GenerateConfig(input=tmp_path / "in.jsonl", db=db, model="m",
                             base_urls=[teacher.base_url], concurrency=4)
        job = sharding.prepare(cfg, 3)
        try:
            second = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                              "--base-url", teacher.base_url)
            assert second.returncode == 2, second.stderr
            assert f"a synthgen run {job.run_id} (pid" in second.stderr, second.stderr
            assert "is writing this store" in second.stderr
            assert sum(teacher.received.values()) == 0
            status = synthgen("status", "--db", db)
            assert status.returncode == 0, status.stderr
            said = status.stdout + status.stderr
            assert "running" in said and "killed" not in said
            # the shard stores are the driver's to fold; the store reads no other file
            peek = synthgen("sql", "--db", db, "SELECT count(*) FROM read_csv('/etc/hostname')")
            assert peek.returncode == 2 and "Traceback" not in peek.stderr
            outcomes = []
            for shard in job.shards:
                outcome = sharding.ShardOutcome(shard)
                if shard.pending:
                    outcome.summary = sg.generate(shard.config(cfg))
                outcomes.append(outcome)
            summary = sharding.finish(cfg, job, outcomes)
        finally:
            job.close()
        assert (summary.status, summary.answered) == ("done", 60)
        assert sum(teacher.received.values()) == 60 and set(teacher.received.values()) == {1}
    after = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                     "--base-url", "http://127.0.0.1:9/v1", "--skip-preflight")
    assert after.returncode == 0, after.stderr  # let go at the end: nothing left to send
