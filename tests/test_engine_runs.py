"""The engine against a real loopback teacher: clean runs, faults, resume, kill, stop early.

Every test checks the stored rows themselves: each answer must be the teacher's answer to
the very prompt stored beside it (the test teacher derives answers from prompts).
"""

from __future__ import annotations

import json
import signal
import time

import duckdb
import pytest
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import TeacherServer, answer, make_prompts, write_jsonl


def corpus(db) -> list[tuple[str, str, int, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT request_id, messages->>'$[0].content', sample_index, response FROM corpus"
        ).fetchall()
    finally:
        con.close()


def assert_each_answer_is_its_own(rows) -> None:
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a request is stored twice"
    for _, prompt, _, response in rows:
        assert response.startswith(answer(prompt)), (prompt, response)


def gen(teacher, inp, db, *extra):
    return synthgen("generate", "--input", inp, "--db", db, "--model", "m",
                    "--base-url", teacher.base_url, *extra)


def test_clean_run_stores_every_prompt_once_with_its_answer(teacher, tmp_path):
    prompts = make_prompts(300)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p, "idx": i} for i, p in enumerate(prompts)])
    result = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb", "--concurrency", "16")
    assert result.returncode == 0, result.stderr
    rows = corpus(tmp_path / "c.duckdb")
    assert sorted(r[1] for r in rows) == sorted(prompts)
    assert_each_answer_is_its_own(rows)
    assert sum(teacher.received.values()) == 300
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    meta = con.execute("SELECT metadata->>'idx', messages->>'$[0].content' FROM corpus").fetchall()
    assert all(prompts[int(i)] == p for i, p in meta), "metadata travels with its own prompt"
    assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
    run = con.execute("SELECT status, answered, planned, ended_at IS NOT NULL FROM runs").fetchall()
    assert run == [("done", 300, 300, True)]


def test_same_command_again_sends_nothing_and_a_changed_parameter_sends_anew(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(50)])
    assert gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb").returncode == 0
    again = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb")
    assert again.returncode == 0, again.stderr
    assert sum(teacher.received.values()) == 50, "an answered request was sent again"
    changed = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb", "--temperature", "0.5")
    assert changed.returncode == 0
    assert sum(teacher.received.values()) == 100
    assert len(corpus(tmp_path / "c.duckdb")) == 100


def test_n_samples_are_distinct_requests_with_their_own_seed(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(10)])
    result = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb", "--n", "3", "--seed", "7",
                 "--temperature", "0.8", "--max-tokens", "32", "--stop", "END",
                 "--extra-body", '{"top_k": 20}')
    assert result.returncode == 0, result.stderr
    rows = corpus(tmp_path / "c.duckdb")
    assert len(rows) == 30
    assert_each_answer_is_its_own(rows)
    for _, _, k, response in rows:
        assert response.endswith(f"/seed={7 + k}")
    body = teacher.bodies[0]
    assert body["temperature"] == 0.8 and body["max_tokens"] == 32
    assert body["stop"] == ["END"] and body["top_k"] == 20 and "n" not in body


def test_fault_mix_heals_what_can_heal_and_fails_the_rest_fast(tmp_path):
    faults = ["500", "429", "drop", "trunc", "badjson", "503", "hang", "500,500", "drop,429"]
    rows, healable, doomed = [], [], []
    for i, p in enumerate(make_prompts(240)):
        if i % 12 == 0:
            p += " #always=400"
            doomed.append(p)
        else:
            if i % 3 == 0:
                p += f" #fault={faults[(i // 3) % len(faults)]}"
            healable.append(p)
        rows.append({"prompt": p})
    write_jsonl(tmp_path / "in.jsonl", rows)
    with TeacherServer(latency=0.002) as teacher:
        result = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb", "--concurrency", "32",
                     "--timeout", "1", "--max-attempts", "5")
        received = dict(teacher.received)
    assert result.returncode == 0, result.stderr
    stored = corpus(tmp_path / "c.duckdb")
    assert sorted(r[1] for r in stored) == sorted(healable)
    assert_each_answer_is_its_own(stored)
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    failed = con.execute(
        "SELECT messages->>'$[0].content', error_type, status_code, attempts FROM failures"
    ).fetchall()
    assert sorted(f[0] for f in failed) == sorted(doomed)
    assert all(f[1:] == ("http_400", 400, 1) for f in failed)
    assert all(received[p] <= 2 for p in doomed), "a 400 must not be retried"
    attempts = dict(con.execute(
        "SELECT messages->>'$[0].content', attempts FROM corpus").fetchall())
    assert attempts[next(p for p in healable if "#fault=500,500" in p)] == 3
    assert "timeout" in result.stderr and "rate_limit" in result.stderr


