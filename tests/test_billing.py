"""The bill (issue 29): every attempt the teacher answered is paid for, kept or not, and the
cost every figure shows is computed from all of them; an answer max_tokens cut is not
bought again where another attempt would be cut the same way."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import clean_env, synthgen
from teacher_server import TeacherServer, write_jsonl

import synthgen as sg

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}, "words": {"type": "integer"}},
          "required": ["answer", "words"], "additionalProperties": False}
PRICE_IN, PRICE_OUT = 3.0, 15.0  # $ per million tokens


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def teacher_cost(teacher: TeacherServer) -> float:
    """The bill from the teacher's own log of what it answered."""
    return sum(p * PRICE_IN + c * PRICE_OUT for p, c in teacher.billed) / 1e6


def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def test_retried_and_failed_attempts_are_billed_and_every_figure_agrees(teacher, tmp_path):
    """Misfits (retried, then kept or failed) and plain answers: the summary, status, the
    report's figure and the per-attempt rows all give the teacher's own bill, to the cent."""
    prompts = ([f"plain {i}" for i in range(6)] + ["twice #schema=notjson,wrongtype",
               "never #schemaalways=wrongtype", "once #schema=notjson"])
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    summary = sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url],
                          response_schema=json.loads(schema_file(tmp_path).read_text()), max_attempts=4,
                          price_in=PRICE_IN, price_out=PRICE_OUT, temperature=0.7,
                          retry_sleep=_noop)
    assert (summary.answered, summary.failed) == (8, 1)
    assert len(teacher.billed) == 6 + 3 + 4 + 2  # every attempt answered, kept or not
    expected = teacher_cost(teacher)
    assert summary.cost == pytest.approx(expected, abs=0.005)
    [(p, c, n)] = rows(db, "SELECT sum(prompt_tokens), sum(completion_tokens), count(*) FROM billed_attempts")
    assert n == len(teacher.billed)
    assert (p, c) == (sum(b[0] for b in teacher.billed), sum(b[1] for b in teacher.billed))
    assert rows(db, "SELECT count(*) FROM wasted_attempts") == [(7,)]  # 2 + 4 + 1 not kept
    [run] = sg.status(db)
    assert run["cost"] == pytest.approx(expected, abs=0.005)
    from synthgen.report.data import load

    con = duckdb.connect(str(db), read_only=True)
    try:
        [data] = load(con, str(db)).runs
    finally:
        con.close()
    assert data.cost == pytest.approx(expected, abs=0.005)
    # The misfits' text is kept with their usage: what was paid for, and why it was not kept.
    texts = rows(db, "SELECT error_type, text FROM wasted_attempts ORDER BY text")
    assert {t[0] for t in texts} == {"schema"} and any("Sure!" in t[1] for t in texts)


async def _noop(_seconds: float) -> None:
    return None


