"""Pruned students: kept layers keep their weights exactly, the result is a normal HF
directory, block influence ranks a do-nothing layer last, and the teacher-NLL reference
eval reports equals a direct computation. A small random Llama stands in for the teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_student_support import TEST_TINY, make_store

from synthgen.student.closeness import stored_nll
from synthgen.student.deps import StudentError
from synthgen.student.presets import teacher_tokenizer, tiny_model
from synthgen.student.prune import block_influence, choose_layers, keep_layers, parse_spec
from synthgen.student.render import IGNORE, render
from synthgen.student.rows import Row

pytestmark = pytest.mark.train

LAYERS = 6


@pytest.fixture(scope="module")
def tok():
    return teacher_tokenizer()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tok):
    """A 6-layer random Llama with the bundled teacher's tokenizer, saved as an HF directory."""
    path = tmp_path_factory.mktemp("teacher") / "t"
    model = tiny_model(tok, seed=3, **{**TEST_TINY, "num_hidden_layers": LAYERS})
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path)).eval()


def test_kept_layers_keep_their_weights_and_the_result_loads(teacher_dir, tmp_path) -> None:
    original = load(teacher_dir)
    kept = [0, 2, 5]
    pruned = keep_layers(load(teacher_dir), kept)
    before, after = original.state_dict(), pruned.state_dict()
    for new, old in enumerate(kept):
        prefix_new, prefix_old = f"model.layers.{new}.", f"model.layers.{old}."
        names = [k[len(prefix_old) :] for k in before if k.startswith(prefix_old)]
        assert names
        for name in names:
            assert torch.equal(after[prefix_new + name], before[prefix_old + name]), name
    assert not any(k.startswith("model.layers.3.") for k in after)
    for name in ("model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(after[name], before[name])
    pruned.save_pretrained(str(tmp_path / "p"))
    assert json.loads((tmp_path / "p" / "config.json").read_text())["num_hidden_layers"] == 3
    reloaded = load(tmp_path / "p")
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-6)
        # The KV cache is indexed by the renumbered layers: cached decoding = uncached.
        cached = reloaded.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = reloaded.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_block_influence_ranks_a_planted_identity_layer_last(teacher_dir) -> None:
    model = load(teacher_dir)
    layer = model.model.layers[3]  # zero outputs: the layer adds nothing to the residual
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(100, 5000, (1, 12), generator=gen) for _ in range(3)]
    influence = block_influence(model, batches)
    assert len(influence) == LAYERS and influence[3] == pytest.approx(0.0, abs=1e-6)
    assert min(v for i, v in enumerate(influence) if i != 3) > 1e-3
    assert 3 not in choose_layers(LAYERS, LAYERS - 1, "influence", influence)


def test_even_spacing_and_bad_specs() -> None:
    assert choose_layers(30, 20, "even")[0] == 0 and choose_layers(30, 20, "even")[-1] == 29
    assert len(choose_layers(30, 20, "even")) == 20
    assert choose_layers(6, 3, "even") == [0, 2, 5]
    assert parse_spec("prune:4") == 4 and parse_spec("tiny") is None
    with pytest.raises(StudentError, match="whole number"):
        parse_spec("prune:half")
    with pytest.raises(StudentError, match="between 1 and 5"):
        choose_layers(6, 6, "even")


def test_the_teacher_nll_reference_equals_a_direct_computation(teacher_dir, tok) -> None:
    """Logprobs stored from the teacher itself: the stored NLL, eval's teacher-forced
    loss and a cross-entropy computed here by hand are one number."""
    from synthgen.student.evaluate import metrics

    model = load(teacher_dir)
    rows, direct, count = [], 0.0, 0
    for i, answer in enumerate(["The sun is warm.", "Rain falls on the river."]):
        row = Row(f"r{i}", [{"role": "user", "content": f"Tell me {i}."}], answer)
        r = render(tok, row.conversation())
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([r.input_ids])).logits[0], -1)
        entries = []
        for pos, label in enumerate(r.labels):
            if label == IGNORE:
                continue
            lp = float(logp[pos - 1, label])
            text = "" if label == tok.eos_token_id else tok.decode([label])
            entries.append({"token": text, "id": label, "logprob": lp, "top_logprobs": []})
            direct -= lp
            count += 1
        row.logprobs = entries
        rows.append(row)
    stored, tokens = stored_nll(rows)
    forced = metrics(model, tok, rows, 512, 0, 8)["loss"]
    assert tokens == count and forced == pytest.approx(direct / count, rel=1e-5)
    assert stored == pytest.approx(direct / count, rel=1e-5)


def test_prune_train_eval_end_to_end(teacher_dir, tok, tmp_path, capsys, monkeypatch) -> None:
    """`synthgen train --student prune:K --teacher-model DIR` then `synthgen eval --json`."""
    import sys

    from synthgen import cli

    db = make_store(tmp_path / "c.duckdb", tok, n=16)
    out = tmp_path / "m"

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["synthgen", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        o, e = capsys.readouterr()
        return exit_info.value.code, o, e

    code, _, err = run(
        "train", "--db", str(db), "--out", str(out), "--student", "prune:4", "--teacher-model",
        str(teacher_dir), "--kd", "--kd-loss", "jsd", "--max-steps", "3", "--holdout", "0.25",
    )
    assert code == 0, err
    summary = json.loads((out / "synthgen_train.json").read_text())
    assert summary["pruning"]["layers"] == LAYERS and len(summary["pruning"]["kept"]) == 4
    assert summary["config"]["lr"] == 3e-4 and summary["kd_used"]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    code, stdout, err = run(
        "eval", "--db", str(db), "--model", str(out), "--json", "--gen-rows", "2", "--speed-tokens", "4"
    )
    assert code == 0, err
    result = json.loads(stdout)
    teacher, trained = result["teacher"], result["trained"]
    assert teacher["loss_source"] == "teacher-forced" and teacher["model"] == str(teacher_dir)
    assert teacher["nll_ratio"] == pytest.approx(trained["loss"] / teacher["loss"])
    assert teacher["param_ratio"] == pytest.approx(trained["parameters"] / teacher["parameters"])
    assert teacher["param_ratio"] < 1 and teacher["speed_ratio"] > 0
    assert teacher["same_tokenizer"] and math.isfinite(teacher["loss_stored"])
    code, table, _ = run(
        "eval", "--db", str(db), "--model", str(out), "--gen-rows", "0", "--speed-tokens", "2"
    )
    assert code == 0 and "teacher" in table and "trained vs teacher: held-out NLL" in table


def test_bad_prune_flags_are_one_line_errors(teacher_dir, tok, tmp_path, capsys, monkeypatch) -> None:
    import sys

    from synthgen import cli

    db = make_store(tmp_path / "c.duckdb", tok, n=8)
    for student, message in (("prune:6", "between 1 and 5"), ("prune:x", "whole number")):
        monkeypatch.setattr(sys, "argv", [
            "synthgen", "train", "--db", str(db), "--out", str(tmp_path / "o"), "--student", student,
            "--teacher-model", str(teacher_dir), "--max-steps", "1",
        ])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err
