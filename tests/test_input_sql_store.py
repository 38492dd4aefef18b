"""`generate --input-sql` runs against the store itself: `FROM corpus` is the corpus, the
query runs once (both planner passes read its snapshot), and it can only read."""

from __future__ import annotations

import duckdb
from conftest import synthgen
from teacher_server import answer, make_prompts, write_jsonl

import synthgen as sg


def tables(db) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def test_a_query_over_the_corpus_feeds_a_second_generation(teacher, tmp_path):
    prompts = make_prompts(300)  # more than the planner's first batch: both passes read it all
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    first = sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url])
    assert first.answered == 300
    sql = ("SELECT 'Improve: ' || response AS prompt, line AS first_line FROM corpus "
           "WHERE run_id = 1 ORDER BY line")
    result = synthgen("generate", "--input-sql", sql, "--db", db, "--model", "m",
                      "--base-url", teacher.base_url)
    assert result.returncode == 0, result.stderr
    assert "300 answered now" in result.stderr
    con = duckdb.connect(str(db), read_only=True)
    got = con.execute("SELECT line, messages->>'$[0].content', response, (metadata->>'first_line')::INT "
                      "FROM corpus WHERE run_id = 2 ORDER BY line").fetchall()
    con.close()
    assert got == [(i + 1, f"Improve: {answer(p)}", answer(f"Improve: {answer(p)}"), i + 1)
                   for i, p in enumerate(prompts)]
    assert not any(t.startswith("_input_sql_") for t in tables(db))  # the snapshot is gone
    # Running it again: the query is run again (its tables may have changed), nothing is resent
    again = synthgen("generate", "--input-sql", sql, "--db", db, "--model", "m",
                     "--base-url", teacher.base_url)
    assert again.returncode == 0 and "0 answered now, 0 failed" in again.stderr, again.stderr


def test_a_query_that_fails_or_writes_is_refused_before_anything_is_sent(teacher, tmp_path):
    db = tmp_path / "c.duckdb"
    for sql, says in (("SELECT prompt FROM no_such_table", "input-sql: the query failed: Catalog Error"),
                      ("DELETE FROM responses", "input-sql: read-only"),
                      ("SELECT 'a' AS prompt; DROP TABLE runs", "input-sql: read-only"),
                      ("SELECT 'a' AS prompt) AS q; DROP TABLE runs; SELECT (1", "input-sql:")):
        result = synthgen("generate", "--input-sql", sql, "--db", db, "--model", "m",
                          "--base-url", teacher.base_url)
        assert result.returncode == 2 and says in result.stderr, (sql, result.stderr)
        assert "Traceback" not in result.stderr
    assert "runs" in tables(db) and teacher.bodies == []
    con = duckdb.connect(str(db), read_only=True)
    assert {r[0] for r in con.execute("SELECT status FROM runs").fetchall()} == {"invalid_input"}
    con.close()


def test_a_killed_runs_snapshot_is_dropped_by_the_next_run(teacher, tmp_path):
    db = tmp_path / "c.duckdb"
    con = sg.open_store(db, read_only=False)
    con.execute('CREATE TABLE "_input_sql_41" AS SELECT 1 AS x')
    con.close()
    result = synthgen("generate", "--input-sql", "SELECT 'x' AS prompt", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url)
    assert result.returncode == 0, result.stderr
    assert not any(t.startswith("_input_sql_") for t in tables(db))
