"""The report and the viewer know recipe stages: every stage by name with `status`'s own
funnel (planned -> answered -> kept, and what each keep rule removed), a judge's scores
joined to the answers it rated and its verdicts not counted as answers; both looked at in
a real headless Chromium. And the report's rates are the run's, not its buckets' noise."""

from __future__ import annotations

import datetime as dt
import re

import duckdb
import pytest
from browser import chromium, open_page
from conftest import synthgen
from teacher_server import TeacherServer, write_jsonl
from test_recipes import recipe
from test_view import Viewer

import synthgen as sg


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three answers to each of three questions, judged (min_score 2 removes the seed-0
    ones), and a two-stage recipe beside them."""
    tmp = tmp_path_factory.mktemp("stages")
    write_jsonl(tmp / "in.jsonl", [{"prompt": f"question {i}"} for i in range(3)])
    db = tmp / "s.duckdb"
    with TeacherServer() as teacher:
        sg.generate(input=tmp / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url], n=3, seed=0,
                    temperature=1.0)
        for args in (["judge", "--set", "min_score=2"], [recipe(tmp)]):
            result = synthgen("run", *args, "--db", db, "--model", "m", "--base-url", teacher.base_url,
                              cwd=tmp)
            assert result.returncode == 0, result.stderr
    return db


def status_funnels(db) -> dict[str, tuple[str, str]]:
    """stage -> (recipe, its funnel) as `synthgen status` prints them."""
    out, recipe_name, found = synthgen("status", "--db", db).stdout, None, {}
    for line in out.splitlines():
        if line.startswith("recipe "):
            recipe_name = line.split()[1]
        elif m := re.match(r"  stage \d+ (\w+): (.*)$", line):
            found[m.group(1)] = (recipe_name, m.group(2))
    assert set(found) == {"judgments", "ideas", "answers"}, out
    return found


def test_the_report_shows_every_stage_with_the_status_funnel(store, tmp_path):
    out = tmp_path / "report.html"
    assert synthgen("report", "--db", store, "--out", out).returncode == 0
    funnels = status_funnels(store)
    with chromium() as context:
        seen = open_page(context, out.as_uri())
        page = seen.page
        table = page.locator("#stages ~ table").first
        cells = [[c.strip() for c in r.split("\t")] for r in table.inner_text().splitlines()[1:]]
        by_stage = {c[1].removesuffix(" (judge)"): c for c in cells}
        for stage, (recipe_name, funnel) in funnels.items():
            row = by_stage[stage]
            numbers = [int(x) for x in re.findall(r"(\d+) (?:planned|answered|failed|kept)", funnel)]
            assert row[0] == recipe_name and [int(x) for x in row[2:6]] == numbers
            removed = re.search(r"\(removed: (.*)\)", funnel)
            assert row[6] == (removed.group(1) if removed else "-")
        assert by_stage["judgments"][1] == "judgments (judge)"
        # the judged answers' own plan (a generate's input) is a stage of its own, by its file's name
        assert by_stage["in.jsonl"] == ["-", "in.jsonl", "9", "9", "0", "= answered (no keep filter)", "-"]
        body = page.inner_text("body")
        assert "Judge stage judgments rated 9 rows (mean score 2.00)" in body
        assert "rows rated, by score" in body
        assert "judge · judgments (judge: its answers are verdicts)" in body
        assert seen.console_errors == []
        page.screenshot(path=str(tmp_path / "report-stages.png"), full_page=True)


def test_the_viewer_shows_stages_by_name_and_scores_on_the_answers(store, tmp_path):
    funnels = status_funnels(store)
    con = duckdb.connect(str(store), read_only=True)
    [(every,)] = con.execute("SELECT count(*) FROM corpus").fetchall()
    [(best,)] = con.execute("SELECT parent_request_id FROM judgments WHERE score = 3 "
                            "ORDER BY 1 LIMIT 1").fetchall()
    con.close()
    viewer = Viewer(store)
    try:
        facets = viewer.api("/api/facets")["data"]
        assert facets["verdicts"] == 9 and facets["total"] == every - 9
        listed = {s["value"]: s for s in facets["stages"]}
        for stage, (recipe_name, funnel) in funnels.items():
            assert listed[stage]["funnel"] == funnel
            assert listed[stage]["label"].startswith(f"{recipe_name} · ")
        assert listed["input:" + str(store.parent / "in.jsonl")]["label"] == "in.jsonl"
        assert all(len(s["label"]) <= 60 for s in facets["stages"]), "labels, not whole queries"
        assert facets["score"] == {"rows": 9, "min": 1.0, "max": 3.0}  # the answers', judged
        from playwright.sync_api import expect

        with chromium() as context:
            seen = open_page(context, viewer.url)
            page = seen.page
            page.set_viewport_size({"width": 1280, "height": 800})
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert page.inner_text("#total").startswith(f"{every - 9} answers · 9 judge verdicts")
            assert page.locator("#rows tr").count() == every - 9
            box = page.locator("#stage").bounding_box()
            assert box["x"] + box["width"] <= 1280, "the stage list fits the window"
            shown = page.locator("#stages").inner_text()
            for stage, (recipe_name, funnel) in funnels.items():
                assert f"{recipe_name} · {stage}" in shown and funnel in shown
            # a stage's rows with the rule that removed each
            page.select_option("#stage", "ideas")
            page.click("#apply")
            expect(page.locator("#count")).to_have_text(re.compile(r"^6 rows"))
            keep = page.locator("#rows tr td:nth-child(5)").all_inner_texts()
            assert sorted(keep) == ["keep"] + ["kept"] * 5
            # scores are the answers': the best-rated three
            page.select_option("#stage", "")
            page.fill("#score-min", "3")
            page.click("#apply")
            expect(page.locator("#count")).to_have_text(re.compile(r"^3 rows"))
            page.locator(f"#rows tr[data-id='{best}']").click()
            expect(page.locator("#detail")).to_contain_text("Judged (score 3")
            assert "rationale" in page.inner_text("#detail")
            assert seen.console_errors == [], seen.console_errors
            page.screenshot(path=str(tmp_path / "view-stages.png"), full_page=True)
        # the WHERE box sees the judged score too
        assert viewer.api("/api/rows", where="score >= 3")["data"]["total"] == 3
    finally:
        viewer.close()


def test_a_slow_run_is_drawn_at_its_own_rate(tmp_path):
    """27 answers 3.7 s apart: 0.27 answers/s, not 1-second buckets of 0 or 1."""
    from synthgen.report import data

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(27)])
    db = tmp_path / "c.duckdb"
    with TeacherServer() as teacher:
        sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url])
    con = duckdb.connect(str(db))
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    con.execute("UPDATE runs SET started_at = ?", [start])
    ids = [r[0] for r in con.execute("SELECT request_id FROM responses ORDER BY request_id").fetchall()]
    for i, rid in enumerate(ids):
        con.execute("UPDATE responses SET created_at = ? WHERE request_id = ?",
                    [start + dt.timedelta(seconds=3.7 * (i + 1)), rid])
    run = data.load(con, str(db)).runs[0]
    con.close()
    rates = [p["answers_s"] for p in run.series]
    assert sum(p["answers"] for p in run.series) == 27
    assert [p["t"] for p in run.series] == [k * run.bucket_s for k in range(len(run.series))], "no gaps"
    assert max(rates) < 0.5 and abs(sum(rates) / len(rates) - 27 / 99.9) < 0.06, rates
