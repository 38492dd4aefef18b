"""Issue 24: whatever a teacher sends back, the paid answers survive, each under its own
prompt, and the store stays usable. Each test is a finding of the adversarial probe of
b9c2200 (numbered as the issue numbers them), driven as a user would: a real `synthgen`
process against a loopback teacher that answers one prompt with hostile bytes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import orjson
import pytest
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import TeacherServer, answer, make_prompts, write_jsonl

from synthgen.engine.retry import MAX_RETRY_AFTER, retrying
from synthgen.errors import RateLimited
from synthgen.store import recovery

KEY = "sk-test-abcdefghijklmnop0123"
ODD = "prompt 3: what is 3 + 3?"  # the prompt of make_prompts(8) that gets the hostile body


def rows(db) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, messages->>'$[0].content', response, prompt_tokens, "
                           "completion_tokens, finish_reason, model FROM corpus").fetchall()
    finally:
        con.close()


def assert_each_once(db, prompts) -> list[tuple]:
    got = rows(db)
    assert len({r[0] for r in got}) == len(got), "an answer stored twice"
    assert sorted(r[1] for r in got) == sorted(prompts)
    assert all(r[2] == answer(r[1]) for r in got), "an answer stored under another prompt"
    return got


def run(tmp_path, teacher, *extra, prompts=None, env=None):
    prompts = prompts or make_prompts(8)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    return synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                    "--model", "m", "--base-url", teacher.base_url, "--max-attempts", "2", *extra,
                    env=env, timeout=180)


def only(prompt: str, change):
    """A `respond` hook: `change(completion)` for `prompt`'s answers, the rest as they are."""
    def respond(p, attempt, completion, request):
        if p != prompt:
            return None
        return change(completion)
    return respond


def with_usage(**usage):
    def change(c):
        c["usage"].update(usage)
        return 200, c, {}
    return change


# 1. One odd-typed field in one answer used to lock the store for good.
@pytest.mark.parametrize("field,value", [
    ("completion_tokens", "x"), ("completion_tokens", 2**31), ("completion_tokens", 1e300),
    ("completion_tokens", -2**40), ("prompt_tokens", {"n": 1}), ("prompt_tokens", [3]),
])
def test_an_odd_usage_count_is_stored_as_unknown_and_the_next_run_works(tmp_path, field, value):
    with TeacherServer() as teacher:
        teacher.respond = only(ODD, with_usage(**{field: value}))
        result = run(tmp_path, teacher)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        got = {r[1]: r for r in assert_each_once(tmp_path / "c.duckdb", make_prompts(8))}
        assert got[ODD][3 if field == "prompt_tokens" else 4] is None  # unknown, not a lie
        teacher.respond = None
        more = make_prompts(12)
        again = run(tmp_path, teacher, prompts=more)
        assert again.returncode == 0, again.stderr
        assert_each_once(tmp_path / "c.duckdb", more)
        assert set(teacher.received.values()) == {1}, "a paid answer was bought again"
    assert not recovery.found(tmp_path / "c.duckdb")


@pytest.mark.parametrize("change", [
    {"finish_reason": {"why": "stop"}}, {"finish_reason": 42}, {"model": {"name": "m"}}, {"model": 7},
    {"logprob_id": 2**40}, {"logprob_id": -5}, {"logprob": "x"}, {"token": 7},
])
def test_odd_names_and_logprobs_mixed_with_normal_answers(tmp_path, change):
    def hostile(c):
        choice = c["choices"][0]
        if "finish_reason" in change:
            choice["finish_reason"] = change["finish_reason"]
        if "model" in change:
            c["model"] = change["model"]
        first = choice["logprobs"]["content"][0]
        if "logprob_id" in change:
            first["id"] = change["logprob_id"]
            first["top_logprobs"][0]["id"] = change["logprob_id"]
        if "logprob" in change:
            first["logprob"] = change["logprob"]
        if "token" in change:
            first["token"] = change["token"]
        return 200, c, {}

    with TeacherServer() as teacher:
        teacher.respond = only(ODD, hostile)
        result = run(tmp_path, teacher, "--logprobs", "2")
        assert result.returncode == 0, result.stderr
        assert_each_once(tmp_path / "c.duckdb", make_prompts(8))
        con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
        [(lp,)] = con.execute("SELECT logprobs FROM corpus WHERE messages->>'$[0].content' = ?",
                              [ODD]).fetchall()
        con.close()
        assert len(lp) == 2 and all(len(t["top_logprobs"]) == 2 for t in lp)
        if "logprob_id" in change:
            assert lp[0]["id"] is None and lp[1]["id"] == 1
        teacher.respond = None
        assert run(tmp_path, teacher, "--logprobs", "2", prompts=make_prompts(10)).returncode == 0
        assert_each_once(tmp_path / "c.duckdb", make_prompts(10))


