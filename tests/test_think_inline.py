"""Reasoning inline in the content (`<think>...</think>answer`, what an R1 distill served
without a reasoning parser returns) lands in the reasoning column, by every path an answer
comes (online, `batch ingest`); `export --think-in-content` writes it back in the form the
student learns, TRL trains those tokens; `--tokenizer` warns of a template that drops it."""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import synthgen as run_cli
from teacher_server import TeacherServer, answer, write_jsonl

import synthgen
from synthgen.backends.response import answer_from
from synthgen.backends.think import DEFAULT, parse_tags
from synthgen.store.export import THINK_IN_CONTENT

PROMPTS = ["What is 2 + 2?", "Name a colour."]


def reasoning_of(prompt: str) -> str:
    return f"First I read {prompt!r}. Then I think it over step by step."


def body(content, finish="stop", logprobs=None, details=None):
    choice = {"message": {"role": "assistant", "content": content}, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": t, "logprob": -0.5} for t in logprobs]}
    usage = {"prompt_tokens": 3, "completion_tokens": 9}
    if details:
        usage["completion_tokens_details"] = details
    return {"choices": [choice], "usage": usage}


@pytest.mark.parametrize("content, reasoning, text", [
    ("<think>\nR1\n</think>\n\nthe answer", "R1", "the answer"),
    ("  <think>R</think>A", "R", "A"),
    ("R, opened by the template</think>\n\nA", "R, opened by the template", "A"),  # R1 distills
    ("<think>\ncut while still thinking", "cut while still thinking", ""),
    ("<think>\n\n</think>\n\nA", None, "A"),  # Qwen3 with thinking off: an empty block
    ("no reasoning at all", None, "no reasoning at all"),
    ("Use <think> and </think> to mark it.", None, "Use <think> and </think> to mark it."),
])
def test_the_split_reads_each_form_vllm_parsers_read(content, reasoning, text):
    a = answer_from(body(content), "e")
    assert (a.reasoning, a.text) == (reasoning, text)
    kept = answer_from(body(content), "e", None)  # --think-tags none: the content as sent
    assert (kept.reasoning, kept.text) == (None, content)


def test_the_tags_are_configurable_and_checked():
    assert parse_tags("<think>,</think>") == DEFAULT and parse_tags("none") is None
    tags = parse_tags("<reasoning>,</reasoning>")
    a = answer_from(body("<reasoning>R</reasoning>A"), "e", tags)
    assert (a.reasoning, a.text) == ("R", "A")
    assert answer_from(body("<think>R</think>A"), "e", tags).text == "<think>R</think>A"
    for bad in ("<think>", "a,b,c", ",</think>", "x,x"):
        with pytest.raises(ValueError, match="tag"):
            parse_tags(bad)
    with pytest.raises(synthgen.ConfigError, match="think"):
        synthgen.generate(input="in.jsonl", db="x.duckdb", model="m", base_urls=["http://127.0.0.1:9/v1"],
                          think_tags="<think>")


def test_the_answers_logprobs_line_up_with_the_answer_and_counts_are_kept():
    tokens = ["<think>", "\n", "R", "\n", "</think>", "\n\n", "A", "!"]
    a = answer_from(body("".join(tokens), logprobs=tokens, details={"reasoning_tokens": 5}), "e")
    assert (a.reasoning, a.text) == ("R", "A!")
    assert [e["token"] for e in a.logprobs] == ["A", "!"]  # KD reads entry j as answer token j
    assert (a.reasoning_tokens, a.completion_tokens) == (5, 9)  # the provider's counts, as given
    # no count from the provider: the tokens before the answer's (the tags included)
    assert answer_from(body("".join(tokens), logprobs=tokens), "e").reasoning_tokens == 6
    assert answer_from(body("".join(tokens)), "e").reasoning_tokens is None  # no tokens seen: unknown
    # a server that already split it (reasoning_content) is trusted: the content is left as is
    split = body("<think>x</think>y")
    split["choices"][0]["message"]["reasoning_content"] = "R"
    assert (answer_from(split, "e").reasoning, answer_from(split, "e").text) == ("R", "<think>x</think>y")


def test_a_cut_while_reasoning_keeps_the_trace_instead_of_paying_again():
    a = answer_from(body("<think>\nhalf a thought", finish="length"), "e")
    assert (a.reasoning, a.text, a.finish_reason) == ("half a thought", "", "length")
    null = body(None, finish="length")
    null["choices"][0]["message"]["reasoning_content"] = "half"
    a = answer_from(null, "e")  # reasoning_content servers: content null, cut while thinking
    assert (a.reasoning, a.text) == ("half", "")


def inline_teacher(server: TeacherServer) -> None:
    """The teacher writes its reasoning into the content, as an R1 distill does; a prompt
    with `#opened` answers as one whose template opened <think> (only the closing tag),
    `#finish=length` is cut before it closes."""

    def respond(prompt, attempt, completion, request):
        clean = prompt.split(" #")[0]
        msg = completion["choices"][0]["message"]
        if "#finish=length" in prompt:
            msg["content"] = f"<think>\n{reasoning_of(clean)}"
        elif "#opened" in prompt:
            msg["content"] = f"{reasoning_of(clean)}\n</think>\n\n{answer(prompt)}"
        else:
            msg["content"] = f"<think>\n{reasoning_of(clean)}\n</think>\n\n{answer(prompt)}"
        return 200, completion, {}

    server.respond = respond


def _generate(tmp_path, prompts, **options):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    with TeacherServer() as server:
        inline_teacher(server)
        synthgen.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[server.base_url],
                          **options)
    return db


