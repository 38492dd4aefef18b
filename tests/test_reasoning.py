"""Reasoning traces (R1-style distillation): stored under either name the servers use,
exported as `reasoning_content`, and trained with `train --with-reasoning` through the
student's own chat template, the guards checking the rendering kept every token of it."""

from __future__ import annotations

import copy
import json

import duckdb
import pytest
from teacher_server import TeacherServer, answer, think, write_jsonl

import synthgen

QWEN_LIKE = (  # renders reasoning_content itself, as reasoning models' templates do
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m.get('reasoning_content') %}<think>\n{{ m['reasoning_content'] }}\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPTS = ["What is 2 + 2?", "Name a colour."]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_is_stored_and_exported_whatever_the_server_calls_it(tmp_path, field):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    db = tmp_path / "c.duckdb"
    with TeacherServer() as server:
        server.reasoning_field = field
        summary = synthgen.generate(input=tmp_path / "in.jsonl", db=db, model="m",
                                    base_urls=[server.base_url])
    assert summary.answered == 2
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT response, reasoning FROM corpus ORDER BY line").fetchall()
    con.close()
    assert stored == [(answer(p), think(p)) for p in PROMPTS]
    out = tmp_path / "train.jsonl"
    assert synthgen.export(db, out) == 2
    turns = [json.loads(line)["messages"][-1] for line in out.read_text().splitlines()]
    assert turns == [{"role": "assistant", "content": answer(p), "reasoning_content": think(p)}
                     for p in PROMPTS]


def _store(tmp_path, reasoning: bool = True):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    db = tmp_path / "c.duckdb"
    with TeacherServer() as server:
        server.reasoning_field = "reasoning_content" if reasoning else None
        synthgen.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[server.base_url])
    return db


@pytest.mark.train
def test_with_reasoning_trains_the_trace_through_the_students_template(tmp_path):
    from synthgen.student.guards import check_rows
    from synthgen.student.presets import teacher_tokenizer
    from synthgen.student.render import IGNORE, render
    from synthgen.student.rows import load_rows

    rows = load_rows(_store(tmp_path))
    tok = teacher_tokenizer()
    qwen = copy.deepcopy(tok)
    qwen.chat_template = QWEN_LIKE

    def trained(t, r) -> str:
        return t.decode([i for i, lab in zip(r.input_ids, r.labels, strict=True) if lab != IGNORE])

    for row in rows:
        # off by default: the answer alone
        plain = render(tok, row.conversation(), row.finished)
        assert think(row.messages[-1]["content"]) not in trained(tok, plain)
        # a template that renders reasoning_content: its own form, inside the trained turn
        r = render(qwen, row.conversation(with_reasoning=True), row.finished)
        assert trained(qwen, r) == f"<think>\n{row.reasoning}\n</think>\n\n{row.response}<|im_end|>"
        # SmolLM2's ChatML has no field for it: <think> in the content, still trained
        r2 = render(tok, row.conversation(with_reasoning=True), row.finished)
        assert trained(tok, r2) == f"<think>\n{row.reasoning}\n</think>\n\n{row.response}<|im_end|>"
        for t, rendered in ((qwen, r), (tok, r2)):
            check_rows(t, [rendered], [row.request_id], max_length=512)
            # the answer (where the teacher's logprobs line up) starts after the reasoning
            text = t.decode(rendered.input_ids)
            assert rendered.answer_start > rendered.reasoning_at[1]
            assert text.find(row.response) > text.find(row.reasoning)


@pytest.mark.train
def test_the_guards_refuse_a_rendering_that_loses_the_reasoning(tmp_path):
    from synthgen.student.guards import GuardError, check_rows
    from synthgen.student.presets import teacher_tokenizer
    from synthgen.student.render import render
    from synthgen.student.rows import load_rows

    [row, _] = load_rows(_store(tmp_path))
    tok = copy.deepcopy(teacher_tokenizer())
    # DeepSeek-R1's template cuts everything up to </think> out of an assistant's content and
    # has no reasoning field: neither form survives it
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% set c = m['content'] %}"
        "{% if '</think>' in c %}{% set c = c.split('</think>')[-1] | trim %}{% endif %}"
        "{{ c }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    r = render(tok, row.conversation(with_reasoning=True), row.finished)
    assert r.reasoning_at == (-1, -1)
    with pytest.raises(GuardError, match="dropped the teacher's reasoning"):
        check_rows(tok, [r], ["row 0"], max_length=512)
    check_rows(tok, [render(tok, row.conversation(), row.finished)], ["row 0"], max_length=512)


@pytest.mark.train
def test_train_with_reasoning_needs_rows_that_have_it(tmp_path):
    from synthgen.student.deps import StudentError
    from synthgen.student.train import TrainConfig, prepare

    db = _store(tmp_path, reasoning=False)
    with pytest.raises(StudentError, match="no training row has a reasoning trace"):
        prepare(TrainConfig(db=str(db), out=str(tmp_path / "out"), with_reasoning=True, holdout=0.0,
                            max_steps=1))
    (tmp_path / "with").mkdir()
    db2 = _store(tmp_path / "with")
    prep = prepare(TrainConfig(db=str(db2), out=str(tmp_path / "out2"), with_reasoning=True, holdout=0.0,
                               max_steps=1))
    assert all(r.reasoning_at is not None and r.reasoning_at[0] >= 0 for r in prep.rendered)


@pytest.mark.train
def test_train_preview_shows_the_reasoning_trained(tmp_path):
    from conftest import synthgen as run_cli

    db = _store(tmp_path)
    result = run_cli("train", "--db", db, "--out", tmp_path / "out", "--with-reasoning", "--preview",
                     "--holdout", "0")
    assert result.returncode == 0, result.stderr
    assert "[[<think>\nTHINK[" in result.stdout and "</think>\n\nANSWER[" in result.stdout
    plain = run_cli("train", "--db", db, "--out", tmp_path / "out", "--preview", "--holdout", "0")
    assert plain.returncode == 0 and "THINK[" not in plain.stdout