def test_a_recovery_file_an_older_synthgen_wrote_with_odd_values_is_stored(tmp_path, teacher):
    """b9c2200 saved what a commit refused into a recovery file that no run could load: the
    store stayed locked. Such a file is now read field by field: the answers are stored."""
    assert run(tmp_path, teacher, prompts=make_prompts(2)).returncode == 0
    prompts = make_prompts(4)
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    [(rid, messages)] = con.execute("SELECT request_id, messages::VARCHAR FROM requests LIMIT 1").fetchall()
    con.close()
    lost = [{"run_id": 1, "answer": ["f" * 32, 0, {"text": "orphan", "finish_reason": {"x": 1},
                                                    "prompt_tokens": "x", "completion_tokens": 2**40,
                                                    "model": 7, "logprobs": [{"id": 2**40}],
                                                    "endpoint": None, "future_field": 1}, "1.5", None]},
            {"run_id": "2", "failure": {"request_id": rid, "messages": messages, "message": None}},
            {"nonsense": True}, [1, 2]]
    path = tmp_path / f"c.duckdb.{recovery._tag(tmp_path / 'c.duckdb')}.run1-1-1{recovery.SUFFIX}"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lost) + b'{"cut short')
    result = run(tmp_path, teacher, prompts=prompts)
    assert result.returncode == 0, result.stderr
    assert "stored 2 answers and failures" in result.stderr
    assert not path.exists()
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT text, prompt_tokens, completion_tokens, model, finish_reason FROM responses "
                       "WHERE request_id = ?", ["f" * 32]).fetchone() == ("orphan", None, None, "7", None)
    con.close()


# 3. A non-string error.message ended the run with a traceback, every time.
@pytest.mark.parametrize("status", [400, 401, 429, 500])
@pytest.mark.parametrize("body", [{"error": {"message": None}}, {"error": {"message": {"a": [1]}}},
                                  {"error": None}, {"error": [1, "two"]}, [1, 2], "just text"])
def test_an_error_body_of_any_shape_is_a_clear_fault(tmp_path, status, body):
    with TeacherServer(retry_after=0.05) as teacher:
        teacher.respond = only(ODD, lambda c: (status, body, {"Retry-After": "0"}))
        result = run(tmp_path, teacher, "--rate-limit-wait", "1")
        assert "Traceback" not in result.stderr, result.stderr
        # one prompt's 401 among answers is that prompt's failure (the key works for others)
        assert result.returncode == 0, result.stderr
        teacher.respond = None
        again = run(tmp_path, teacher, "--retry-failed")
        assert again.returncode == 0, again.stderr
        assert_each_once(tmp_path / "c.duckdb", make_prompts(8))


@pytest.mark.parametrize("status", [401, 500, 400])
def test_a_preflight_error_body_with_a_null_message_is_said_plainly(tmp_path, status):
    with TeacherServer() as teacher:
        teacher.models_reply = (status, {"error": {"message": None, "code": None}})
        result = run(tmp_path, teacher)
        assert "Traceback" not in result.stderr, result.stderr
        if status == 401:
            assert result.returncode != 0 and "refused the request (HTTP 401" in result.stderr
        else:  # a 500 may pass, a 400 is a proxy without the route: the run goes on
            assert result.returncode == 0, result.stderr
            assert_each_once(tmp_path / "c.duckdb", make_prompts(8))


