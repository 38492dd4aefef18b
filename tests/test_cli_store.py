"""`sql`, `export`, `status` and the CLI surface, on a store filled by a real run."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import synthgen
from teacher_server import answer, write_jsonl

from synthgen.cli import COMMANDS


@pytest.fixture
def db(teacher, tmp_path):
    rows = [{"prompt": f"question {i}", "topic": f"t{i % 3}", "level": i} for i in range(12)]
    rows.append({"prompt": "doomed #always=400"})
    write_jsonl(tmp_path / "in.jsonl", rows)
    path = tmp_path / "c.duckdb"
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", path, "--model", "m",
                      "--base-url", teacher.base_url, "--logprobs", "2", "--price-in", "1",
                      "--price-out", "2")
    assert result.returncode == 0, result.stderr
    return path


def test_sql_csv_prints_a_header_then_rows(db):
    result = synthgen("sql", "--db", db, "--format", "csv",
                      "SELECT line, response FROM corpus ORDER BY line LIMIT 3")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["line", "response"]
    assert rows[1:] == [[str(i + 1), answer(f"question {i}")] for i in range(3)]


def test_sql_jsonl_and_table(db):
    result = synthgen("sql", "--db", db, "--format", "jsonl",
                      "SELECT request_id, status_code, messages FROM failures")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["status_code"] == 400
    # a JSON column is JSON in the line, not a string of JSON inside it
    assert rows[0]["messages"] == [{"role": "user", "content": "doomed #always=400"}]
    table = synthgen("sql", "--db", db, "SELECT count(*) AS n FROM corpus")
    assert table.returncode == 0 and "12" in table.stdout


def test_select_star_prints_records_a_person_can_read(db):
    result = synthgen("sql", "--db", db, "SELECT * FROM corpus ORDER BY line LIMIT 2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("-[ row 1 ]") and sum(line.startswith("-[ row") for line in lines) == 2
    first = lines[1:next(i for i, line in enumerate(lines) if line.startswith("-[ row 2"))]
    fields = dict(line.split(None, 1) for line in first)
    assert fields["response"] == answer("question 0") and fields["finish_reason"] == "stop"
    assert all(len(line) <= 160 for line in lines)
    assert "columns shown as records" in lines[-1]
    narrow = synthgen("sql", "--db", db, "SELECT line, finish_reason FROM corpus ORDER BY line LIMIT 1")
    assert "┃ line ┃ finish_reason ┃" in narrow.stdout  # a few columns stay a table


def test_db_missing_is_said_the_same_way_by_every_command(tmp_path):
    for args in (("generate", "--input", tmp_path / "in.jsonl"), ("export", "--out", tmp_path / "x.jsonl"),
                 ("status",), ("run", "judge")):
        result = synthgen(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Error: Missing option '--db'." in result.stderr, (args, result.stderr)


def test_sql_is_read_only_and_errors_are_one_line(db):
    result = synthgen("sql", "--db", db, "DELETE FROM responses")
    assert result.returncode != 0 and "read-only" in result.stderr
    assert "Traceback" not in result.stderr
    bad = synthgen("sql", "--db", db, "SELEC nonsense")
    assert bad.returncode != 0 and "syntax error" in bad.stderr.lower()
    missing = synthgen("sql", "--db", db.parent / "nope.duckdb", "SELECT 1")
    assert missing.returncode != 0 and "no such database" in missing.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM responses").fetchone()[0] == 12


def test_export_jsonl_is_chat_format_with_metadata(db, tmp_path):
    out = tmp_path / "out.jsonl"
    result = synthgen("export", "--db", db, "--out", out)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    for row in rows:
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"] == answer(user["content"])
        assert row["topic"] == f"t{row['level'] % 3}" and user["content"] == f"question {row['level']}"


def test_export_parquet_reads_back_the_same_rows(db, tmp_path):
    synthgen("export", "--db", db, "--out", tmp_path / "out.jsonl")
    result = synthgen("export", "--db", db, "--out", tmp_path / "out.parquet",
                      "--where", "metadata->>'topic' = 't0'")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(table) == 4
    for row in table:
        assert row["messages"][1]["content"] == answer(row["messages"][0]["content"])
        assert row["topic"] == "t0"


def test_status_shows_done_failed_tokens_and_cost(db):
    result = synthgen("status", "--db", db)
    assert result.returncode == 0, result.stderr
    assert "13 requests, 12 done, 0 pending, 1 failed (http_400 1)" in result.stdout
    assert "estimated cost $" in result.stdout
    as_json = [json.loads(line) for line in synthgen("status", "--db", db, "--json").stdout.splitlines()]
    assert as_json[0]["answered"] == 12 and as_json[0]["cost"] > 0


def test_every_command_has_help():
    for name in COMMANDS:
        result = synthgen(name, "--help")
        assert result.returncode == 0, (name, result.stderr)
        assert "Usage:" in result.stdout


def test_a_file_that_is_not_a_store_is_refused_clearly(tmp_path):
    (tmp_path / "x.duckdb").write_text("not a database")
    result = synthgen("sql", "--db", tmp_path / "x.duckdb", "SELECT 1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    plain = tmp_path / "plain.duckdb"
    duckdb.connect(str(plain)).close()
    result = synthgen("status", "--db", plain)
    assert result.returncode != 0 and "not a synthgen store" in result.stderr