def stored(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT messages->>'$[0].content', reasoning, response, finish_reason "
                           "FROM corpus ORDER BY line").fetchall()
    finally:
        con.close()


def test_generate_stores_inline_reasoning_in_its_column(tmp_path):
    prompts = [*PROMPTS, "Say hi. #opened", "Count to 9. #finish=length"]
    db = _generate(tmp_path, prompts)
    rows = stored(db)
    assert rows[:3] == [(p, reasoning_of(p.split(" #")[0]), answer(p), "stop") for p in prompts[:3]]
    assert rows[3] == (prompts[3], reasoning_of("Count to 9."), "", "length")  # kept, not thrown away
    (tmp_path / "off").mkdir()
    off = stored(_generate(tmp_path / "off", PROMPTS[:1], think_tags="none"))
    assert off[0][1] is None and off[0][2].startswith("<think>\n")


def test_batch_ingest_splits_as_online_answers_are(tmp_path):
    from test_batch_files import run_batch_like_vllm

    from synthgen.batch.offline import ingest_files

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    dbs = {}
    with TeacherServer() as server:
        inline_teacher(server)
        for name in ("split", "kept"):
            db, out = tmp_path / f"{name}.duckdb", tmp_path / f"b-{name}"
            written = run_cli("batch", "write", "--db", db, "--out", out, "--input", tmp_path / "in.jsonl",
                              "--model", "m")
            assert written.returncode == 0, written.stderr
            [src] = sorted(out.glob("batch-*.jsonl"))
            run_batch_like_vllm(src, src.with_suffix(".out.jsonl"), server.base_url)
            ingest_files(db, [src.with_suffix(".out.jsonl")], None if name == "kept" else DEFAULT)
            dbs[name] = db
    assert stored(dbs["split"]) == [(p, reasoning_of(p), answer(p), "stop") for p in PROMPTS]
    assert all(r[1] is None and r[2].startswith("<think>") for r in stored(dbs["kept"]))


@pytest.mark.parametrize("tags", [None, "none"])
def test_generate_batch_splits_as_online_answers_are(tmp_path, monkeypatch, tags):
    """`generate --batch`: the Batch API's output lines go through the same split, with the
    run's --think-tags."""
    import batch_api_server
    from batch_api_server import BatchAPIServer

    plain = batch_api_server._completion

    def inline(body, prompt):
        done = plain(body, prompt)
        msg = done["choices"][0]["message"]
        msg["content"] = f"<think>\n{reasoning_of(prompt)}\n</think>\n\n{msg['content']}"
        return done

    monkeypatch.setattr(batch_api_server, "_completion", inline)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    db = tmp_path / "c.duckdb"
    with BatchAPIServer() as api:
        summary = synthgen.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[api.base_url],
                                    batch=True, batch_poll_interval=0.01, batch_poll_max=0.05,
                                    **({"think_tags": tags} if tags else {}))
    assert summary.answered == 2
    if tags is None:
        assert stored(db) == [(p, reasoning_of(p), answer(p), "stop") for p in PROMPTS]
    else:
        assert all(r[1] is None and r[2].startswith("<think>") for r in stored(db))