def test_a_request_that_never_heals_ends_in_failures_with_its_last_error(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}, {"prompt": "bad #always=503"}])
    result = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb", "--max-attempts", "3")
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT error_type, status_code, attempts FROM failures").fetchall() == [
        ("http_503", 503, 3)]
    con.close()
    assert teacher.received["bad #always=503"] == 3
    status = synthgen("status", "--db", tmp_path / "c.duckdb")
    assert "1 failed (http_503 1)" in status.stdout
    # --retry-failed re-queues it; once the teacher heals it is answered and leaves failures.
    teacher.faults = False
    again = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb", "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert teacher.received == {"ok": 1, "bad #always=503": 4}, "only the failed request is re-sent"
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
    assert len(corpus(tmp_path / "c.duckdb")) == 2


# An answer is on the writer's queue within this long of the teacher sending it (the
# client reads, parses and queues it): one sent earlier than this before a commit began
# is in that commit. Generous, for a machine whose cores other jobs share.
TRANSIT_S = 0.25


def test_sigkill_midway_then_resume_stores_everything_once(tmp_path):
    n, concurrency = 3000, 32
    prompts = make_prompts(n)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    with TeacherServer(latency=0.02) as teacher:
        teacher.keep_bodies = False
        args = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                "--base-url", teacher.base_url, "--concurrency", str(concurrency))
        proc = start_synthgen(*args)
        deadline = time.monotonic() + 60
        while sum(teacher.received.values()) < n // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.wait(10)
        sent_before = sum(teacher.received.values())
        answered_before = list(teacher.answered_at)
        assert sent_before < n, "the run finished before the kill; the test proves nothing"
        # What the killed run had committed, and when its last commit began: a commit's
        # now() is its transaction's start, when the writer took its batch off the queue.
        con = duckdb.connect(str(db), read_only=True)
        [(stored, last_commit, commits)] = con.execute(
            "SELECT count(*), epoch(max(created_at)), count(DISTINCT created_at) FROM responses").fetchall()
        con.close()
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
        received = dict(teacher.received)
    rows = corpus(db)
    assert sorted(r[1] for r in rows) == sorted(prompts)
    assert_each_answer_is_its_own(rows)
    resent = sum(received.values()) - n
    # Exactly once: nothing stored was sent again, everything not stored was.
    assert resent == sent_before - stored
    # And what was not stored is what the run itself says could not be: the requests in
    # flight at the kill, plus the answers sent after its last commit took its batch (one
    # commit interval of answers: 0.1 s idle, longer when the writer waits for a core).
    late = sum(1 for t in answered_before if t > last_commit - TRANSIT_S)
    print(f"re-sent {resent} <= {concurrency} in flight + {late} late + 10 ({commits} commits)")
    assert resent <= concurrency + late + 10, (
        f"re-sent {resent}: in flight {concurrency}, {late} answered after the last of {commits} "
        f"commits began (at most {TRANSIT_S} s before it)")


def test_ctrl_c_stops_flushes_and_says_how_to_resume(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(2000)])
    db = tmp_path / "c.duckdb"
    with TeacherServer(latency=0.05) as teacher:
        args = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                "--base-url", teacher.base_url, "--concurrency", "16")
        proc = start_synthgen(*args)
        while sum(teacher.received.values()) < 200:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        sent = sum(teacher.received.values())
        assert proc.returncode == 130, err
        assert "Resume with" in err and "Traceback" not in err
        stored = len(corpus(db))
        assert stored >= sent - 16 and stored < 2000, "answers in flight at Ctrl-C were flushed"
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
        assert sum(teacher.received.values()) - 2000 <= 16
    assert_each_answer_is_its_own(corpus(db))
    con = duckdb.connect(str(db), read_only=True)
    assert [s for (s,) in con.execute("SELECT status FROM runs ORDER BY run_id").fetchall()] == [
        "interrupted", "done"]


@pytest.mark.parametrize("preflight", [True, False], ids=["preflight", "engine"])
def test_bad_key_stops_early_and_leaves_everything_pending(teacher, tmp_path, preflight):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(500)])
    teacher.status_all = 401
    extra = () if preflight else ("--skip-preflight",)
    result = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb", "--concurrency", "4", *extra)
    assert result.returncode == 3
    assert "check the API key" in result.stderr and "Traceback" not in result.stderr
    assert sum(teacher.received.values()) < 50, "the run burned through the file"
    if not preflight:  # the preflight refuses before a store or a run exists
        con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
        assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "aborted"
        con.close()
    teacher.status_all = None
    again = gen(teacher, tmp_path / "in.jsonl", tmp_path / "c.duckdb")
    assert again.returncode == 0 and len(corpus(tmp_path / "c.duckdb")) == 500


def test_unreachable_teacher_is_refused_before_sending(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(20)])
    server = TeacherServer().start()
    url = server.base_url
    server.stop()  # nothing listens on that port any more
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "m", "--base-url", url)
    assert result.returncode == 3, result.stderr
    assert "no teacher is reachable" in result.stderr and "Traceback" not in result.stderr


