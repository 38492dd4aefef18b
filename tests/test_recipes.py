"""Stages and `synthgen run`: each stage a plan of the engine over a file or SQL over the
store, its rows a view with parent_request_id, `keep` recorded per row, the funnel in
`status`, and a kill in the second stage resumed there with every row stored once."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import duckdb
import pytest
from conftest import start_synthgen, synthgen
from teacher_server import TeacherServer, answer, write_jsonl

TWO_STAGES = """\
name: two
settings:
  seeds: seeds.jsonl
  samples: 2
files: [seeds]
stages:
  - name: ideas
    input: ${seeds}
    template: "New task like: {{ prompt }}"
    n: ${samples}
    temperature: 1.0
    seed: 1
    columns:
      idea: "regexp_replace(response, '^ANSWER\\\\[(.*)\\\\]/seed=.*$', '\\\\1')"
    keep: "sample_index = 0 OR prompt_tokens > 6"
  - name: answers
    input: {sql: "SELECT request_id, idea || ' (' || sample_index || ')' AS idea FROM ideas"}
    template: "{{ idea }}"
    max_tokens: 64
    keep:
      - "length(response) > 10"
"""
SEEDS = ["Write a haiku about rain", "Explain tides", "List three prime numbers now"]


def recipe(tmp_path: Path, text: str = TWO_STAGES, name: str = "two.yaml") -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": p} for p in SEEDS])
    (tmp_path / name).write_text(text)
    return tmp_path / name


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_two_stages_views_lineage_keep_and_status(teacher, tmp_path):
    path, db = recipe(tmp_path), tmp_path / "r.duckdb"
    result = synthgen("run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ideas: 6 planned, 6 answered, 0 failed, 5 kept (removed: keep 1)" in result.stderr
    assert "answers: 5 planned, 5 answered, 0 failed, 5 kept" in result.stderr
    # "Explain tides" makes a 5-word prompt (6 tokens or fewer): its second sample is removed
    removed = query(db, "SELECT rule, detail FROM stage_rows WHERE NOT kept")
    assert removed == [("keep", "sample_index = 0 OR prompt_tokens > 6")]
    # each stage is a view with corpus's columns, its own columns and parent_request_id
    ideas = query(db, "SELECT idea, parent_request_id, sample_index FROM ideas ORDER BY line, sample_index")
    assert [i[0] for i in ideas] == ["New task like: " + s for s in (SEEDS[0], SEEDS[0], SEEDS[1], SEEDS[2],
                                                                     SEEDS[2])]
    assert all(i[1] is None for i in ideas)  # a file input has no parent
    lineage = query(db, "SELECT a.response, i.idea, i.sample_index FROM answers a "
                        "JOIN ideas i ON a.parent_request_id = i.request_id ORDER BY ALL")
    assert lineage == sorted((answer(f"{idea} ({k})"), idea, k) for idea, k in
                             query(db, "SELECT idea, sample_index FROM ideas"))
    cols = [r[0] for r in query(db, "DESCRIBE answers")]
    assert cols[:5] == ["request_id", "run_id", "line", "sample_index", "messages"]
    assert "json" in cols and cols[-1] == "parent_request_id"
    status = synthgen("status", "--db", db)
    assert "recipe two" in status.stdout and "(recipe two, stage answers)" in status.stdout
    assert "stage 1 ideas: 6 planned, 6 answered, 0 failed, 5 kept (removed: keep 1)" in status.stdout
    runs = [json.loads(line) for line in synthgen("status", "--db", db, "--json").stdout.splitlines()]
    assert [(r["recipe"], r["stage"]) for r in runs] == [("two", "ideas"), ("two", "answers")]
    # the same command again: nothing sent, every stage settled again the same way
    sent = sum(teacher.received.values())
    again = synthgen("run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url, cwd=tmp_path)
    assert again.returncode == 0 and sum(teacher.received.values()) == sent
    assert query(db, "SELECT stage, rows, kept FROM stages ORDER BY position") == [
        ("ideas", 6, 5), ("answers", 5, 5)]


def test_set_changes_a_stage_and_its_view_follows(teacher, tmp_path):
    path, db = recipe(tmp_path), tmp_path / "r.duckdb"
    base = ["run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url]
    assert synthgen(*base, cwd=tmp_path).returncode == 0
    result = synthgen(*base, "--set", "samples=3", "--set", "answers.max_tokens=32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ideas: 9 planned, 9 answered" in result.stderr
    assert query(db, "SELECT count(*), count(DISTINCT sample_index) FROM ideas") == [(7, 3)]  # 9 - 2
    assert {b.get("max_tokens") for b in teacher.bodies[-3:]} == {32}
    # the first settings' answers are still stored, under their own ids; the view shows the latest
    assert query(db, "SELECT count(*) FROM responses")[0][0] > query(db, "SELECT count(*) FROM answers")[0][0]


def test_a_stage_without_a_template_filters_stored_rows(teacher, tmp_path):
    text = TWO_STAGES + """\
  - name: short
    input: {sql: "SELECT request_id, parent_request_id FROM answers"}
    keep: "length(response) < 45"
