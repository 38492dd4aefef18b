"""Issue 24's fuzz: a teacher that answers with random shapes and types, and input files
of random lines, against real `synthgen` processes and real DuckDB files.

Per CI run: at least FUZZ_RESPONSES (2,000) teacher responses and FUZZ_LINES (1,000) input
lines, drawn from seeds that change with every run (printed, so a failure replays with
SYNTHGEN_FUZZ_SEED=N); SYNTHGEN_FUZZ=20000 asks for 20,000 of each. What must hold:

    no traceback, ever                   a clear error or a clean exit
    no answer under the wrong prompt     every stored text is its own prompt's answer
    a store the next run can use         a healthy teacher then answers every prompt once
"""

from __future__ import annotations

import os
import random
import time

import duckdb
from conftest import synthgen
from fuzz_teacher import HostileTeacher, input_file
from teacher_server import TeacherServer, answer, write_jsonl

SCALE = int(os.environ.get("SYNTHGEN_FUZZ", "0") or 0)
FUZZ_RESPONSES = SCALE or 2000
FUZZ_LINES = SCALE or 1000
SEED = int(os.environ.get("SYNTHGEN_FUZZ_SEED") or time.time_ns() % 1_000_000)


def corpus(db) -> list[tuple[str, str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, messages->>'$[-1].content', response FROM corpus").fetchall()
    finally:
        con.close()


def test_random_teacher_responses_never_break_a_run_or_the_store(tmp_path):
    print(f"fuzz seed {SEED} (replay: SYNTHGEN_FUZZ_SEED={SEED})")
    db = tmp_path / "c.duckdb"
    prompts: list[str] = []
    with HostileTeacher(seed=SEED) as teacher:
        batch = 0
        while teacher.served < FUZZ_RESPONSES:  # each round: prompts for about half the rest
            n = max(50, (FUZZ_RESPONSES - teacher.served) // 2)
            new = [f"fuzz {SEED} round {batch} prompt {i}" for i in range(n)]
            prompts += new
            write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in new])
            result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                              "--base-url", teacher.base_url, "--concurrency", "64", "--max-attempts", "3",
                              "--rate-limit-wait", "0.1", "--timeout", "5", "--logprobs", "2",
                              timeout=900)
            said = result.stdout + result.stderr
            assert "Traceback" not in said, f"seed {SEED}: {said[-3000:]}"
            assert result.returncode in (0, 1), f"seed {SEED}: {said[-3000:]}"
            assert "pending" in said and "0 pending" in said, f"seed {SEED}: {said[-3000:]}"
            batch += 1
        served = teacher.served
        stored = corpus(db)
        assert len({r[0] for r in stored}) == len(stored), f"seed {SEED}: an answer stored twice"
        wrong = [r for r in stored if r[2] != answer(r[1])]
        assert not wrong, f"seed {SEED}: answers under the wrong prompt: {wrong[:3]}"
        # The store the fuzz left is one a healthy teacher finishes: every prompt once.
        teacher.respond = None
        write_jsonl(tmp_path / "all.jsonl", [{"prompt": p} for p in prompts])
        before = dict(teacher.received)
        healed = synthgen("generate", "--input", tmp_path / "all.jsonl", "--db", db, "--model", "m",
                          "--base-url", teacher.base_url, "--concurrency", "64", "--retry-failed",
                          "--logprobs", "2", timeout=600)
        assert healed.returncode == 0, f"seed {SEED}: {healed.stderr[-3000:]}"
        resent = {p for p, n in teacher.received.items() if n > before.get(p, 0)}
    final = corpus(db)
    assert sorted(r[1] for r in final) == sorted(prompts), f"seed {SEED}"
    assert all(r[2] == answer(r[1]) for r in final), f"seed {SEED}"
    assert not resent & {r[1] for r in stored}, f"seed {SEED}: a stored answer was bought again"
    assert served >= FUZZ_RESPONSES


def test_random_input_lines_are_named_or_answered_never_a_traceback(tmp_path):
    seed = SEED + 1
    print(f"fuzz seed {seed} (replay: SYNTHGEN_FUZZ_SEED={SEED})")
    path = tmp_path / "in.jsonl"
    path.write_bytes(input_file(seed, FUZZ_LINES))
    lines = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())  # as the reader splits
    with TeacherServer() as teacher:
        strict = synthgen("generate", "--input", path, "--db", tmp_path / "strict.duckdb", "--model", "m",
                          "--base-url", teacher.base_url, timeout=600)
        assert "Traceback" not in strict.stderr, f"seed {seed}: {strict.stderr[-3000:]}"
        assert strict.returncode == 1, f"seed {seed}: {strict.stderr[-2000:]}"
        assert "invalid input" in strict.stderr
        assert sum(teacher.received.values()) == 0, f"seed {seed}: sent despite bad input"
        db = tmp_path / "c.duckdb"
        skipped = synthgen("generate", "--input", path, "--db", db, "--model", "m", "--base-url",
                           teacher.base_url, "--skip-invalid", "--concurrency", "32", timeout=600)
        assert "Traceback" not in skipped.stderr, f"seed {seed}: {skipped.stderr[-3000:]}"
        assert skipped.returncode == 0, f"seed {seed}: {skipped.stderr[-3000:]}"
    con = duckdb.connect(str(db), read_only=True)
    planned = con.execute("SELECT count(*) FROM plan_requests").fetchone()[0]
    duplicates = con.execute("SELECT count(*) FROM duplicate_inputs").fetchone()[0]
    invalid = con.execute("SELECT count(*) FROM invalid_inputs").fetchone()[0]
    failed = con.execute("SELECT count(*) FROM failures").fetchone()[0]
    con.close()
    assert planned + duplicates + invalid == lines, f"seed {seed}: a line neither planned nor named"
    assert invalid > 0 and planned > 0 and failed == 0
    stored = corpus(db)
    assert len(stored) == planned
    assert all(r[2] == answer(r[1]) for r in stored), f"seed {seed}: an answer under the wrong prompt"


def test_the_generators_are_seeded():
    """A failing seed replays: the same seed, the same bytes."""
    assert input_file(5, 200) == input_file(5, 200) != input_file(6, 200)
    from fuzz_teacher import hostile

    completion = {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1}}
    draws = [hostile(3, f"p{i}", 1, completion, 0.4) for i in range(50)]
    assert draws == [hostile(3, f"p{i}", 1, completion, 0.4) for i in range(50)]
    assert random.Random(1).random() == random.Random(1).random()
