"""`generate --batch` as a real process: killed while polling, killed between creating a
batch and recording it, Ctrl-C'd, and cancelled; the same command then re-attaches and
pays for no request twice (the fake Batch API counts every POST /batches)."""

from __future__ import annotations

import signal
import time

import duckdb
from batch_api_server import BatchAPIServer
from conftest import start_synthgen, synthgen
from teacher_server import answer, make_prompts, write_jsonl


def args_for(api, tmp_path, *extra):
    return ("generate", "--batch", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
            "--model", "m", "--base-url", api.base_url, "--batch-poll-interval", "0.05",
            "--batch-poll-max", "0.2", *extra)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def polling(api, batches: int) -> None:
    """Wait until `batches` batches exist, all in progress, and have been polled a few times
    more: the run is in its polling loop."""
    wait_for(lambda: api.batch_posts >= batches and all(
        b["status"] == "in_progress" for b in api.batches.values()), f"{batches} batches in progress")
    seen = api.polls
    wait_for(lambda: api.polls >= seen + 2 * batches, "the run to poll")


def stored(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, messages->>'$[0].content', response FROM corpus").fetchall()
    finally:
        con.close()


def assert_each_answer_is_its_own(rows) -> None:
    assert len({r[0] for r in rows}) == len(rows), "a request is stored twice"
    for _, prompt, response in rows:
        assert response == answer(prompt), (prompt, response)


def test_killed_while_polling_then_rerun_submits_no_batch_twice(tmp_path):
    prompts = make_prompts(60)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    with BatchAPIServer() as api:
        api.hold = True
        args = args_for(api, tmp_path, "--batch-max-requests", "25")
        proc = start_synthgen(*args)
        try:
            polling(api, 3)
            # While it polls, `batch status` reads the store through the running process.
            status = synthgen("batch", "status", "--db", db)
            assert status.returncode == 0, status.stderr
            assert "3 batches, 3 in flight (60 requests)" in status.stdout, status.stdout
        finally:
            proc.kill()
            proc.wait(10)
        assert api.batch_posts == 3 and not stored(db)
        api.hold = False
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
        assert "re-attached to 3 batches in flight (60 requests)" in result.stderr
        assert api.batch_posts == 3, "a batch was submitted twice"
        assert sorted(api.submitted) == sorted(prompts) and set(api.submitted.values()) == {1}
    rows = stored(db)
    assert sorted(r[1] for r in rows) == sorted(prompts)
    assert_each_answer_is_its_own(rows)
    con = duckdb.connect(str(db), read_only=True)
    assert [s for (s,) in con.execute("SELECT status FROM runs ORDER BY run_id").fetchall()] == [
        "killed", "done"]


def test_killed_between_creating_a_batch_and_recording_it_finds_it_again(tmp_path):
    prompts = make_prompts(8)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    with BatchAPIServer() as api:
        api.hang_create = True  # the batch is made; its answer never comes back
        args = args_for(api, tmp_path)
        proc = start_synthgen(*args)
        try:
            wait_for(lambda: api.batch_posts == 1, "POST /batches")
            time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait(10)
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT state, batch_id FROM batches").fetchall() == [("uploaded", None)]
        con.close()
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
        assert api.batch_posts == 1, "the batch the killed run created was created again"
        assert "found again" in result.stderr
        assert set(api.submitted.values()) == {1}
    assert_each_answer_is_its_own(stored(db))
    assert len(stored(db)) == 8


def test_ctrl_c_while_polling_says_the_batches_go_on_and_how_to_resume(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(10)])
    with BatchAPIServer() as api:
        api.hold = True
        args = args_for(api, tmp_path)
        proc = start_synthgen(*args)
        polling(api, 1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "1 still running at the API" in err and "Resume with" in err
        assert "Traceback" not in err
        api.hold = False
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
        assert api.batch_posts == 1
    assert len(stored(tmp_path / "c.duckdb")) == 10


def test_cancel_while_a_run_polls_stores_what_ran_and_submits_nothing_new(tmp_path):
    prompts = make_prompts(20)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    with BatchAPIServer() as api:
        api.hold, api.cancel_keeps = True, 0.5
        args = args_for(api, tmp_path)
        proc = start_synthgen(*args)
        polling(api, 1)
        cancel = synthgen("batch", "cancel", "--db", db)
        assert cancel.returncode == 0, cancel.stderr
        assert "cancelling" in cancel.stdout and "next poll" in cancel.stderr
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert "A batch was cancelled" in err and "10 requests stay pending" in err
        assert api.batch_posts == 1 and len(stored(db)) == 10
        # The same command again sends the rest, once.
        api.hold = False
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
        assert api.batch_posts == 2
        assert [api.submitted[p] for p in prompts] == [1] * 10 + [2] * 10
    rows = stored(db)
    assert sorted(r[1] for r in rows) == sorted(prompts)
    assert_each_answer_is_its_own(rows)


def test_cancel_with_no_run_records_it_and_the_next_run_collects_it(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(6)])
    db = tmp_path / "c.duckdb"
    with BatchAPIServer() as api:
        api.hold = True
        args = args_for(api, tmp_path)
        proc = start_synthgen(*args)
        try:
            polling(api, 1)
        finally:
            proc.kill()
            proc.wait(10)
        cancel = synthgen("batch", "cancel", "--db", db)
        assert cancel.returncode == 0, cancel.stderr
        assert "Recorded" in cancel.stderr
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT status FROM batches").fetchall() == [("cancelling",)]
        con.close()
        again = synthgen(*args)
        assert again.returncode == 1 and "A batch was cancelled" in again.stderr, again.stderr
        assert len(stored(db)) == 3 and api.batch_posts == 1
        nothing = synthgen("batch", "cancel", "--db", db)
        assert nothing.returncode == 0 and "no batch in flight" in nothing.stdout
