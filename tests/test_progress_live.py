"""The live progress a person reads: windowed rates and an ETA that see a stall, every number
on an 80- and a 120-column terminal (a real pseudo-terminal, read through a terminal
emulator), the same display for a run in another process (`status --watch`), and plain
lines when nobody is at a terminal."""

from __future__ import annotations

import re
import sys
import time

import pytest
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import TeacherServer, make_prompts, write_jsonl
from terminal import Terminal

from synthgen.cli.progress import detail_lines
from synthgen.engine.progress import describe, snapshot
from synthgen.types import Stats

# Every number the display must hold, as a person reads it.
NUMBERS = {
    "done/total": r"\d+/\d+",
    "percent": r"\d+%",
    "req/s": r"[\d.]+ req/s",
    "tok/s": r"[\d,]+ tok/s",
    "ETA": r"ETA (\d+s|\d+m\d+s|stalled|-)",
    "elapsed": r"elapsed \d+s",
    "in flight/limit": r"in flight \d+/2\b",
    "rpm pacing": r"rpm [\d,.k]+/600\b",
    "failures by kind": r"failed \d+ \(http_400 \d+\)",
    "errors by kind": r"errors: .*http_500 \d+",
    "tokens in/out": r"tokens [\d,.k]+ in / [\d,.k]+ out",
    "cost": r"\$\d+\.\d{4}",
}


def test_a_stall_shows_as_a_stall_and_rates_follow_the_recent_window():
    stats = Stats(total=1000, limit=8)
    t0 = stats.started
    for second in range(1, 61):  # 60 s at 10 answers/s, then 2 s at 100/s
        stats.answered = second * 10 if second <= 58 else 580 + (second - 58) * 100
        stats.sent, stats.completion_tokens = stats.answered, stats.answered * 50
        stats.sample(t0 + second)
    snap = snapshot(stats, now=t0 + 60)
    assert snap.req_s == pytest.approx((780 - 300) / 30)  # the last 30 s: 16/s, not 780/60 = 13/s
    assert snap.eta_s == pytest.approx(220 / snap.req_s)
    for second in range(61, 116):  # then nothing settles for 55 s
        stats.sample(t0 + second)
    stalled = snapshot(stats, now=t0 + 115)
    assert stalled.eta_s is None and stalled.stalled_s == pytest.approx(55)
    assert stalled.req_s == 0
    assert "ETA stalled 55s" in describe(stalled) and "0.0 req/s" in describe(stalled)


def test_detail_lines_fit_the_width_and_keep_every_piece_whole():
    stats = Stats(total=10**6, limit=256, price_in=0.15, price_out=0.6,
                  pacing={"rpm_limit": 2900, "tpm_limit": 1.9e6})
    stats.answered, stats.failed, stats.sent = 123456, 789, 124500
    stats.prompt_tokens, stats.completion_tokens = 12_345_678, 98_765_432
    stats.errors.update({"timeout": 12, "http_429": 400, "http_503": 7, "connection": 3, "http_500": 1})
    stats.failures.update({"http_400": 789})
    stats.sample(stats.started + 30)
    snap = snapshot(stats, now=stats.started + 30)
    for width in (80, 120):
        lines = detail_lines(snap, width - 1)
        assert all(len(line) <= width - 1 for line in lines), lines
        text = "\n".join(lines)
        for piece in ("rpm", "tpm", "failed 789 (http_400 789)", "errors: http_429 400", "+1 more",
                      "tokens 12.3M in / 98.8M out", "$61.1111", "in flight 0/256"):
            assert piece in text, (piece, lines)
    assert len(detail_lines(snap, 79)) > len(detail_lines(snap, 119))


