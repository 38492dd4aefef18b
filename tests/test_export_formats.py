"""What TRL and Hugging Face read: `export --format messages|prompt-completion|preference`
and `synthgen.to_dataset(db, query=...)`, the same rows in memory."""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import synthgen as run_cli
from teacher_server import TeacherServer, answer, think, write_jsonl

import synthgen

PROMPTS = ["What is 1 plus 1?", "Name a colour.", "Say hi."]


@pytest.fixture
def store(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p, "topic": f"t{i}"} for i, p in enumerate(PROMPTS)])
    db = tmp_path / "c.duckdb"
    with TeacherServer() as server:
        server.reasoning_field = "reasoning_content"
        assert synthgen.generate(input=tmp_path / "in.jsonl", db=db, model="m", n=2, temperature=1.0,
                                 seed=7, base_urls=[server.base_url]).answered == 6
    return db


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompt_completion_splits_the_input_from_the_answer(store, tmp_path):
    out = tmp_path / "pc.jsonl"
    result = run_cli("export", "--db", store, "--out", out, "--format", "prompt-completion",
                     "--where", "sample_index = 0")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out)
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": p}] for p in PROMPTS]
    assert [r["completion"] for r in rows] == [
        [{"role": "assistant", "content": answer(p, 7), "reasoning_content": think(p)}] for p in PROMPTS]
    assert [r["topic"] for r in rows] == ["t0", "t1", "t2"] and "messages" not in rows[0]
    assert all(r["sample_index"] == 0 and r["finish_reason"] == "stop" for r in rows)
    # messages is the same conversation in one list (the default, as before)
    assert run_cli("export", "--db", store, "--out", tmp_path / "m.jsonl").returncode == 0
    conv = read_jsonl(tmp_path / "m.jsonl")
    assert len(conv) == 6 and conv[0]["messages"] == rows[0]["prompt"] + rows[0]["completion"]


def _pairs(db, pairs):
    con = duckdb.connect(str(db))
    con.executemany("INSERT INTO preference_pairs VALUES ('judge', ?, ?, ?, ?, now())", pairs)
    con.close()


def test_preference_pairs_export_as_prompt_chosen_rejected(store, tmp_path):
    con = duckdb.connect(str(store), read_only=True)
    ids = con.execute("SELECT request_id, messages->>'$[0].content', sample_index FROM corpus "
                      "ORDER BY line, sample_index").fetchall()
    con.close()
    by_prompt = {}
    for rid, prompt, k in ids:
        by_prompt.setdefault(prompt, {})[k] = rid
    _pairs(store, [(by_prompt[PROMPTS[0]][1], by_prompt[PROMPTS[0]][0], 9.0, 3.0),
                   (by_prompt[PROMPTS[1]][0], by_prompt[PROMPTS[1]][1], 6.0, 5.0)])
    out = tmp_path / "dpo.jsonl"
    result = run_cli("export", "--db", store, "--out", out, "--format", "preference",
                     "--where", "chosen_score - rejected_score >= 2")
    assert result.returncode == 0 and "wrote 1 pairs" in result.stderr, result.stderr
    [row] = read_jsonl(out)
    assert row["prompt"] == [{"role": "user", "content": PROMPTS[0]}]
    assert row["chosen"] == [{"role": "assistant", "content": answer(PROMPTS[0], 8),
                              "reasoning_content": think(PROMPTS[0])}]
    assert row["rejected"][0]["content"] == answer(PROMPTS[0], 7)
    assert (row["chosen_score"], row["rejected_score"], row["topic"]) == (9.0, 3.0, "t0")
    assert synthgen.export(store, tmp_path / "all.parquet", format="preference") == 2
    ds = synthgen.to_dataset(store, format="preference")
    assert ds.column_names[:3] == ["prompt", "chosen", "rejected"] and len(ds) == 2


def test_preference_without_pairs_says_how_to_make_them(store, tmp_path):
    result = run_cli("export", "--db", store, "--out", tmp_path / "x.jsonl", "--format", "preference")
    assert result.returncode == 1 and "no preference pairs" in result.stderr, result.stderr
    assert "synthgen run preferences" in result.stderr and not (tmp_path / "x.jsonl").exists()
    result = run_cli("export", "--db", store, "--out", tmp_path / "x.jsonl", "--format", "preference",
                     "--allow-empty")
    assert result.returncode == 0 and "wrote 0 pairs" in result.stderr, result.stderr
    assert (tmp_path / "x.jsonl").read_text() == ""
    result = run_cli("export", "--db", store, "--out", tmp_path / "x.jsonl", "--format", "dpo")
    assert result.returncode == 2 and "Invalid value for '--format'" in result.stderr


