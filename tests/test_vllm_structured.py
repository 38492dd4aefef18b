"""Structured output through vLLM's own guided decoding, validated by synthgen.

synthgen learns from GET /models (owned_by vllm) that the endpoint is vLLM and sends the
schema as vLLM's `structured_outputs`; vLLM constrains every token to the schema, and
synthgen still validates each answer (fit.py). A 135M model left to itself rarely writes
this object with an integer in range; guided, every first attempt fits.
"""

from __future__ import annotations

import json

import duckdb
import pytest
from teacher_server import write_jsonl

import synthgen as sg

pytestmark = pytest.mark.vllm

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "rating"],
          "properties": {"city": {"type": "string", "maxLength": 24},
                         "rating": {"type": "integer", "minimum": 1, "maximum": 10}}}


def test_every_answer_fits_the_schema_at_the_first_attempt(vllm_teacher, tmp_path) -> None:
    write_jsonl(tmp_path / "in.jsonl",
                [{"prompt": f"Name a city you like and rate it from 1 to 10. ({i})"} for i in range(8)])
    summary = sg.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model=vllm_teacher.model,
                          base_urls=vllm_teacher.base_urls, response_schema=SCHEMA, max_tokens=40,
                          temperature=0.7, seed=0, concurrency=8)
    assert (summary.answered, summary.failed) == (8, 0), summary
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT json, attempts, finish_reason FROM corpus").fetchall()
    finally:
        con.close()
    for obj, attempts, finish in rows:
        value = json.loads(obj)
        assert set(value) == {"city", "rating"} and 1 <= value["rating"] <= 10
        assert len(value["city"]) <= 24
        assert (attempts, finish) == (1, "stop")