def test_teacher_that_dies_mid_run_stops_the_run_early_and_resumable(tmp_path):
    prompts = make_prompts(3000)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    server = TeacherServer(latency=0.01).start()
    port = server.port
    args = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
            "--base-url", server.base_url, "--max-attempts", "2", "--concurrency", "8")
    proc = start_synthgen(*args)
    while sum(server.received.values()) < 300:
        time.sleep(0.01)
    server.stop()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "unreachable" in err and "Traceback" not in err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "aborted"
    con.close()
    with TeacherServer().start(port=port):
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
    rows = corpus(db)
    assert sorted(r[1] for r in rows) == sorted(prompts)
    assert_each_answer_is_its_own(rows)


def test_a_model_the_teacher_does_not_serve_is_refused_before_sending(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "gpt-typo", "--base-url", teacher.base_url)
    assert result.returncode == 3
    assert "does not serve model 'gpt-typo'" in result.stderr and "m" in result.stderr
    assert sum(teacher.received.values()) == 0


def test_api_key_never_reaches_store_exports_or_output(teacher, tmp_path):
    secret = "sk-test-DO-NOT-LEAK-4242"
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(20)] +
                [{"prompt": "bad #always=400"}])
    env = clean_env(MY_KEY=secret)
    db = tmp_path / "c.duckdb"
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url.replace("http://", "http://user:" + secret + "@"),
                      "--api-key-env", "MY_KEY", "-v", env=env)
    assert result.returncode == 0, result.stderr
    assert all(h.get("Authorization") == f"Bearer {secret}" for h in teacher.headers)
    outputs = [result.stdout, result.stderr]
    for cmd in (("status", "--db", db), ("sql", "--db", db, "SELECT * FROM runs"),
                ("sql", "--db", db, "--format", "jsonl", "SELECT * FROM failures"),
                ("export", "--db", db, "--out", tmp_path / "out.jsonl"),
                ("export", "--db", db, "--out", tmp_path / "out.parquet")):
        r = synthgen(*cmd, env=env)
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    for text in outputs:
        assert secret not in text
    for path in tmp_path.iterdir():
        if path.is_file() and path.name != "in.jsonl":
            assert secret.encode() not in path.read_bytes(), path.name


def test_python_api_matches_the_cli(teacher, tmp_path):
    import synthgen as sg

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(25)])
    summary = sg.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m",
                          base_urls=[teacher.base_url], concurrency=5, logprobs=3)
    assert (summary.status, summary.answered, summary.pending) == ("done", 25, 0)
    con = sg.open_store(tmp_path / "c.duckdb")
    lp = con.execute("SELECT logprobs FROM corpus LIMIT 1").fetchone()[0]
    assert lp[0]["top_logprobs"] and len(lp[0]["top_logprobs"]) == 3
    assert isinstance(json.loads(con.execute("SELECT config FROM runs").fetchone()[0]), dict)
    with pytest.raises(duckdb.Error):
        con.execute("DELETE FROM responses")  # open_store is read-only by default


def test_each_answer_records_what_its_logprobs_are(teacher, tmp_path):
    """--logprobs-mode goes with the run that answered: a resumed plan answered partly by a
    run that said `processed` (at the request's temperature) and partly by one that said
    nothing keeps both, per answer; answers without logprobs have no mode."""
    from synthgen.student.rows import load_rows

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(8)])
    db = tmp_path / "c.duckdb"
    args = ("--logprobs", "2", "--temperature", "0.7")
    first = gen(teacher, tmp_path / "in.jsonl", db, *args, "--limit", "3", "--logprobs-mode", "processed")
    assert first.returncode == 0, first.stderr
    rest = gen(teacher, tmp_path / "in.jsonl", db, *args)
    assert rest.returncode == 0, rest.stderr
    plain = gen(teacher, tmp_path / "in.jsonl", tmp_path / "plain.duckdb", "--logprobs-mode", "raw")
    assert plain.returncode == 0, plain.stderr
    con = duckdb.connect(str(db), read_only=True)
    got = con.execute("SELECT r.run_id, logprobs_mode, logprobs_temperature FROM corpus c "
                      "JOIN responses r USING (request_id) ORDER BY line").fetchall()
    assert got == [(1, "processed", 0.7)] * 3 + [(2, None, None)] * 5
    assert json.loads(con.execute("SELECT config FROM runs WHERE run_id = 1").fetchone()[0])[
        "logprobs_mode"] == "processed"
    con.close()
    con = duckdb.connect(str(tmp_path / "plain.duckdb"), read_only=True)
    assert con.execute("SELECT DISTINCT logprobs_mode, logprobs_temperature FROM corpus").fetchall() == [
        (None, None)]  # no logprobs asked for: nothing to describe
    con.close()
    rows = load_rows(db, "SELECT * FROM corpus ORDER BY line")
    assert [(r.logprobs_mode, r.logprobs_temperature) for r in rows[:4]] == [("processed", 0.7)] * 3 + [
        (None, None)]
    bad = gen(teacher, tmp_path / "in.jsonl", db, "--logprobs-mode", "cooked")
    assert bad.returncode == 2 and "--logprobs-mode" in bad.stderr and "Traceback" not in bad.stderr