"""
    path, db = recipe(tmp_path, text), tmp_path / "r.duckdb"
    result = synthgen("run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    short = query(db, "SELECT s.request_id, s.parent_request_id, s.response FROM short s ORDER BY line")
    answers = query(db, "SELECT request_id, parent_request_id, response FROM answers "
                        "WHERE length(response) < 45 ORDER BY line")
    assert short == answers and 0 < len(short) < 5
    assert "short: 5 rows, " in result.stderr and query(db, "SELECT count(*) FROM runs")[0][0] == 2


def _stage2_prompts(teacher: TeacherServer) -> int:
    return sum(1 for p in teacher.received if p.startswith("Q"))


def test_a_recipe_killed_in_its_second_stage_continues_there(tmp_path):
    text = """\
stages:
  - name: topics
    input: seeds.jsonl
    template: "{{ prompt }}"
    n: 2
    temperature: 1.0
    seed: 5
  - name: questions
    input:
      sql: >
        SELECT t.request_id, 'Q' || i || ' about ' || t.response AS q
        FROM topics t, range(12) r(i)
    template: "{{ q }}"
"""
    path, db = recipe(tmp_path, text, "kill.yaml"), tmp_path / "r.duckdb"
    with TeacherServer(latency=0.15) as teacher:
        args = ["run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url, "--concurrency", "4"]
        proc = start_synthgen(*args, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while _stage2_prompts(teacher) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)  # a commit or two of stage 2 lands
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored = query(db, "SELECT count(*) FROM responses")[0][0]
        assert 6 + 4 <= stored < 6 + 72  # all of stage 1, part of stage 2
        status = synthgen("status", "--db", db)
        assert "killed" in status.stdout and "stage 2 questions:" in status.stdout
        sent_before = dict(teacher.received)
        result = synthgen(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "topics: 6 planned, 6 answered" in result.stderr
        assert "questions: 72 planned, 72 answered, 0 failed, 72 kept" in result.stderr
    # stage 1 was not sent again (2 samples of each seed, once each); of stage 2 only what
    # was not stored (at most those in flight)
    assert all(teacher.received[p] == 2 for p in teacher.received if not p.startswith("Q"))
    resent = sum(1 for p, n in teacher.received.items() if p.startswith("Q") and n > 1)
    # in flight at the kill (4), plus what was answered but not yet committed: the writer
    # commits every 0.1 s; at 4 slots of 0.15 s that is ~3 answers, given 0.3 s on a
    # loaded machine
    assert resent <= 4 + 8, resent
    assert all(teacher.received[p] - sent_before.get(p, 0) <= 1 for p in teacher.received)
    # every row of every stage is stored once, next to its own prompt
    assert query(db, "SELECT count(*), count(DISTINCT request_id) FROM responses") == [(78, 78)]
    assert query(db, "SELECT count(*) FROM corpus WHERE response != 'ANSWER[' || (messages->>'$[0].content') "
                     "|| ']' AND response NOT LIKE 'ANSWER[%]/seed=%'") == [(0,)]
    assert query(db, "SELECT count(*) FROM questions q JOIN topics t ON q.parent_request_id = t.request_id") \
        == [(72,)]


@pytest.mark.parametrize(("text", "sets", "says"), [
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: x\n    tempreature: 1\n", [],
     "bad.yaml:5: stage a: unknown key 'tempreature'"),
    ("stages:\n  - name: corpus\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n", [],
     "bad.yaml:2: stage name 'corpus' is a relation of the store"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n    n: ${nope}\n", [],
     "bad.yaml:2: ${nope} is not a setting of this recipe"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n    temperature: hot\n", [],
     "bad.yaml:2: stage a"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n", ["n=3"],
     "--set n: bad.yaml has no setting 'n'"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n", ["b.n=3"],
     "--set b.n: the recipe has no stage 'b'"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n", ["a.keep=x"],
     "--set a.keep: 'keep' cannot be set on a stage"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n    keep:\n"
     "      - filter: self-instruct\n        threshhold: 0.5\n", [],
     "bad.yaml:7: stage a: keep: filter self-instruct: threshhold: Extra inputs are not permitted"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt }}'\n"
     "    keep: 'x); DROP TABLE runs; --'\n",
     [], "bad.yaml:5: stage a: keep:"),
    ("stages:\n  - name: a\n    input: nope.jsonl\n    template: '{{ prompt }}'\n", [],
     "bad.yaml:3: stage a: input: nope.jsonl: no such file"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n    template: '{{ prompt'\n", [],
     "bad.yaml:4: stage a: template syntax error"),
    ("stages:\n  - name: a\n    input: seeds.jsonl\n  template: x\n", [], "bad.yaml:4: not valid YAML"),
    ("stages:\n  - name: a\n    input: {sql: 'SELECT response FROM corpus'}\n"
     "    template: '{{ response }}'\n",
     [], "bad.yaml:2: stage a: input: column 'response' is a name synthgen keeps"),
])
def test_a_bad_recipe_is_one_error_naming_where(teacher, tmp_path, text, sets, says):
    path = recipe(tmp_path, text, "bad.yaml")
    extra = [a for s in sets for a in ("--set", s)]
    result = synthgen("run", path, "--db", tmp_path / "r.duckdb", "--model", "m",
                      "--base-url", teacher.base_url, *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and says in result.stderr, result.stderr
    assert teacher.bodies == []


def test_a_stage_name_another_recipe_owns_is_refused(teacher, tmp_path):
    path, db = recipe(tmp_path), tmp_path / "r.duckdb"
    assert synthgen("run", path, "--db", db, "--model", "m", "--base-url", teacher.base_url,
                    cwd=tmp_path).returncode == 0
    other = recipe(tmp_path, TWO_STAGES.replace("name: two", "name: other"), "other.yaml")
    result = synthgen("run", other, "--db", db, "--model", "m", "--base-url", teacher.base_url, cwd=tmp_path)
    assert result.returncode == 2 and "stage 'ideas' belongs to recipe 'two'" in result.stderr


def test_every_built_in_recipe_loads(tmp_path, monkeypatch):
    """From a folder that is not a checkout: the built-ins are found, with their templates,
    schemas and data files, and each filter's parameters check."""
    import synthgen
    from synthgen.recipes.spec import builtin_names

    monkeypatch.chdir(tmp_path)
    names = builtin_names()
    assert names == ["best-of-n", "dedup", "evol-instruct", "judge", "preferences", "self-instruct"]
    for name in names:
        spec = synthgen.load_recipe(synthgen.find_recipe(name))
        assert spec.name == name and spec.stages
        assert all(k.filter is None or k.params for s in spec.stages for k in s.keep)
