"""Issue 13, faults: 429-only gateways, a full disk, signals and killed runs, a damaged
store, answers that are not plain text, duplicate and edited prompts. Every test checks
the stored rows, not only exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from conftest import start_synthgen, synthgen
from gateway_teacher import GatewayTeacher
from teacher_server import TeacherServer, answer, make_prompts, write_jsonl

from synthgen.store import recovery


def stored(db) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, messages->>'$[0].content', response FROM corpus").fetchall()
    finally:
        con.close()


def assert_once_each(rows, prompts) -> None:
    assert len({r[0] for r in rows}) == len(rows), "an answer stored twice"
    assert sorted(r[1] for r in rows) == sorted(prompts)
    assert all(resp == answer(p) for _, p, resp in rows), "an answer stored with another prompt"


# 5. a gateway that only says 429 (LiteLLM-like): waited out, learned, nothing failed
@pytest.mark.parametrize("concurrency", ["16", "auto"])
def test_a_429_only_gateway_ends_with_every_prompt_answered(tmp_path, concurrency):
    prompts = make_prompts(80)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    with GatewayTeacher(limit=12, window=1.0, retry_after=1) as gw:
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--model", "m", "--base-url", gw.base_url, "--concurrency", concurrency,
                          "--max-attempts", "3", timeout=240)
        refused = gw.refused
    assert result.returncode == 0, result.stderr
    assert refused > 0, "the gateway never limited the run: the test proves nothing"
    assert_once_each(stored(tmp_path / "c.duckdb"), prompts)
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
    con.close()


def test_rate_limits_past_the_wait_budget_fail_as_rate_limit(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p #always=429"}, {"prompt": "ok"}])
    with TeacherServer(retry_after=0.2) as teacher:
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--model", "m", "--base-url", teacher.base_url, "--max-attempts", "2",
                          "--rate-limit-wait", "1.5")
        tries = teacher.received["p #always=429"]
    assert result.returncode == 0, result.stderr
    assert tries > 2, "429s counted against --max-attempts"
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT error_type, status_code FROM failures").fetchall() == [("rate_limit", 429)]
    con.close()


# 7. a full disk never loses a paid answer
@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs the test mounts (root only); the answers do not fit in it."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_every_answer_and_the_rerun_sends_only_what_was_in_flight(small_disk, tmp_path):
    prompts = [f"{p} {'x' * 1500}" for p in make_prompts(1500)]
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = small_disk / "c.duckdb"
    args = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m", "--concurrency", "16")
    with TeacherServer(latency=0.002) as teacher:
        teacher.keep_bodies = False
        full = synthgen(*args, "--base-url", teacher.base_url, timeout=240)
        first = sum(teacher.received.values())
    assert full.returncode == 2, full.stdout + full.stderr
    assert "Traceback" not in full.stderr and len(full.stderr.strip().splitlines()) <= 3, full.stderr
    assert "could not be written" in full.stderr and "No space left on device" in full.stderr
    assert first < len(prompts), "the disk never filled: the test proves nothing"
    saved = recovery.found(db)
    assert saved, "the answers received but not stored went nowhere"
    assert str(saved[0]) in full.stderr

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    with TeacherServer(latency=0.002) as teacher:
        teacher.keep_bodies = False
        again = synthgen(*args, "--base-url", teacher.base_url, timeout=240)
        resent = sum(teacher.received.values()) + first - len(prompts)
    assert again.returncode == 0, again.stderr
    assert "stored" in again.stderr and "could not write" in again.stderr, "the recovery file was not said"
    assert_once_each(stored(db), prompts)
    assert resent <= 16, f"{resent} answers bought twice; at most the 16 in flight may be"
    assert not recovery.found(db)
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute("SELECT status, answered FROM runs ORDER BY run_id").fetchall()
    con.close()
    assert runs[0][0] in ("failed", "killed") and runs[-1][0] == "done"


# 8. SIGHUP, signals while planning, killed runs
def test_sighup_flushes_says_how_to_resume_and_resends_at_most_what_was_in_flight(tmp_path):
    prompts = make_prompts(3000)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    with TeacherServer(latency=0.02) as teacher:
        teacher.keep_bodies = False
        args = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                "--base-url", teacher.base_url, "--concurrency", "16")
        proc = start_synthgen(*args)
        while sum(teacher.received.values()) < 300:
            time.sleep(0.01)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
        sent = sum(teacher.received.values())
        assert proc.returncode == 130, err
        assert "Resume with" in err and "Traceback" not in err
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
        con.close()
        assert synthgen(*args).returncode == 0
        resent = sum(teacher.received.values()) - len(prompts)
    assert sent < len(prompts)
    assert resent <= 16, f"re-sent {resent}"
    assert_once_each(stored(db), prompts)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_while_the_input_is_read_ends_cleanly(teacher, tmp_path, sig):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(600_000):
            fh.write(f'{{"prompt": "p{i}"}}\n')
    db = tmp_path / "c.duckdb"
    proc = start_synthgen("generate", "--input", path, "--db", db, "--model", "m",
                          "--base-url", teacher.base_url)
    for _ in range(400):  # until the run row exists: the input is being read
        time.sleep(0.02)
        if db.exists():
            with contextlib.suppress(duckdb.Error):
                break
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Resume with" in err
    assert sum(teacher.received.values()) == 0
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
    con.close()


def test_a_killed_run_is_shown_and_marked_as_killed(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(3000)])
    db = tmp_path / "c.duckdb"
    with TeacherServer(latency=0.02) as teacher:
        args = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                "--base-url", teacher.base_url, "--concurrency", "8")
        proc = start_synthgen(*args)
        while sum(teacher.received.values()) < 200:
            time.sleep(0.01)
        time.sleep(1.5)  # the run row records committed counts every second
        proc.kill()
        proc.wait(10)
        status = synthgen("status", "--db", db, "--json")
        run = json.loads(status.stdout.splitlines()[0])
        assert run["status"] == "killed" and run["run_answered"] > 0, run
        assert synthgen(*args).returncode == 0
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT status, answered > 0 FROM runs ORDER BY run_id").fetchall()
    con.close()
    assert rows == [("killed", True), ("done", True)]


# 9. a damaged store: one clear error, exit 2, no traceback
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_store_gets_one_clear_error_from_every_command(teacher, tmp_path, damage):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(50)])
    db = tmp_path / "c.duckdb"
    gen = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
           "--base-url", teacher.base_url)
    assert synthgen(*gen).returncode == 0
    data = db.read_bytes()
    if damage == "truncate":
        db.write_bytes(data[: len(data) // 3])
    else:
        db.write_bytes(data[:4096] + os.urandom(len(data) - 8192) + data[-4096:])
    for cmd in (("status", "--db", db), gen, ("sql", "--db", db, "SELECT count(*) FROM corpus"),
                ("export", "--db", db, "--out", tmp_path / "o.jsonl")):
        result = synthgen(*cmd)
        assert result.returncode == 2, (cmd[0], result.returncode, result.stderr[-500:])
        assert "Traceback" not in result.stderr and result.stderr.startswith("error:"), result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2, result.stderr


# 10. answers that are not plain text
def test_tool_calls_and_refusals_are_stored_and_an_empty_answer_is_a_failure(teacher, tmp_path):
    kinds = ("t #always=toolcall", "r #always=refusal", "n #always=nullcontent",
             "e #always=errorbody", "fine")
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in kinds])
    db = tmp_path / "c.duckdb"
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url, "--max-attempts", "2")
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(db), read_only=True)
    answered = dict(con.execute(
        "SELECT messages->>'$[0].content', [response, tool_calls->>'$[0].function.name', refusal] FROM corpus"
    ).fetchall())
    failed = dict(con.execute(
        "SELECT messages->>'$[0].content', [error_type, message] FROM failures").fetchall())
    con.close()
    assert answered == {"t #always=toolcall": [None, "lookup", None],
                        "r #always=refusal": [None, None, "I can't help with that."],
                        "fine": [answer("fine"), None, None]}
    assert failed["n #always=nullcontent"][0] == "invalid_response"
    assert "no content, tool calls or refusal" in failed["n #always=nullcontent"][1]
    assert "upstream model crashed: CUDA OOM" in failed["e #always=errorbody"][1]
    out = tmp_path / "o.jsonl"
    assert synthgen("export", "--db", db, "--out", out).returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    turns = {r["messages"][0]["content"]: r["messages"][-1] for r in rows}
    assert turns["t #always=toolcall"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert turns["r #always=refusal"]["refusal"] == "I can't help with that."


# 12. duplicate and edited prompts
def test_duplicate_lines_keep_their_metadata_and_are_counted(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "same", "src": "a"}, {"prompt": "other", "src": "b"},
                                        {"prompt": "same", "src": "c"}, {"prompt": "same", "src": "d"}])
    db = tmp_path / "c.duckdb"
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url)
    assert result.returncode == 0 and "2 input lines repeat an earlier line's prompt" in result.stderr
    assert teacher.received["same"] == 1
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT metadata->>'src' FROM corpus WHERE line = 1").fetchall() == [("a",)]
    assert con.execute("SELECT line, metadata->>'src' FROM duplicate_inputs ORDER BY line").fetchall() == [
        (3, "c"), (4, "d")]
    con.close()


def test_export_writes_the_current_plan_unless_asked_for_everything(teacher, tmp_path):
    db = tmp_path / "c.duckdb"
    gen = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
           "--base-url", teacher.base_url)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "keep"}, {"prompt": "old wording"}])
    assert synthgen(*gen).returncode == 0
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "keep"}, {"prompt": "new wording"}])
    assert synthgen(*gen).returncode == 0
    current, everything = tmp_path / "cur.jsonl", tmp_path / "all.jsonl"
    assert synthgen("export", "--db", db, "--out", current).returncode == 0
    assert synthgen("export", "--db", db, "--out", everything, "--all-plans").returncode == 0

    def prompts_of(path: Path) -> list[str]:
        return sorted(json.loads(line)["messages"][0]["content"] for line in path.read_text().splitlines())

    assert prompts_of(current) == ["keep", "new wording"]
    assert prompts_of(everything) == ["keep", "new wording", "old wording"]