# 6. A teacher that echoes the Authorization header: the key never printed or stored.
@pytest.mark.parametrize("status", [401, 500, 400])
def test_an_echoed_key_is_never_printed_or_stored(tmp_path, status):
    with TeacherServer() as teacher:
        def respond(prompt, attempt, completion, request):
            if prompt != ODD:
                return None
            said = dict(request.headers.items())
            auth = request.headers.get("Authorization")
            return status, {"error": {"message": f"bad request; headers {said} (Authorization: {auth})"}}, {}
        teacher.respond = respond
        env = clean_env(OPENAI_API_KEY=KEY)
        result = run(tmp_path, teacher, "--max-attempts", "1", env=env)
        assert KEY not in result.stderr + result.stdout
        con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
        stored = con.execute("SELECT coalesce(string_agg(message, ' '), '') FROM failures").fetchone()[0]
        stored += con.execute("SELECT coalesce(string_agg(message, ' '), '') FROM runs").fetchone()[0]
        con.close()
        assert stored and "***" in stored + result.stderr
        assert KEY not in stored and KEY[3:] not in stored


def test_basic_credentials_echoed_back_are_redacted_too(tmp_path):
    with TeacherServer() as teacher:
        def respond(prompt, attempt, completion, request):
            auth = request.headers.get("Authorization", "")
            return 401, {"error": {"message": f"who is {auth}? ({base64.b64decode(auth.split()[1])!r})"}}, {}
        teacher.respond = respond
        url = teacher.base_url.replace("http://", "http://alice:pa55word-xyz@")
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--model", "m", "--base-url", url)
        encoded = base64.b64encode(b"alice:pa55word-xyz").decode()
        con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
        [(stored,)] = con.execute("SELECT message FROM failures").fetchall()
        con.close()
        assert result.returncode != 0 and "who is Basic ***" in stored, stored
        for text in (stored, result.stderr):
            assert "pa55word-xyz" not in text and encoded not in text, text


# 7. A long read overlapping the end of a run failed the run and left its row open.
SLOW_QUERY = "SELECT sum(a.range * b.range) FROM range(150000) a, range(20000) b"


def test_a_long_read_during_a_run_never_fails_the_run(tmp_path):
    with TeacherServer(latency=0.02) as teacher:
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(60)])
        db = tmp_path / "c.duckdb"
        proc = start_synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                              "--base-url", teacher.base_url, "--concurrency", "2")
        while sum(teacher.received.values()) < 5 and proc.poll() is None:
            time.sleep(0.02)
        reader = subprocess.run([sys.executable, "-m", "synthgen", "sql", "--db", str(db), SLOW_QUERY],
                                capture_output=True, text=True, env=clean_env(), timeout=300)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert reader.returncode == 0, reader.stderr
    expected = (150000 * 149999 // 2) * (20000 * 19999 // 2)
    assert str(expected) in reader.stdout.replace(",", "")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, answered FROM runs").fetchall() == [("done", 60)]
    con.close()


# 8. A count sent as a string: read, and --tpm paces on it.
def test_a_numeric_string_count_is_read_as_the_number(tmp_path):
    with TeacherServer() as teacher:
        teacher.respond = lambda p, a, c, r: (200, {**c, "usage": {"prompt_tokens": "12",
                                                                    "completion_tokens": "3"}}, {})
        result = run(tmp_path, teacher, "--tpm", "100000")
        assert result.returncode == 0, result.stderr
        got = assert_each_once(tmp_path / "c.duckdb", make_prompts(8))
        assert {(r[3], r[4]) for r in got} == {(12, 3)}
        assert "tokens: 96 in, 24 out" in result.stderr


# 9. A huge Retry-After waits no longer than --rate-limit-wait allows.
@pytest.mark.parametrize("value", ["1e12", "inf", "nan", "Wed, 21 Oct 2099 07:28:00 GMT", "-5", "soon"])
def test_any_retry_after_is_capped_by_the_rate_limit_wait(value):
    policy = retrying(3, rate_limit_wait=8)
    from synthgen.backends.http import parse_retry_after

    after = parse_retry_after({"retry-after": value})
    fault = RateLimited("slow down", retry_after=after)

    class State:
        class outcome:  # tenacity's attribute
            @staticmethod
            def exception():
                return fault
        attempt_number, seconds_since_start = 1, 0.0

    wait = policy.wait(State)
    assert 0 <= wait <= 8 and wait == wait
    from synthgen.engine.retry import retry_after_cap

    assert retry_after_cap(8) == 8 and retry_after_cap(10_000) == MAX_RETRY_AFTER


def test_a_far_future_retry_after_does_not_stall_the_run(tmp_path):
    with TeacherServer() as teacher:
        teacher.respond = only(ODD, lambda c: (429, {"error": {"message": "later"}},
                                               {"Retry-After": "1e12"}))
        started = time.monotonic()
        result = run(tmp_path, teacher, "--rate-limit-wait", "2")
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        # the cap it used to apply was 120 s for the request and for every other request
        assert took < MAX_RETRY_AFTER / 2, took
        con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
        assert con.execute("SELECT error_type FROM failures").fetchall() == [("rate_limit",)]
        assert con.execute("SELECT count(*) FROM responses").fetchone() == (7,)
        con.close()


# 11. The smaller findings.
def test_answers_without_usage_are_said_to_be_unpriced(tmp_path, teacher):
    teacher.respond = lambda p, a, c, r: (200, {k: v for k, v in c.items() if k != "usage"}, {})
    result = run(tmp_path, teacher, "--price-in", "1", "--price-out", "2")
    assert result.returncode == 0, result.stderr
    assert "8 answers came without token counts" in result.stderr
    assert "lower bound" in result.stderr


CTRL_C_WHILE_LOADING = """
import os, signal, sys

# A terminal's Ctrl-C: delivered, and Python's handler in place, whatever the test runner's
# own process left for its children (a shell without job control starts background jobs
# with SIGINT ignored, and children inherit that: a suite run with `&` failed here).
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)

class CtrlC:  # the user's Ctrl-C arrives while the CLI's libraries load
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)

sys.meta_path.insert(0, CtrlC())
sys.argv = ["synthgen", "status", "--db", "x.duckdb"]
from synthgen.__main__ import run
run()
"""


def test_ctrl_c_while_synthgen_starts_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_LOADING], capture_output=True, text=True,
                            env=clean_env(), cwd=tmp_path, timeout=60)
    assert result.returncode == 130, (result.stderr, _signal_state())
    assert result.stderr == "interrupted\n"


