"""Structured output: `--response-schema FILE` sent the way each server wants it, every
answer validated, misfits retried as new attempts and never stored as a success."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from conftest import require_bundled_teacher, synthgen
from pydantic import BaseModel
from teacher_server import TeacherServer, answer, requested_schema, write_jsonl

import synthgen as sg
from synthgen.backends.structured import dialect_for, schema_fields, strict_allowed
from synthgen.errors import ConfigError

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "words": {"type": "integer", "minimum": 1}},
    "required": ["answer", "words"],
    "additionalProperties": False,
}


def schema_file(tmp_path: Path, schema: object = SCHEMA, name: str = "schema.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(schema))
    return path


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_misfits_are_retried_and_hopeless_ones_fail_as_schema(teacher, tmp_path):
    prompts = ["fits at once", "misfit twice #schema=notjson,wrongtype", "never fits #schemaalways=wrongtype"]
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url, "--response-schema", schema_file(tmp_path),
                      "--max-attempts", "4")
    assert result.returncode == 0, result.stderr
    assert "2 answered now, 1 failed" in result.stderr
    assert "errors (attempts): schema 6" in result.stderr  # every failed attempt: 2 + 4
    stored = rows(db, "SELECT json->>'answer', (json->>'words')::INT, attempts, response FROM corpus "
                      "ORDER BY line")
    assert stored == [
        (answer(prompts[0]), 3, 1, json.dumps({"answer": answer(prompts[0]), "words": 3})),
        (answer(prompts[1]), 3, 3, json.dumps({"answer": answer(prompts[1]), "words": 3})),
    ]
    [(error_type, message, attempts, in_responses)] = rows(
        db, "SELECT error_type, message, attempts, (SELECT count(*) FROM responses s "
            "WHERE s.request_id = f.request_id) FROM failures f")
    assert (error_type, attempts, in_responses) == ("schema", 4, 0)
    assert "$.answer" in message and "42 is not of type 'string'" in message
    assert teacher.received[prompts[2]] == 4
    # The answer is asked for in OpenAI's form, strict (the schema is in the strict subset)
    fmt = teacher.bodies[0]["response_format"]
    assert fmt == {"type": "json_schema",
                   "json_schema": {"name": "response", "schema": SCHEMA, "strict": True}}
    assert "response_schema" not in teacher.bodies[0]


@pytest.mark.parametrize(("owned_by", "field"), [("llamacpp", "json_schema"), ("vllm", "structured_outputs"),
                                                  ("openai", "response_format")])
def test_each_server_gets_the_schema_its_own_way(tmp_path, owned_by, field):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "one"}, {"prompt": "two"}])
    with TeacherServer() as server:
        server.owned_by = owned_by
        summary = sg.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m",
                              base_urls=[server.base_url], response_schema=schema_file(tmp_path))
    assert summary.answered == 2
    for body in server.bodies:
        assert field in body and requested_schema(body) == SCHEMA
        assert {"json_schema", "structured_outputs", "response_format"} & set(body) == {field}


def test_the_schema_is_part_of_the_request(teacher, tmp_path):
    """Same schema: nothing is sent again. Another schema: other requests (their own ids)."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    db = tmp_path / "c.duckdb"
    kwargs = {"input": tmp_path / "in.jsonl", "db": db, "model": "m", "base_urls": [teacher.base_url]}
    assert sg.generate(**kwargs, response_schema=SCHEMA).answered == 2
    assert sg.generate(**kwargs, response_schema=SCHEMA).answered == 0
    looser = {**SCHEMA, "required": ["answer"], "additionalProperties": True}
    assert sg.generate(**kwargs, response_schema=looser).answered == 2
    assert teacher.bodies[-1]["response_format"]["json_schema"]["strict"] is False  # not strict-able
    assert rows(db, "SELECT count(DISTINCT params->'response_schema') FROM corpus") == [(2,)]


class Reply(BaseModel):
    answer: str
    words: int