def test_a_cut_answer_at_temperature_0_is_attempted_once(teacher, tmp_path):
    """At temperature 0 an answer max_tokens cut before it fits the schema would be cut the
    same way again: one attempt, then a 'length' failure with the text, usage and a hint."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "cut #finish=length #schemaalways=notjson"},
                                        {"prompt": "fine"}])
    db = tmp_path / "c.duckdb"
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url, "--response-schema", schema_file(tmp_path),
                      "--temperature", "0", "--max-tokens", "16", "--max-attempts", "5")
    assert result.returncode == 0, result.stderr
    assert teacher.received["cut #finish=length #schemaalways=notjson"] == 1
    [(kind, message, attempts)] = rows(db, "SELECT error_type, message, attempts FROM failures")
    assert (kind, attempts) == ("length", 1)
    assert "max_tokens (16)" in message and "raise max_tokens" in message
    [(text, pt, ct)] = rows(db, "SELECT text, prompt_tokens, completion_tokens FROM wasted_attempts")
    assert text.startswith("Sure!") and pt > 0 and ct > 0


@pytest.mark.parametrize(("retries", "attempts"), [(None, 2), ("0", 1), ("3", 4)])
def test_a_cut_answer_at_temperature_above_0_is_retried_length_retries_times(teacher, tmp_path, retries,
                                                                           attempts):
    prompt = "cut #finish=length #schemaalways=notjson"
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": prompt}, {"prompt": "fine"}])
    db = tmp_path / "c.duckdb"
    extra = ["--length-retries", retries] if retries is not None else []
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url, "--response-schema", schema_file(tmp_path),
                      "--temperature", "0.8", "--max-attempts", "10", *extra)
    assert result.returncode == 0, result.stderr
    assert teacher.received[prompt] == attempts
    assert rows(db, "SELECT error_type, attempts FROM failures") == [("length", attempts)]
    assert rows(db, "SELECT count(*) FROM wasted_attempts") == [(attempts,)]


def test_a_killed_run_keeps_the_bill_of_what_it_stored_and_the_resume_adds_the_rest(tmp_path):
    """kill -9 mid-run, then resume: the two runs' costs add up to the teacher's bill of
    every answer the store holds (an attempt in flight at the kill is paid and lost: it is
    not in the store, and is not counted)."""
    with TeacherServer(latency=0.02) as teacher:
        prompts = [f"p{i}" + (" #schema=notjson" if i % 3 == 0 else "") for i in range(300)]
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
        db = tmp_path / "c.duckdb"
        args = [sys.executable, "-m", "synthgen", "generate", "--input", str(tmp_path / "in.jsonl"),
                "--db", str(db), "--model", "m", "--base-url", teacher.base_url, "--response-schema",
                str(schema_file(tmp_path)), "--concurrency", "4", "--price-in", str(PRICE_IN),
                "--price-out", str(PRICE_OUT), "--temperature", "0.7"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
        deadline = time.monotonic() + 60
        while len(teacher.billed) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.kill()
        proc.wait()
        result = subprocess.run(args, capture_output=True, text=True, env=clean_env(), timeout=120)
        assert result.returncode == 0, result.stderr
        runs = sg.status(db)
        assert [r["status"] for r in runs] == ["killed", "done"]
        stored = rows(db, "SELECT sum(prompt_tokens), sum(completion_tokens) FROM billed_attempts")[0]
        total = sum(r["cost"] for r in runs)
        assert total == pytest.approx((stored[0] * PRICE_IN + stored[1] * PRICE_OUT) / 1e6, abs=0.005)
        assert total <= teacher_cost(teacher) + 1e-9
        assert rows(db, "SELECT count(*) FROM responses") == [(300,)]


def budget_run(teacher: TeacherServer, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                    "--model", "m", "--base-url", teacher.base_url, "--max-tokens", "16",
                    "--concurrency", "8", "--price-in", "200", "--price-out", "700", *extra)


def test_a_budget_is_never_crossed_and_a_larger_one_finishes_the_job(tmp_path):
    """200 prompts of 10 words (10 tokens in, 10 out: $1.80 in all at these prices):
    --budget 0.50 stops with the spend under it by the teacher's own log and the rest
    pending; --budget 2 finishes; the two runs cost what one uninterrupted run does."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": " ".join([f"w{i}"] * 10)} for i in range(200)])
    with TeacherServer(latency=0.01) as teacher:
        first = budget_run(teacher, tmp_path, "--budget", "0.50")
        assert first.returncode == 3, first.stderr
        assert "the budget of $0.50 is reached" in first.stderr and "larger --budget" in first.stderr
        spent = sum(p * 200 + c * 700 for p, c in teacher.billed) / 1e6
        assert 0.40 <= spent <= 0.50
        [run] = sg.status(tmp_path / "c.duckdb")
        assert run["pending"] > 0 and run["cost"] == pytest.approx(spent, abs=1e-9)
        second = budget_run(teacher, tmp_path, "--budget", "2")
        assert second.returncode == 0, second.stderr
        total = sum(p * 200 + c * 700 for p, c in teacher.billed) / 1e6
        assert total == pytest.approx(1.80, abs=1e-9) and len(teacher.billed) == 200
        assert sum(r["cost"] for r in sg.status(tmp_path / "c.duckdb")) == pytest.approx(1.80, abs=1e-9)


def test_spend_per_window_holds_any_window_to_its_dollars(tmp_path):
    """--spend-per-window 0.05/0.05: at most $0.05 sent in any 3 s. Each request holds its
    worst case (~$0.023) until it lands, then its real cost ($0.009): five answers fit a
    window. Checked on the teacher's clock, less a margin for the time a loaded machine
    takes between the client's send and the teacher's answer."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": " ".join([f"w{i}"] * 10)} for i in range(12)])
    with TeacherServer() as teacher:
        result = budget_run(teacher, tmp_path, "--spend-per-window", "0.05/0.05")
        assert result.returncode == 0, result.stderr
        times = sorted(teacher.answered_at)
    each = (10 * 200 + 10 * 700) / 1e6  # $0.009 an answer
    assert len(times) == 12
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u - t < 3.0 - 0.5)
        assert in_window * each <= 0.05 + 1e-9, (i, in_window)
    assert times[-1] - times[0] >= 3.0  # 12 answers did not fit one window: the gate held them


@pytest.mark.parametrize(("flags", "said"), [
    (["--budget", "1"], "--budget needs the teacher's prices: --price-in and --price-out"),
    (["--budget", "1", "--price-in", "1", "--max-tokens", "none"], "--budget needs --max-tokens"),
    (["--spend-per-window", "lots", "--price-in", "1"], "--spend-per-window is USD/MIN"),
])
def test_budget_flags_that_cannot_work_are_refused_before_sending(teacher, tmp_path, flags, said):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "m", "--base-url", teacher.base_url, *flags)
    assert result.returncode != 0 and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not teacher.billed
