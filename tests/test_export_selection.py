"""What `export` writes is what the user asked for: after a recipe, its last stage's kept rows
(count = what `status` says), a judge's rated answers with their score, no answer cut by
max_tokens unless asked, and an export of nothing that says why and exits 1."""

from __future__ import annotations

import json
import os
import re
import stat

import duckdb
import pytest
from conftest import synthgen
from teacher_server import answer, write_jsonl
from test_recipes import recipe

import synthgen as sg


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def status_kept(db, stage):
    out = synthgen("status", "--db", db).stdout
    m = re.search(rf"stage \d+ {stage}: .* (\d+) kept", out)
    assert m, out
    return int(m.group(1))


def test_after_a_recipe_export_writes_the_last_stage_kept_rows(teacher, tmp_path):
    path, db = recipe(tmp_path), tmp_path / "r.duckdb"
    run = synthgen("run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out.jsonl"
    result = synthgen("export", "--db", db, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "the kept rows of stage answers (recipe two, the last stage of the recipe run last)" in \
        result.stderr
    written = rows(out)
    assert len(written) == status_kept(db, "answers") == 5
    con = duckdb.connect(str(db), read_only=True)
    kept = {r[0] for r in con.execute("SELECT request_id FROM answers").fetchall()}
    con.close()
    assert {r["request_id"] for r in written} == kept
    assert all(r["parent_request_id"] for r in written)  # lineage travels with the row
    # another stage, and its removed rows with the rule that removed each
    result = synthgen("export", "--db", db, "--out", out, "--stage", "ideas")
    assert result.returncode == 0 and len(rows(out)) == status_kept(db, "ideas") == 5, result.stderr
    assert all("idea" in r for r in rows(out))  # the stage's own columns are fields
    assert "1 removed by the stage's keep (--include-removed)" in result.stderr
    result = synthgen("export", "--db", db, "--out", out, "--stage", "ideas", "--include-removed",
                      "--where", "NOT kept")
    assert result.returncode == 0, result.stderr
    [removed] = rows(out)
    assert (removed["kept"], removed["removed_by"]) == (False, "keep")
    assert removed["removed_detail"] == "sample_index = 0 OR prompt_tokens > 6"
    # a --where on a column the rows lack names the columns they have
    bad = synthgen("export", "--db", db, "--out", out, "--where", "score >= 7")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--where 'score >= 7'" in bad.stderr and "parent_request_id, kept, removed_by" in bad.stderr
    unknown = synthgen("export", "--db", db, "--out", out, "--stage", "nope")
    assert unknown.returncode == 2 and "(stages: ideas, answers)" in unknown.stderr
    # a plain generate after the recipe: its plan is what export means now
    write_jsonl(tmp_path / "more.jsonl", [{"prompt": "one more"}])
    assert sg.generate(input=tmp_path / "more.jsonl", db=db, model="m", base_urls=[teacher.base_url]).answered
    result = synthgen("export", "--db", db, "--out", out)
    assert result.returncode == 0 and "the latest plan" in result.stderr
    assert [r["messages"][0]["content"] for r in rows(out)] == ["one more"]


def test_after_a_judge_export_writes_the_answers_judged_with_their_score(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"question {i}"} for i in range(3)])
    db = tmp_path / "c.duckdb"
    sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url], n=3, seed=0,
                temperature=1.0)
    judged = synthgen("run", "judge", "--db", db, "--model", "m", "--base-url", teacher.base_url,
                      "--set", "min_score=2", cwd=tmp_path)
    assert judged.returncode == 0, judged.stderr
    out = tmp_path / "judged.jsonl"
    result = synthgen("export", "--db", db, "--out", out)
    assert result.returncode == 0, result.stderr
    written = rows(out)
    # the kept judgments' answers (seeds 1 and 2 score 2 and 3), not the judge's prompts
    assert len(written) == status_kept(db, "judgments") == 6
    for r in written:
        prompt = r["messages"][0]["content"]
        assert prompt.startswith("question ")
        assert r["messages"][1]["content"] == answer(prompt, r["sample_index"])
        assert r["score"] == 1 + r["sample_index"] and r["rationale"] and r["judged_by"]
    good = synthgen("export", "--db", db, "--out", out, "--where", "score >= 3")
    assert good.returncode == 0 and len(rows(out)) == 3, good.stderr
    assert {r["sample_index"] for r in rows(out)} == {2}
    parquet = tmp_path / "judged.parquet"
    assert synthgen("export", "--db", db, "--out", parquet, "--where", "score >= 3").returncode == 0
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*), min(score) FROM '{parquet}'").fetchone() == (3, 3.0)
    con.close()
    none = synthgen("export", "--db", db, "--out", tmp_path / "none.jsonl", "--where", "score >= 9")
    assert none.returncode == 1 and "--where 'score >= 9' matched none of the 6 rows" in none.stderr
    assert not (tmp_path / "none.jsonl").exists()
    ds = sg.to_dataset(db, where="score >= 3")  # the same rows in memory
    assert len(ds) == 3 and set(ds["score"]) == {3.0}


def test_answers_cut_by_max_tokens_are_left_out_unless_asked(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "whole"}, {"prompt": "cut short #finish=length"}])
    db = tmp_path / "c.duckdb"
    sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url])
    out = tmp_path / "out.jsonl"
    result = synthgen("export", "--db", db, "--out", out)
    assert result.returncode == 0 and [r["messages"][0]["content"] for r in rows(out)] == ["whole"]
    assert "left out: 1 cut by max_tokens (--include-truncated)" in result.stderr
    assert synthgen("export", "--db", db, "--out", out, "--include-truncated").returncode == 0
    assert [r["finish_reason"] for r in rows(out)] == ["stop", "length"]
    only_cut = synthgen("export", "--db", db, "--out", out, "--where", "finish_reason = 'length'")
    assert only_cut.returncode == 1 and "cut by max_tokens" in only_cut.stderr
    assert "--include-truncated writes them" in only_cut.stderr
    assert sg.export(db, tmp_path / "all.jsonl", include_truncated=True) == 2
    with pytest.raises(sg.SynthgenError, match="cut by max_tokens"):
        sg.export(db, tmp_path / "none.jsonl", where="finish_reason = 'length'")


def test_an_unfinished_last_stage_is_not_exported_as_if_done(teacher, tmp_path):
    path, db = recipe(tmp_path), tmp_path / "r.duckdb"
    assert synthgen("run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url,
                    cwd=tmp_path).returncode == 0
    con = duckdb.connect(str(db))
    con.execute("UPDATE stages SET status = 'running', kept = NULL, updated_at = now() "
                "WHERE stage = 'answers'")
    con.close()
    result = synthgen("export", "--db", db, "--out", tmp_path / "x.jsonl")
    assert result.returncode == 2 and "stage answers (recipe two) has not finished" in result.stderr
    assert synthgen("export", "--db", db, "--out", tmp_path / "x.jsonl", "--stage", "ideas").returncode == 0


def test_exported_files_get_the_same_mode_whatever_the_format(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    db = tmp_path / "c.duckdb"
    sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url])
    old = os.umask(0o022)
    try:
        sg.export(db, tmp_path / "a.jsonl")
        sg.export(db, tmp_path / "a.parquet")
    finally:
        os.umask(old)
    modes = {stat.S_IMODE((tmp_path / f).stat().st_mode) for f in ("a.jsonl", "a.parquet")}
    assert modes == {0o644}