def test_a_pydantic_model_is_a_schema_from_python(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}, {"prompt": "b #schema=wrongtype"}])
    summary = sg.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m",
                          base_urls=[teacher.base_url], response_schema=Reply)
    assert (summary.answered, summary.failed, summary.errors) == (2, 0, {"schema": 1})
    for (obj,) in rows(tmp_path / "c.duckdb", "SELECT json FROM corpus"):
        Reply.model_validate_json(obj)


@pytest.mark.parametrize(("content", "says"), [
    ("{not json", "schema.json: not valid JSON"),
    ('{"type": 5}', "schema.json: not a valid JSON Schema at type"),
    ("[1, 2]", "schema.json: a JSON Schema is an object, got list"),
])
def test_a_bad_schema_file_is_one_clear_error_before_anything_is_sent(teacher, tmp_path, content, says):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}])
    (tmp_path / "schema.json").write_text(content)
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "m", "--base-url", teacher.base_url,
                      "--response-schema", tmp_path / "schema.json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "response-schema" in result.stderr and says in result.stderr, result.stderr
    assert teacher.bodies == []


def test_a_missing_schema_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"response[-_]schema: .*nope.json: cannot read the schema file"):
        sg.generate(input=tmp_path / "x.jsonl", db=tmp_path / "c.duckdb",
                    response_schema=tmp_path / "nope.json")


def test_strict_only_where_openai_allows_it():
    assert strict_allowed(SCHEMA)
    assert not strict_allowed({**SCHEMA, "additionalProperties": True})
    assert not strict_allowed({**SCHEMA, "required": ["answer"]})
    nested = {"type": "object", "additionalProperties": False, "required": ["x"],
              "properties": {"x": {"type": "array", "items": {"type": "object", "properties": {"y": {}}}}}}
    assert not strict_allowed(nested)  # the inner object is open
    assert strict_allowed({"type": "string", "enum": ["a", "b"]})
    assert dialect_for("llamacpp") == "llamacpp" and dialect_for("vllm") == "vllm"
    assert dialect_for(None) == dialect_for("system") == "openai"
    assert schema_fields(SCHEMA, "vllm") == {"structured_outputs": {"json": SCHEMA}}


@pytest.mark.e2e
def test_the_bundled_teacher_answers_in_the_schema(tmp_path):
    """llama.cpp's server turns the schema into a grammar: the 135M teacher's answers fit."""
    require_bundled_teacher()
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "rating"],
              "properties": {"city": {"type": "string", "maxLength": 30},
                             "rating": {"type": "integer", "minimum": 1, "maximum": 10}}}
    write_jsonl(tmp_path / "in.jsonl",
                [{"prompt": f"Name a city you like and rate it. ({i})"} for i in range(3)])
    summary = sg.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", response_schema=schema,
                          max_tokens=48, temperature=0.7)
    assert summary.answered + summary.failed == 3 and summary.answered >= 2, summary
    for (obj,) in rows(tmp_path / "c.duckdb", "SELECT json FROM corpus"):
        value = json.loads(obj)
        assert set(value) == {"city", "rating"} and 1 <= value["rating"] <= 10


def test_the_schemas_property_order_is_the_order_sent(teacher, tmp_path):
    """Servers that constrain decoding generate properties in the schema's order (reasoning
    before a score, say): the canonical params keep the schema's own order, not a sorted one."""
    ordered = {"type": "object", "additionalProperties": False, "required": ["words", "answer"],
               "properties": {"words": {"type": "integer"}, "answer": {"type": "string"}}}
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}])
    db = tmp_path / "c.duckdb"
    sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url],
                response_schema=ordered)
    assert list(requested_schema(teacher.bodies[0])["properties"]) == ["words", "answer"]
    [(stored,)] = rows(db, "SELECT params->>'response_schema' FROM corpus")
    assert list(json.loads(stored)["properties"]) == ["words", "answer"]
    # the same schema with its properties the other way round is another request
    swapped = {**ordered, "properties": {"answer": {"type": "string"}, "words": {"type": "integer"}}}
    assert sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url],
                       response_schema=swapped).answered == 1
