"""Training end to end on a test-sized tiny student: loss falls, KD is refused for a
foreign tokenizer, train -> save -> load -> eval round trip, resume, LoRA merge."""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
from test_student_support import TEST_TINY, make_store, write_tiny_dir
from transformers import TrainerCallback

from synthgen import cli
from synthgen.store import connect
from synthgen.student.presets import teacher_tokenizer
from synthgen.student.train import TrainConfig, train

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def tok():
    return teacher_tokenizer()


@pytest.fixture(scope="module")
def db(tmp_path_factory, tok):
    return make_store(tmp_path_factory.mktemp("store") / "c.duckdb", tok, n=24)


def config(db, out, **kw) -> TrainConfig:
    base = {"max_steps": 24, "lr": 1e-2, "logging_steps": 4, "holdout": 0.25, "tiny": TEST_TINY}
    return TrainConfig(db=str(db), out=str(out), **{**base, **kw})


def test_smoke_run_loss_decreases_and_kd_is_used(db, tmp_path) -> None:
    lines: list[str] = []
    summary = train(config(db, tmp_path / "m", kd=True), lines.append)
    history = summary["history"]
    assert summary["kd_used"] and summary["steps"] == 24
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert all(h["tokens_per_s"] > 0 and "kd_loss" in h for h in history)
    assert any(line.startswith("KD: teacher top-5") for line in lines)
    out = tmp_path / "m"
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja", "query.sql"):
        assert (out / name).exists(), name
    assert not (out / "checkpoints").exists()
    saved = json.loads((out / "synthgen_train.json").read_text())
    assert saved["config"]["kd"] and saved["train_rows"] == 18 and saved["heldout_rows"] == 6


class SeesCheckpointing(TrainerCallback):
    """Records whether the model recomputes activations when training starts."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        new = hasattr(type(model), "is_activation_checkpointing")  # transformers 5's name
        self.seen.append(model.is_activation_checkpointing if new else model.is_gradient_checkpointing)


def test_activation_checkpointing_only_when_asked(db, tmp_path) -> None:
    # TRL's SFTConfig turns it on by default: a third more compute for memory a small
    # student does not need. synthgen asks for it only with --gradient-checkpointing.
    for on in (False, True):
        probe = SeesCheckpointing()
        cfg = config(db, tmp_path / f"m{on}", max_steps=2, gradient_checkpointing=on)
        train(cfg, lambda _: None, [probe])
        assert probe.seen == [on]


def foreign_tokenizer():
    """A word-level tokenizer with ChatML markers: not the teacher's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the sun rain cat ocean tree bread river snow book wind star honey moon is nice good"
    vocab = {w: i for i, w in enumerate(["<unk>", "<|im_start|>", "<|im_end|>", *words.split()])}
    for extra in (".", ",", "(", ")", "Tell", "me", "about", "please", "user", "assistant"):
        vocab.setdefault(extra, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    t = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    t.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return t


def test_kd_with_a_foreign_tokenizer_falls_back_to_sft(db, tmp_path) -> None:
    student = write_tiny_dir(tmp_path / "student", foreign_tokenizer())
    lines: list[str] = []
    cfg = config(db, tmp_path / "m", kd=True, student=str(student), max_steps=3)
    summary = train(cfg, lines.append)
    assert not summary["kd_used"] and summary["steps"] == 3
    refusal = [line for line in lines if line.startswith("--kd refused")]
    assert refusal and "not the teacher's" in refusal[0] and "plain SFT" in refusal[0]


def test_round_trip_train_save_load_eval(db, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "m"
    train(config(db, out), lambda _: None)
    monkeypatch.setattr(
        sys,
        "argv",
        ["synthgen", "eval", "--db", str(db), "--model", str(out), "--json", "--gen-rows", "2"],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    stdout, _ = capsys.readouterr()
    assert exit_info.value.code == 0
    result = json.loads(stdout)  # exactly one JSON object, nothing else on stdout
    trained, untrained = result["trained"], result["untrained"]
    assert trained["loss"] < untrained["loss"] * 2 / 3
    assert trained["rows"] == 6 and trained["top1_agreement"] is not None
    assert 0.0 <= trained["rouge_l"] <= 1.0
    split = json.loads((out / "split.json").read_text())
    assert len(split["heldout_ids"]) == 6 and not set(split["heldout_ids"]) & set(split["train_ids"])
    con = connect(db)
    labels = con.execute(
        "SELECT label, rows FROM evals WHERE eval_id = ? ORDER BY label", [result["eval_id"]]
    ).fetchall()
    con.close()
    assert labels == [("teacher", 6), ("trained", 6), ("untrained", 6)]
    assert result["teacher"]["loss_source"] == "teacher-forced"  # tiny: the bundled teacher


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 6:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_from_its_checkpoint(db, tmp_path) -> None:
    cfg = config(db, tmp_path / "m", max_steps=8, save_steps=4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, lambda _: None, callbacks=[Interrupt()])
    assert (tmp_path / "m" / "checkpoints" / "checkpoint-4").is_dir()
    lines: list[str] = []
    summary = train(cfg, lines.append)
    assert any("resuming from" in line and "checkpoint-4" in line for line in lines)
    assert summary["steps"] == 8 and summary["history"][0]["step"] == 8


def test_lora_adapters_saved_or_merged_on_request(db, tmp_path) -> None:
    from synthgen.student.evaluate import evaluate

    merged = tmp_path / "merged"
    train(config(db, merged, lora=True, merge_lora=True, max_steps=2), lambda _: None)
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_config.json").exists()
    adapter = tmp_path / "adapter"
    train(config(db, adapter, lora=True, max_steps=2), lambda _: None)
    assert (adapter / "adapter_config.json").exists()
    result = evaluate(str(db), str(adapter), gen_rows=0, echo=lambda _: None)
    assert result["trained"]["loss"] > 0 and result["trained"]["rouge_l"] is None


def processed_copy(db, tmp_path, temperature: float):
    """The test store as a run that said its logprobs were processed at `temperature`."""
    copy = tmp_path / "processed.duckdb"
    shutil.copy(db, copy)
    con = connect(copy)
    con.execute("INSERT INTO runs (run_id, status, config) VALUES (1, 'done', ?)",
                [json.dumps({"logprobs_mode": "processed"})])
    con.execute("UPDATE requests SET params = ?", [json.dumps({"temperature": temperature})])
    con.close()
    return copy


def test_processed_logprobs_are_read_at_their_temperature(db, tmp_path) -> None:
    lines: list[str] = []
    cfg = config(processed_copy(db, tmp_path, 0.5), tmp_path / "m", kd=True, max_steps=4)
    summary = train(cfg, lines.append)
    assert summary["kd_used"]
    assert any("logprobs processed at T=0.5 on 18" in line for line in lines), lines
    assert all(math.isfinite(h["kd_loss"]) for h in summary["history"])


def test_greedy_processed_logprobs_are_no_kd_target(db, tmp_path) -> None:
    lines: list[str] = []
    cfg = config(processed_copy(db, tmp_path, 0.0), tmp_path / "m", kd=True, max_steps=2)
    summary = train(cfg, lines.append)
    assert not summary["kd_used"]
    assert any("--kd refused" in line and "temperature 0" in line for line in lines), lines
