"""Checked before anything starts: `generate` without --base-url refuses a missing input or
bad lines before it starts the bundled teacher or creates a store, and a store that holds
every answer already is not served again (no teacher to send nothing)."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from pathlib import Path

import duckdb
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import write_jsonl

from synthgen.teacher.local import MODEL_NAME


def spy_server(tmp_path):
    """A stand-in llama-server (SYNTHGEN_LLAMA_SERVER) that only notes it was started."""
    marker = tmp_path / "teacher-started"
    script = tmp_path / "llama-server"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return clean_env(SYNTHGEN_LLAMA_SERVER=str(script)), marker


def test_a_missing_input_or_a_bad_line_starts_no_teacher_and_makes_no_store(tmp_path):
    env, started = spy_server(tmp_path)
    db = tmp_path / "c.duckdb"
    missing = synthgen("generate", "--input", tmp_path / "missing.jsonl", "--db", db, env=env)
    assert missing.returncode == 2 and "input: " in missing.stderr and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{"nope": 1}\nnot json\n')
    bad = synthgen("generate", "--input", tmp_path / "bad.jsonl", "--db", db, env=env)
    assert bad.returncode != 0 and "2 invalid input lines; nothing was sent" in bad.stderr
    assert "bad.jsonl:2:" in bad.stderr and "bad.jsonl:3:" in bad.stderr
    assert not db.exists() and not started.exists()
    assert "starting" not in (missing.stderr + bad.stderr).lower()


def test_a_finished_store_is_not_served_again(teacher, tmp_path):
    env, started = spy_server(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q{i}"} for i in range(3)])
    db = tmp_path / "c.duckdb"
    args = ("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--max-tokens", "32")
    # answered by a server that serves the bundled teacher's name: the same request ids
    first = synthgen(*args, "--model", MODEL_NAME, "--base-url", teacher.base_url, "--skip-preflight")
    assert first.returncode == 0, first.stderr
    sent = sum(teacher.received.values())
    again = synthgen(*args, env=env)  # no --base-url: the bundled teacher, were anything left
    assert again.returncode == 0, again.stderr
    assert not started.exists() and sum(teacher.received.values()) == sent == 3
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute("SELECT status, answered, base_urls FROM runs ORDER BY run_id").fetchall()
    con.close()
    assert runs[-1] == ("done", 0, [])
    # something left to send: then the teacher is started (here the stand-in, which fails)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q{i}"} for i in range(4)])
    more = synthgen(*args, env=env)
    assert more.returncode != 0 and started.exists()


def test_a_signal_while_the_bundled_teachers_input_is_checked_ends_cleanly(tmp_path):
    env, started = spy_server(tmp_path)
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(600_000):
            fh.write(f'{{"prompt": "p{i}"}}\n')
    db = tmp_path / "c.duckdb"
    proc = start_synthgen("generate", "--input", path, "--db", db, env=env)
    fds = Path(f"/proc/{proc.pid}/fd")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # until it has the input open
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and ("aborted" in err or "interrupted" in err), err
    assert "Traceback" not in err
    assert not db.exists() and not started.exists()