def _prompts(tmp_path, n: int):
    # the faults come first, so errors and failures are on the screen while the run goes on
    rows = [{"prompt": "a #fault=500"}, {"prompt": "b #always=400"}]
    rows += [{"prompt": p} for p in make_prompts(n)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    return tmp_path / "in.jsonl"


def _run_args(tmp_path, teacher, n: int = 50) -> list[str]:
    return ["generate", "--input", str(_prompts(tmp_path, n)), "--db", str(tmp_path / "c.duckdb"),
            "--model", "m", "--base-url", teacher.base_url, "--concurrency", "2", "--rpm", "600",
            "--price-in", "1", "--price-out", "2"]


def _best_frame(frames: list[list[str]]) -> list[str]:
    """The last screen that shows the display with the errors on it (mid-run)."""
    showing = [f for f in frames
               if any("req/s" in line for line in f) and any("errors:" in line for line in f)]
    assert showing, "the live display never showed errors:\n" + "\n".join(frames[-1] if frames else [])
    return showing[-1]


def _holds_every_number(frame: list[str], columns: int) -> None:
    shown = [line.rstrip() for line in frame if line.strip()]
    print(f"--- {columns} columns ---\n" + "\n".join(shown))
    for name, pattern in NUMBERS.items():
        assert any(re.search(pattern, line) for line in shown), (name, shown)
    assert all(len(line) <= columns for line in frame)


@pytest.mark.parametrize("columns", [80, 120])
def test_generate_on_a_terminal_shows_every_number_at_80_and_120_columns(tmp_path, columns):
    with TeacherServer(latency=0.05) as teacher:
        term = Terminal([sys.executable, "-m", "synthgen", *_run_args(tmp_path, teacher)], columns,
                        env=clean_env())
        term.read(timeout=120)
        assert term.close() == 0  # one request failed for good (#always=400): done, not pending
    frame = _best_frame(term.frames)
    _holds_every_number(frame, columns)
    # ... and at the end the display made way for the summary
    assert any("run 1: done" in line or "run 1: incomplete" in line for line in term.frames[-1])


@pytest.mark.parametrize("columns", [80, 120])
def test_status_watch_draws_a_run_in_another_process(tmp_path, columns):
    with TeacherServer(latency=0.05) as teacher:
        run = start_synthgen(*_run_args(tmp_path, teacher, n=60))
        deadline = time.monotonic() + 60
        while sum(teacher.received.values()) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        term = Terminal([sys.executable, "-m", "synthgen", "status", "--db", str(tmp_path / "c.duckdb"),
                         "--watch"], columns, env=clean_env())
        term.read(timeout=120)
        assert term.close() == 0, "\n".join(term.frames[-1])
        run.communicate(timeout=60)
    screen = "\n".join(term.frames[-1])
    assert "is writing" in screen and "run 1 has ended" in screen, screen
    assert "run 1  done" in screen or "run 1  incomplete" in screen, screen
    _holds_every_number(_best_frame(term.frames), columns)


def test_without_a_terminal_progress_is_plain_lines_with_the_same_numbers(tmp_path):
    with TeacherServer(latency=0.05) as teacher:
        result = synthgen(*_run_args(tmp_path, teacher, n=30), "--progress-interval", "0.5")
    assert "\x1b[" not in result.stderr, "escape codes in a log"
    lines = [line for line in result.stderr.splitlines() if "req/s" in line]
    assert lines, result.stderr
    last = [line for line in lines if "errors:" in line][-1]
    for name, pattern in NUMBERS.items():
        assert re.search(pattern, last), (name, last)


def test_status_watch_without_a_run_says_so_and_prints_the_status(tmp_path):
    with TeacherServer() as teacher:
        assert synthgen(*_run_args(tmp_path, teacher, n=3)).returncode == 0
    result = synthgen("status", "--db", tmp_path / "c.duckdb", "--watch")
    assert result.returncode == 0, result.stderr
    assert "no run is writing" in result.stderr and "run 1" in result.stdout
    both = synthgen("status", "--db", tmp_path / "c.duckdb", "--watch", "--json")
    assert both.returncode == 2 and "--watch" in both.stderr and "Traceback" not in both.stderr


def test_a_recipe_on_a_terminal_says_each_stage_on_a_line_of_its_own(tmp_path):
    """Each stage's start and funnel is a whole line above the bar, the last stage's too
    (it was written into the bar's lines and cut at the terminal's width)."""
    from test_recipes import recipe

    path = recipe(tmp_path)
    with TeacherServer(latency=0.2) as teacher:
        argv = [sys.executable, "-m", "synthgen", "run", str(path), "--db", str(tmp_path / "r.duckdb"),
                "--model", "m", "--base-url", teacher.base_url, "--concurrency", "2"]
        term = Terminal(argv, 80, rows=30, env=clean_env())
        term.read(120)
        assert term.close() == 0
    shown = [line.rstrip() for line in term.screen.display if line.strip()]
    for line in ("stage 1/2 ideas: generating",
                 "  ideas: 6 planned, 6 answered, 0 failed, 5 kept (removed: keep 1)",
                 "stage 2/2 answers: generating",
                 "  answers: 5 planned, 5 answered, 0 failed, 5 kept",
                 "recipe two: done in"):
        assert any(s.startswith(line) for s in shown), (line, shown)
    assert not any("req/s" in s for s in shown), "the bar is gone at the end"
