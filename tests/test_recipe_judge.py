"""judge: rubric scores through a response schema, the score a column; preferences: the
best and worst judged answer of each prompt as a DPO pair, exported as TRL reads it."""

from __future__ import annotations

import json

import duckdb
from conftest import synthgen
from teacher_server import answer, write_jsonl

import synthgen as sg


def test_judge_scores_the_corpus_once_and_filters_on_the_score(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"question {i}"} for i in range(3)])
    db = tmp_path / "c.duckdb"
    sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url], n=3, seed=0,
                temperature=1.0)
    args = ["run", "judge", "--db", db, "--model", "m", "--base-url", teacher.base_url,
            "--set", "min_score=2"]
    result = synthgen(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # the loopback judge gives 1 + the judged sample's seed: seeds 0, 1, 2 -> 1, 2, 3;
    # min_score 2 drops one answer of three
    assert "judgments: 9 planned, 9 answered, 0 failed, 6 kept (removed: keep 3)" in result.stderr
    body = teacher.bodies[-1]
    assert body["response_format"]["json_schema"]["strict"] is True  # schemas/judge.json is strict-able
    assert "Instruction:\nquestion" in body["messages"][0]["content"]
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT j.score, j.rationale IS NOT NULL, c.response FROM judgments j "
                       "JOIN corpus c ON c.request_id = j.parent_request_id ORDER BY ALL").fetchall()
    con.close()
    assert [(s, r.rsplit("=", 1)[1]) for s, _, r in rows] == [(2.0, "1")] * 3 + [(3.0, "2")] * 3
    sent = len(teacher.bodies)
    again = synthgen(*args, cwd=tmp_path)  # the judge's own answers are not judged in turn
    assert again.returncode == 0 and len(teacher.bodies) == sent
    assert "judgments: 9 planned" in again.stderr


def test_preferences_pair_the_best_and_worst_answer_of_each_prompt(teacher, tmp_path):
    seeds = ["Name a fruit.", "Say hello.", "Count to three."]
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": p} for p in seeds])
    db = tmp_path / "p.duckdb"
    result = synthgen("run", "preferences", "--db", db, "--model", "m", "--base-url", teacher.base_url,
                      "--set", f"seeds={tmp_path / 'seeds.jsonl'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "candidates: 12 planned, 12 answered, 0 failed, 12 kept" in result.stderr
    assert "ratings: 12 planned, 12 answered, 0 failed, 12 kept" in result.stderr
    out = tmp_path / "dpo.jsonl"
    assert synthgen("export", "--db", db, "--out", out, "--format", "preference").returncode == 0
    pairs = sorted((json.loads(line) for line in out.read_text().splitlines()),
                   key=lambda r: r["prompt"][0]["content"])
    assert [p["prompt"] for p in pairs] == [[{"role": "user", "content": s}] for s in sorted(seeds)]
    for p in pairs:
        instruction = p["prompt"][0]["content"]
        assert p["chosen"] == [{"role": "assistant", "content": answer(instruction, 3)}]
        assert p["rejected"] == [{"role": "assistant", "content": answer(instruction, 0)}]
        assert (p["chosen_score"], p["rejected_score"]) == (4.0, 1.0)
    # a plain export: the last stage's kept rows, which for a judge stage are the answers it rated
    rated = tmp_path / "rated.jsonl"
    result = synthgen("export", "--db", db, "--out", rated)
    assert result.returncode == 0, result.stderr
    assert "the rows judge stage ratings rated and kept" in result.stderr
    answers = [json.loads(line) for line in rated.read_text().splitlines()]
    assert len(answers) == 12 and {a["score"] for a in answers} == {1.0, 2.0, 3.0, 4.0}
    assert all(a["messages"][1]["content"] == answer(a["messages"][0]["content"], a["sample_index"])
               for a in answers)
    # a margin the scores do not reach: no pairs
    again = synthgen("run", "preferences", "--db", db, "--model", "m", "--base-url", teacher.base_url,
                     "--set", f"seeds={tmp_path / 'seeds.jsonl'}", "--set", "min_margin=4", cwd=tmp_path)
    assert again.returncode == 0
    none = synthgen("export", "--db", db, "--out", out, "--format", "preference")
    assert none.returncode == 1 and "no preference pairs" in none.stderr, none.stderr