def test_export_think_in_content_writes_the_form_asked(tmp_path):
    db = _generate(tmp_path, PROMPTS)
    out = tmp_path / "t.jsonl"
    assert synthgen.export(db, out, think_in_content=THINK_IN_CONTENT) == 2
    turns = [json.loads(line)["messages"][-1] for line in out.read_text().splitlines()]
    assert turns == [{"role": "assistant", "content": f"<think>\n{reasoning_of(p)}\n</think>\n\n{answer(p)}"}
                     for p in PROMPTS]
    custom = "<reasoning>{reasoning}</reasoning>{content}"
    ds = synthgen.to_dataset(db, format="prompt-completion", think_in_content=custom)
    want = f"<reasoning>{reasoning_of(PROMPTS[0])}</reasoning>{answer(PROMPTS[0])}"
    assert ds[0]["completion"][0]["content"] == want
    with pytest.raises(synthgen.ConfigError, match=r"\{reasoning\} and \{content\}"):
        synthgen.export(db, out, think_in_content="<think>{reasoning}</think>")
    # the CLI: the flag alone is the default form; a bad form is one line, no traceback
    cli = run_cli("export", "--db", db, "--out", tmp_path / "c.jsonl", "--think-in-content")
    assert cli.returncode == 0, cli.stderr
    first = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])
    assert first["messages"][-1] == turns[0]
    bad = run_cli("export", "--db", db, "--out", tmp_path / "d.jsonl", "--think-in-content", "{content}")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "{reasoning}" in bad.stderr


@pytest.mark.train
def test_tokenizer_warns_where_the_template_drops_the_reasoning(tmp_path):
    from synthgen.store.export import write

    db = _generate(tmp_path, PROMPTS[:1])
    plain = write(db, tmp_path / "a.jsonl", tokenizer="teacher")  # SmolLM2's ChatML: no reasoning_content
    assert len(plain.warnings) == 1 and "drops `reasoning_content`" in plain.warnings[0]
    assert "--think-in-content" in plain.warnings[0]
    inline = write(db, tmp_path / "b.jsonl", tokenizer="teacher", think_in_content=THINK_IN_CONTENT)
    assert inline.warnings == []
    cli = run_cli("export", "--db", db, "--out", tmp_path / "c.jsonl", "--tokenizer", "teacher")
    assert cli.returncode == 0 and "warning: the chat template of teacher drops" in cli.stderr
    bad = run_cli("export", "--db", db, "--out", tmp_path / "d.jsonl", "--tokenizer", tmp_path / "nope")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--tokenizer" in bad.stderr


@pytest.mark.train
def test_trl_trains_the_reasoning_of_a_think_in_content_export(tmp_path):
    """Done-when of issue 30: inline <think> from the teacher -> columns -> think-in-content
    export -> TRL's SFTTrainer trains every reasoning token (counted)."""
    from trl import SFTConfig, SFTTrainer

    from synthgen.student.presets import teacher_tokenizer, tiny_model

    db = _generate(tmp_path, PROMPTS)
    assert [r[1] for r in stored(db)] == [reasoning_of(p) for p in PROMPTS]
    out = tmp_path / "train.jsonl"
    assert synthgen.export(db, out, format="prompt-completion", think_in_content=THINK_IN_CONTENT) == 2
    import datasets

    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    tok = teacher_tokenizer()
    trainer = SFTTrainer(model=tiny_model(tok, 0), train_dataset=ds, processing_class=tok,
                         args=SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, report_to=[],
                                        use_cpu=True, bf16=False))
    for i, prompt in enumerate(PROMPTS):
        row = trainer.train_dataset[i]
        ids = row["input_ids"]
        mask = [int(lab != -100) for lab in row["labels"]]  # what TRL's completion_only_loss trains
        trained = [t for t, m in zip(ids, mask, strict=True) if m]
        text = tok.decode(trained)
        # the completion alone, reasoning first (TRL trains the template's \n after it too)
        assert text.rstrip() == f"<think>\n{reasoning_of(prompt)}\n</think>\n\n{answer(prompt)}<|im_end|>"
        # count them: every token of the reasoning is a trained token
        reasoning_ids = tok(reasoning_of(prompt), add_special_tokens=False)["input_ids"]
        n = len(reasoning_ids)
        starts = [j for j in range(len(ids) - n + 1) if ids[j:j + n] == reasoning_ids]
        assert len(starts) == 1, "the reasoning is tokenized as on its own"
        assert sum(mask[starts[0]:starts[0] + n]) == n >= 15
    trainer.train()
