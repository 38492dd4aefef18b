"""evol-instruct: each of the paper's elimination rules, on planted texts and through the
recipe's three stages against a loopback teacher that evolves, judges and answers on cue."""

from __future__ import annotations

import json

import duckdb
from conftest import require_bundled_teacher, synthgen
from teacher_server import TeacherServer, write_jsonl

from synthgen.recipes.filters import check_params, evol


def test_each_elimination_rule(tmp_path):
    rows = [
        {"request_id": "copy", "instruction": "#Rewritten Prompt#: explain tides", "response": "x " * 100},
        {"request_id": "copy2", "instruction": "Rewrite the given prompt about tides", "response": "Moon."},
        {"request_id": "sorry", "instruction": "Prove P != NP", "response": "Sorry, I can't do that."},
        {"request_id": "long sorry", "instruction": "Explain", "response": "Sorry " + "word " * 90},
        {"request_id": "stop", "instruction": "Say nothing", "response": "It is the, and of it!"},
        {"request_id": "punct", "instruction": "Say nothing", "response": "...!?"},
        {"request_id": "fine", "instruction": "Explain tides in three steps", "response": "Tides rise."},
    ]
    out = evol.run(rows, check_params("evol-instruct", {}, tmp_path))
    assert {r.request_id: r.rule for r in out.removed} == {
        "copy": "copied-prompt", "copy2": "copied-prompt", "sorry": "sorry", "stop": "stop-words-only",
        "punct": "stop-words-only"}
    only_answers = evol.run(rows, check_params("evol-instruct", {"instruction": None}, tmp_path))
    assert {r.request_id for r in only_answers.removed} == {"sorry", "stop", "punct"}


class Evolver(TeacherServer):
    """Evolves, judges equality and answers, each on cue from the seed's words."""

    def _completion(self, body, prompt, attempt=1):
        out = super()._completion(body, prompt, attempt)
        out["choices"][0]["message"]["content"] = self.text(prompt)
        return out

    @staticmethod
    def text(prompt: str) -> str:
        if "#Given Prompt#:" in prompt:
            original = prompt.split("#Given Prompt#:")[1].strip()
            if "tides" in original:
                return original  # no information gain
            if "copy" in original:
                return "#Rewritten Prompt#: " + original
            if "impossible" in original:
                return original + " using only impossible math"
            if "quiet" in original:
                return original + " in silence"
            return original + " in exactly three steps"
        if "Are they equal" in prompt:
            first = prompt.split("First instruction:")[1].split("Second instruction:")[0].strip()
            second = prompt.split("Second instruction:")[1].split("Answer \"equal\"")[0].strip()
            return json.dumps({"verdict": "equal" if first == second else "not equal"})
        if "impossible" in prompt:
            return "Sorry, I cannot do that."
        if "silence" in prompt:
            return "It is the, and of it."
        return f"A full answer to: {prompt}"


def test_the_recipe_eliminates_failed_evolutions_stage_by_stage(tmp_path):
    seeds = ["Explain tides", "Please copy this", "Solve an impossible riddle", "Be quiet for a while",
             "Write a poem about rain"]
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": s} for s in seeds])
    db = tmp_path / "e.duckdb"
    with Evolver() as teacher:
        result = synthgen("run", "evol-instruct", "--db", db, "--model", "m", "--base-url", teacher.base_url,
                          "--set", f"seeds={tmp_path / 'seeds.jsonl'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "evolved: 5 planned, 5 answered, 0 failed, 4 kept (removed: evol-instruct:copied-prompt 1)" \
        in result.stderr
    assert "equality: 4 planned, 4 answered, 0 failed, 3 kept (removed: keep 1)" in result.stderr
    assert "answers: 3 planned, 3 answered, 0 failed, 1 kept" in result.stderr
    con = duckdb.connect(str(db), read_only=True)
    lineage = con.execute(
        "SELECT e.original, e.method, a.messages->>'$[0].content', a.response FROM answers a "
        "JOIN equality q ON a.parent_request_id = q.request_id "
        "JOIN evolved e ON q.parent_request_id = e.request_id").fetchall()
    rules = dict(con.execute("SELECT c.messages->>'$[0].content', s.rule FROM stage_rows s "
                             "JOIN corpus c USING (request_id) "
                             "WHERE s.stage = 'answers' AND NOT s.kept").fetchall())
    methods = {m for (m,) in con.execute("SELECT method FROM evolved").fetchall()}
    con.close()
    evolved = "Write a poem about rain in exactly three steps"
    assert lineage == [("Write a poem about rain", lineage[0][1], evolved, f"A full answer to: {evolved}")]
    assert rules == {"Solve an impossible riddle using only impossible math": "evol-instruct:sorry",
                     "Be quiet for a while in silence": "evol-instruct:stop-words-only"}
    assert len(methods) > 1 and methods <= {"constraints", "deepen", "concretize", "reasoning", "breadth"}


def test_a_stage_that_keeps_nothing_ends_the_recipe_with_an_error_naming_it(tmp_path):
    """Issue 29: a recipe never ends "done" with 0 rows: every evolution judged equal to its
    seed empties `equality`, and the run says so, naming the stage, with exit status 1."""
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "Explain tides"}, {"prompt": "Tell me about tides"}])
    with Evolver() as teacher:
        result = synthgen("run", "evol-instruct", "--db", tmp_path / "e.duckdb", "--model", "m",
                          "--base-url", teacher.base_url, "--set", f"seeds={tmp_path / 'seeds.jsonl'}",
                          cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "stage 'equality' of recipe 'evol-instruct' kept no row: 2 rows, all removed (keep 2)" \
        in result.stderr
    assert "done" not in result.stderr.splitlines()[-2]
    assert "stage 3/3" not in result.stderr  # nothing to answer: the stage after is not run


def test_on_the_bundled_teacher_it_keeps_answers_or_names_the_stage(tmp_path):
    """Issue 29: on the real bundled teacher (llama.cpp's JSON grammar adds whitespace, so a
    16-token verdict was cut every time and retried 5 times per prompt, then "done" with 0)
    the recipe ends with answers kept, or with an error that names the stage."""
    require_bundled_teacher()
    result = synthgen("run", "evol-instruct", "--db", tmp_path / "e.duckdb", "--set", "prompts=8",
                      cwd=tmp_path, timeout=600)
    if result.returncode == 0:
        kept = int(result.stderr.split("rows kept in the last stage")[0].rsplit(";", 1)[1].split()[0])
        assert kept > 0, result.stderr
    else:
        assert result.returncode == 1, result.stderr
        assert "of recipe 'evol-instruct' kept no row" in result.stderr, result.stderr
    con = duckdb.connect(str(tmp_path / "e.duckdb"), read_only=True)
    try:
        cut = con.execute("SELECT count(*) FROM failures WHERE error_type IN ('length', 'schema')").fetchall()
        attempts = con.execute("SELECT max(attempts) FROM failures WHERE error_type = 'length'").fetchall()
    finally:
        con.close()
    assert attempts[0][0] in (None, 1), "a temperature-0 cut is attempted once"
    assert cut[0][0] <= 2, result.stderr