def test_to_dataset_reads_a_query_in_memory(store, tmp_path, monkeypatch):
    import tempfile

    def no_files(*args, **kwargs):
        raise AssertionError("to_dataset wrote a temporary file")

    monkeypatch.setattr(tempfile, "mkstemp", no_files)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_files)
    ds = synthgen.to_dataset(store)
    assert len(ds) == 6 and ds[0]["messages"][-1]["reasoning_content"] == think(PROMPTS[0])
    pc = synthgen.to_dataset(store, query="SELECT * FROM corpus WHERE metadata->>'topic' = 't1'",
                             format="prompt-completion")
    assert len(pc) == 2 and {r["completion"][0]["content"] for r in pc} == {answer(PROMPTS[1], 7),
                                                                            answer(PROMPTS[1], 8)}
    with pytest.raises(synthgen.ConfigError, match=r"columns messages, response \(missing: response\)"):
        synthgen.to_dataset(store, query="SELECT messages FROM corpus")
    with pytest.raises(synthgen.StoreError, match="read-only"):
        synthgen.to_dataset(store, query="DELETE FROM responses")


@pytest.mark.train
def test_trl_trains_only_the_answer_of_a_prompt_completion_row(store, tmp_path):
    """What the two formats mean to TRL's SFTTrainer defaults, measured by TRL itself."""
    from trl import SFTConfig, SFTTrainer

    from synthgen.student.presets import teacher_tokenizer, tiny_model

    tok = teacher_tokenizer()
    model = tiny_model(tok, 0)
    trained = {}
    for fmt in ("messages", "prompt-completion"):
        ds = synthgen.to_dataset(store, format=fmt, where="sample_index = 0")
        trainer = SFTTrainer(model=model, train_dataset=ds, processing_class=tok,
                             args=SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, report_to=[],
                                            use_cpu=True, bf16=False))
        row = trainer.train_dataset[0]
        labelled = [i for i, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
        trained[fmt] = (len(labelled), len(row["input_ids"]), tok.decode(labelled))
    assert trained["messages"][0] == trained["messages"][1]  # every token, the prompt's too
    n, total, text = trained["prompt-completion"]
    assert n < total and text.rstrip() == f"{answer(PROMPTS[0], 7)}<|im_end|>"  # (TRL trains the \n too)


IMAGE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHw"
         "AFBQIAX8jx0gAAAABJRU5ErkJggg==")
LOOK = [{"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": IMAGE}}]


def test_a_store_mixing_image_and_text_prompts_loads_with_its_parts_kept(tmp_path):
    """Issue 30: to_dataset crashed (Arrow: "cannot mix list and non-list values") on a store
    whose prompts mix content parts and plain text. Every content becomes a list of parts
    (a string: one text part); the image part stays as the teacher got it."""
    import datasets

    write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": "Say hi."}, {"messages": [{"role": "user", "content": LOOK}]},
        {"prompt": "Name a colour."}])
    db = tmp_path / "c.duckdb"
    with TeacherServer() as server:
        assert synthgen.generate(input=tmp_path / "in.jsonl", db=db, model="m",
                                 base_urls=[server.base_url]).answered == 3
    ds = synthgen.to_dataset(db)
    by_first = {row["messages"][0]["content"][0]["text"]: row["messages"] for row in ds}
    [user, assistant] = by_first["What is in this picture?"]
    assert [(p["type"], p["text"], p["image_url"]) for p in user["content"]] == [
        ("text", "What is in this picture?", None), ("image_url", None, {"url": IMAGE})]
    said = answer(json.dumps(LOOK, sort_keys=True))  # the loopback teacher's answer to the parts
    assert assistant["content"] == [{"type": "text", "text": said, "image_url": None}]
    assert by_first["Say hi."][1]["content"][0]["text"] == answer("Say hi.")
    pc = synthgen.to_dataset(db, format="prompt-completion")
    assert len(pc) == 3 and all(isinstance(r["completion"][0]["content"], list) for r in pc)
    # the files load too, in the same shape (a .jsonl through datasets' json loader)
    for name in ("m.jsonl", "m.parquet"):
        assert synthgen.export(db, tmp_path / name) == 3
        loaded = datasets.load_dataset("json" if name.endswith("jsonl") else "parquet",
                                       data_files=str(tmp_path / name), split="train")
        parts = [p for row in loaded for turn in row["messages"] for p in turn["content"]]
        assert len(parts) == 7 and sum(p["type"] == "image_url" for p in parts) == 1
    # a store of text alone keeps plain string contents (what text-only templates render)
    text_only = synthgen.to_dataset(
        db, query="SELECT * FROM corpus WHERE json_type(messages->'$[0].content') = 'VARCHAR'")
    assert len(text_only) == 2
    assert all(isinstance(m["content"], str) for r in text_only for m in r["messages"])
