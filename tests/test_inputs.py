"""Input formats, templates, config files and bad input: errors name the line and send nothing."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import synthgen
from teacher_server import answer, write_jsonl


def gen(teacher, db, *args):
    return synthgen("generate", "--db", db, "--model", "m", "--base-url", teacher.base_url, *args)


def stored(db) -> dict[str, str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute(
            "SELECT messages->>'$[-1].content', response FROM corpus").fetchall())
    finally:
        con.close()


def test_bad_input_lines_are_named_and_nothing_is_sent(teacher, tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        b'{"prompt": "fine"}',
        b'{"prompt": "broken"',                       # 2 malformed JSON
        b'{"text": "neither"}',                       # 3 no prompt or messages
        b'{"prompt": 42}',                            # 4 wrong type
        b'{"prompt": "caf\xe9 latin-1"}',             # 5 bad UTF-8
        b'{"messages": [{"role": "robot", "content": "x"}]}',  # 6 bad role
        b'["a list"]',                                # 7 not an object
        b'{"messages": "hello"}',                     # 8 messages not a list
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = gen(teacher, tmp_path / "c.duckdb", "--input", path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for line, why in [(2, "not valid JSON"), (3, "needs a 'prompt'"), (4, "must be a string"),
                      (5, "UTF-8"), (6, "role"), (7, "JSON object"), (8, "non-empty list")]:
        assert f"in.jsonl:{line}: " in result.stderr and why in result.stderr, (line, result.stderr)
    assert "in.jsonl:1:" not in result.stderr
    assert "7 invalid input lines" in result.stderr
    assert sum(teacher.received.values()) == 0
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == 0, "a bad plan is rolled back"
    con.close()

    skipped = gen(teacher, tmp_path / "c.duckdb", "--input", path, "--skip-invalid")
    assert skipped.returncode == 0, skipped.stderr
    assert "7 invalid input rows skipped" in skipped.stderr
    assert stored(tmp_path / "c.duckdb") == {"fine": answer("fine")}
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert [r[0] for r in con.execute("SELECT line FROM invalid_inputs ORDER BY line").fetchall()] == [
        2, 3, 4, 5, 6, 7, 8]


def test_only_the_first_20_bad_lines_are_listed(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"nope": i} for i in range(50)])
    result = gen(teacher, tmp_path / "c.duckdb", "--input", tmp_path / "in.jsonl")
    assert result.returncode != 0
    assert "in.jsonl:20:" in result.stderr and "in.jsonl:21:" not in result.stderr
    assert "and 30 more" in result.stderr


def test_messages_csv_parquet_and_sql_inputs(teacher, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "system", "content": "be brief"},
                                                      {"role": "user", "content": "from messages"}],
                                        "source": "chat"}])
    (tmp_path / "p.csv").write_text('prompt,topic\n"from csv, quoted",x\nsecond csv,y\n')
    pq.write_table(pa.table({"prompt": ["from parquet"], "n": [1]}), tmp_path / "p.parquet")
    db = tmp_path / "c.duckdb"
    for args in (("--input", tmp_path / "m.jsonl"), ("--input", tmp_path / "p.csv"),
                 ("--input", tmp_path / "p.parquet"),
                 ("--input-sql", "SELECT 'from sql ' || i AS prompt FROM range(3) t(i)")):
        result = gen(teacher, db, *args)
        assert result.returncode == 0, result.stderr
    got = stored(db)
    expected = ["from messages", "from csv, quoted", "second csv", "from parquet",
                "from sql 0", "from sql 1", "from sql 2"]
    assert got == {p: answer(p) for p in expected}
    con = duckdb.connect(str(db), read_only=True)
    meta = con.execute("SELECT metadata->>'source' FROM corpus WHERE metadata->>'source' IS NOT NULL")
    assert meta.fetchall() == [("chat",)]
    assert teacher.bodies[0]["messages"][0] == {"role": "system", "content": "be brief"}


def test_template_renders_rows_and_names_a_missing_variable(teacher, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "explain.jinja").write_text("Explain {{ topic }} to a {{ audience }}.\n")
    write_jsonl(tmp_path / "in.jsonl", [{"topic": "tides", "audience": "child"},
                                        {"topic": "rust"}])
    result = gen(teacher, tmp_path / "c.duckdb", "--input", tmp_path / "in.jsonl",
                 "--template", "explain", "--prompts-dir", prompts)
    assert result.returncode != 0
    assert "in.jsonl:2:" in result.stderr and "'audience' is undefined" in result.stderr
    assert sum(teacher.received.values()) == 0
    write_jsonl(tmp_path / "in.jsonl", [{"topic": "tides", "audience": "child"}])
    result = gen(teacher, tmp_path / "c.duckdb", "--input", tmp_path / "in.jsonl",
                 "--template", "explain", "--prompts-dir", prompts)
    assert result.returncode == 0, result.stderr
    assert stored(tmp_path / "c.duckdb") == {"Explain tides to a child.": answer("Explain tides to a child.")}


def test_template_sandbox_refuses_python_internals(teacher, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "evil.jinja").write_text("{{ topic.__class__.__mro__[1].__subclasses__() }}")
    write_jsonl(tmp_path / "in.jsonl", [{"topic": "x"}])
    result = gen(teacher, tmp_path / "c.duckdb", "--input", tmp_path / "in.jsonl",
                 "--template", "evil", "--prompts-dir", prompts)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "in.jsonl:1:" in result.stderr


def test_config_file_mirrors_flags_and_names_a_bad_field(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'input = "{tmp_path / "in.jsonl"}"\ndb = "{tmp_path / "c.duckdb"}"\n'
                   f'model = "m"\nbase-url = ["{teacher.base_url}"]\ntemperature = 0.3\n')
    result = synthgen("generate", "--config", cfg, "--temperature", "0.7")
    assert result.returncode == 0, result.stderr
    assert teacher.bodies[-1]["temperature"] == 0.7, "a flag overrides the file"
    yaml_cfg = tmp_path / "bad.yaml"
    yaml_cfg.write_text(f"input: {tmp_path / 'in.jsonl'}\ndb: x.duckdb\nmodel: m\n"
                        f"base_url: {teacher.base_url}\ntemperature: hot\nconcurency: 3\n")
    bad = synthgen("generate", "--config", yaml_cfg)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "temperature" in bad.stderr and "concurency" in bad.stderr
    assert "bad.yaml" in bad.stderr


def test_bad_flags_get_one_clear_line(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    for args, needle in [
        (("--input", tmp_path / "missing.jsonl"), "no such file"),
        (("--input", tmp_path / "in.jsonl", "--concurrency", "zero"), "concurrency"),
        (("--input", tmp_path / "in.jsonl", "--extra-body", "{nope"), "extra-body"),
        (("--input", tmp_path / "in.jsonl", "--template", "nothere"), "template 'nothere' not found"),
    ]:
        result = gen(teacher, tmp_path / "c.duckdb", *args)
        assert result.returncode != 0 and needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_conversation_the_teacher_cannot_answer_is_named(teacher, tmp_path):
    """Issue 24 #11: an input of only an assistant, system or tool message, or one ending
    with the assistant (exported as two assistant turns in a row), or with an empty user
    message, was sent; each is now refused with its line."""
    path = tmp_path / "in.jsonl"
    rows = [
        {"prompt": "fine"},
        {"messages": [{"role": "assistant", "content": "I answer nothing"}]},
        {"messages": [{"role": "system", "content": "be brief"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "  "}]},
        {"messages": [{"role": "user", "content": []}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                      {"role": "user", "content": "more"}]},
    ]
    write_jsonl(path, rows)
    result = gen(teacher, tmp_path / "c.duckdb", "--input", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for line, why in [(2, "the last message is 'assistant'"), (3, "the last message is 'system'"),
                      (4, "the last message is 'assistant'"), (5, "empty content"), (6, "empty content")]:
        assert f"in.jsonl:{line}: " in result.stderr and why in result.stderr, (line, result.stderr)
    assert "in.jsonl:1:" not in result.stderr and "in.jsonl:7:" not in result.stderr
    assert sum(teacher.received.values()) == 0


def test_parquet_columns_pandas_writes_are_read_or_named(teacher, tmp_path):
    """Issue 24 #10: a nanosecond timestamp, a time of day or invalid UTF-8 in a Parquet
    column ended with a traceback."""
    table = pa.table({
        "prompt": ["one", "two"],
        "at": pa.array([1_700_000_000_123_456_789, 1_700_000_001_000_000_001], pa.timestamp("ns")),
        "time": pa.array([1, 2_000_000_000_001], pa.time64("ns")),
        "took": pa.array([5, 6], pa.duration("ns")),
        "price": pa.array([1, 2], pa.decimal128(5, 2)),
    })
    pq.write_table(table, tmp_path / "ok.parquet")
    result = gen(teacher, tmp_path / "c.duckdb", "--input", tmp_path / "ok.parquet")
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    meta = con.execute("SELECT metadata->>'at', metadata->>'time' FROM corpus ORDER BY line").fetchall()
    con.close()
    assert meta == [("2023-11-14 22:13:20.123456789", "00:00:00.000000001"),
                    ("2023-11-14 22:13:21.000000001", "00:33:20.000000001")]
    bad = pa.array([b"fine", b"\xff\xfe broken"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"prompt": ["a", "b"], "note": bad}), tmp_path / "bad.parquet")
    refused = gen(teacher, tmp_path / "d.duckdb", "--input", tmp_path / "bad.parquet")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "bad.parquet:2: " in refused.stderr and "column 'note'" in refused.stderr