def _signal_state() -> str:
    """What this process's children inherit: blocked and ignored signals."""
    with open("/proc/self/status") as fh:
        return " ".join(line.strip() for line in fh if line.startswith(("SigBlk", "SigIgn")))


def test_a_damaged_store_is_called_damaged_not_full(tmp_path, teacher):
    prompts = make_prompts(1500)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    assert synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                    "--base-url", teacher.base_url, "--concurrency", "32").returncode == 0
    size = db.stat().st_size
    with open(db, "r+b") as fh:  # one block of the tables' data: read while planning more
        fh.seek(int(size * 0.3) // 4096 * 4096 + 100)
        fh.write(b"\xa5" * 64)
    write_jsonl(tmp_path / "more.jsonl", [{"prompt": p} for p in make_prompts(300, "more")])
    result = synthgen("generate", "--input", tmp_path / "more.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url)
    assert result.returncode == 2
    assert "damaged" in result.stderr and "Free space" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_edit_of_only_a_lines_metadata_is_what_exports(tmp_path, teacher):
    prompts = make_prompts(5)
    for tag in ("old", "new"):
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": p, "tag": tag} for p in prompts])
        assert synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                        "--model", "m", "--base-url", teacher.base_url).returncode == 0
    assert sum(teacher.received.values()) == 5  # nothing bought twice
    result = synthgen("export", "--db", tmp_path / "c.duckdb", "--out", tmp_path / "o.jsonl")
    assert result.returncode == 0, result.stderr
    tags = [json.loads(line)["tag"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert tags == ["new"] * 5


def test_a_killed_runs_counts_are_what_it_stored(tmp_path):
    with TeacherServer(latency=0.05) as teacher:
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(400)])
        db = tmp_path / "c.duckdb"
        proc = start_synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                              "--base-url", teacher.base_url, "--concurrency", "8")
        while sum(teacher.received.values()) < 60 and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert synthgen("status", "--db", db).returncode == 0
        result = run(tmp_path, teacher, prompts=make_prompts(2, "other"))  # marks run 1 killed
        assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(db), read_only=True)
    status, answered = con.execute("SELECT status, answered FROM runs WHERE run_id = 1").fetchone()
    stored = con.execute("SELECT count(*) FROM responses WHERE run_id = 1").fetchone()[0]
    con.close()
    assert status == "killed" and answered == stored > 0
