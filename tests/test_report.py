"""`synthgen report`: one HTML file that holds everything it shows, opened in a real
headless Chromium with the network cut off: it renders, every plot is there, nothing is
fetched, nothing is logged as an error, and a screenshot is kept."""

from __future__ import annotations

import re
import time

import pytest
import see_store
from browser import chromium, open_page
from conftest import start_synthgen, synthgen
from teacher_server import TeacherServer, make_prompts, write_jsonl

# Per run with answers: throughput, latency, errors, finish reasons, lengths, cost.
PLOTS_PER_RUN = 6


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return see_store.build(tmp_path_factory.mktemp("report"))


def _open_offline(context, path):
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                  else route.abort())
    return open_page(context, path.as_uri())


def test_the_report_renders_offline_with_every_plot(store, tmp_path):
    out = tmp_path / "report.html"
    result = synthgen("report", "--db", store, "--out", out)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert not re.search(r"<(script|link|iframe|img)\b", html), "the report must need nothing else"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    with chromium() as context:
        seen = _open_offline(context, out)
        page = seen.page
        svgs = page.locator("svg").count()
        # one run: its plots, the funnel, the training curves and the eval curves
        assert svgs == PLOTS_PER_RUN + 3, svgs
        for svg in page.locator("svg").all():
            box = svg.bounding_box()
            assert box and box["width"] > 200 and box["height"] > 50, box
        text = page.inner_text("body")
        for needle in ("Run 1: done", "throughput", "latency percentiles", "errors by kind over time",
                       "finish reasons", "prompt lengths", "answer lengths", "cost so far",
                       "planned → answered → kept", "no keep filter", "student training curves",
                       "trained", "untrained", "teacher", "e1", "e2"):
            assert needle in text or page.locator(f"text={needle}").count(), needle
        assert page.title().startswith("synthgen report")
        assert seen.console_errors == []
        assert {u for u in seen.requests if not u.startswith("file:")} == set()
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        print(f"screenshot: {shot}")


def test_the_report_of_an_empty_store_says_so(tmp_path):
    with TeacherServer() as teacher:
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
        synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb", "--model", "m",
                 "--base-url", teacher.base_url, "--limit", "1")
    empty = tmp_path / "e.duckdb"
    import synthgen as sg

    sg.open_store(empty, read_only=False).close()
    result = synthgen("report", "--db", empty, "--out", tmp_path / "e.html")
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "e.html").read_text()
    assert "No runs yet" in html and "No plans yet" in html and "No evaluations" in html
    missing = synthgen("report", "--db", tmp_path / "nope.duckdb", "--out", tmp_path / "x.html")
    assert missing.returncode == 2 and "no such database" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_report_works_during_a_run(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(400)])
    db = tmp_path / "c.duckdb"
    # 8 answers/s: a 50 s run, longer than the report takes on a busy machine (matplotlib's
    # import alone), stopped as soon as the report is written
    with TeacherServer(latency=0.25) as teacher:
        proc = start_synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                              "--base-url", teacher.base_url, "--concurrency", "2")
        try:
            deadline = time.monotonic() + 60
            while sum(teacher.received.values()) < 30 and time.monotonic() < deadline:
                time.sleep(0.05)
            result = synthgen("report", "--db", db, "--out", tmp_path / "live.html")
            assert proc.poll() is None, "the run ended before the report; the test proves nothing"
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "live.html").read_text()
    assert "run 1 was running" in html
    assert html.count("<svg") >= 4
