"""Held-out evaluation: the trained student and the untrained one, side by side.

On teacher answers to prompts the student never trained on (the run's `split.json`):

    loss, perplexity   cross-entropy on the answer tokens, teacher-forced
    token_accuracy     the student's argmax is the teacher's actual next token
    top1_agreement     the student's argmax is the teacher's own most likely token
                       (where the corpus holds logprobs)
    rouge_l            ROUGE-L F1 of the student's greedy generation vs the teacher's text

The untrained student is rebuilt from the run's config (`tiny` with the same seed, or
the same base model), so the comparison isolates what training did. Both land in the
store's `evals` table, one row each, sharing an eval_id.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .deps import StudentError, require_train_extra
from .log import echo_or_log, quiet
from .render import IGNORE, render, truncate
from .rouge import rouge_l
from .rows import Row, Split, heldout_rows
from .train import CONFIG_FILE


def load_trained(model_dir: Path, cfg: dict[str, Any]) -> tuple[Any, Any]:
    """The saved model; an unmerged LoRA run is its adapter on the rebuilt base student."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        run = json.loads((model_dir / CONFIG_FILE).read_text())
        model = PeftModel.from_pretrained(base_student(run).model, str(model_dir))
    elif (model_dir / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    else:
        raise StudentError(f"{model_dir}: not a model directory written by synthgen train")
    return model.float().eval(), tok


def metrics(
    model: Any,
    tok: Any,
    rows: list[Row],
    max_length: int,
    gen_rows: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Every metric above for one model on `rows`."""
    import torch

    from .targets import Vocab, targets_for

    vocab = Vocab(tok)
    nll = 0.0
    tokens = correct = agree = agree_n = used = 0
    for row in rows:
        r = render(tok, row.conversation(), row.finished)
        if len(r.input_ids) > max_length:
            r = truncate(r, max_length)
        if r.trained == 0:
            continue
        used += 1
        ids = torch.tensor([r.input_ids])
        labels = torch.tensor(r.labels[1:])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        mask = labels != IGNORE
        nll += float(torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum"))
        pred = logits.argmax(-1)
        tokens += int(mask.sum())
        correct += int((pred[mask] == labels[mask]).sum())
        t = targets_for(row, r, vocab, k=1)
        if t is not None:
            for pos, tid in zip(t.positions, t.ids, strict=True):
                agree_n += 1
                agree += int(int(pred[pos - 1]) == tid[0])
    if tokens == 0:
        raise StudentError("no held-out answer token to evaluate on")
    loss = nll / tokens
    out: dict[str, Any] = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "token_accuracy": correct / tokens,
        "top1_agreement": agree / agree_n if agree_n else None,
        "tokens": tokens,
        "rows": used,
    }
    out["rouge_l"] = _rouge(model, tok, rows[:gen_rows], max_new_tokens) if gen_rows else None
    return out


def _rouge(model: Any, tok: Any, rows: list[Row], max_new_tokens: int) -> float | None:
    import torch

    scores = []
    for row in rows:
        enc = tok.apply_chat_template(
            row.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
                eos_token_id=tok.eos_token_id,
            )
        text = tok.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        scores.append(rouge_l(text, row.response))
    return sum(scores) / len(scores) if scores else None


def base_student(run: dict[str, Any]) -> Any:
    """The student before training: `tiny` rebuilt from its seed, the given base model, or
    the teacher cut to the recorded layers (no influence to measure again)."""
    from .presets import load_student

    cfg, pruning = run["config"], run.get("pruning")
    if pruning:
        from .prune import keep_layers
        from .reference import load_teacher

        teacher = load_teacher(pruning["teacher"])
        keep_layers(teacher.model, pruning["kept"])
        return teacher
    return load_student(cfg["student"], seed=cfg["seed"], tiny_overrides=cfg.get("tiny"))


BUNDLED = "bundled"


def teacher_spec(run: dict[str, Any], override: str | None) -> str | None:
    """The local teacher to compare with: --teacher-model, the one a pruned student was cut
    from, the run's --teacher-model, the bundled one for `tiny` (whose tokenizer is the
    bundled teacher's), or None: then only the stored logprobs speak for the teacher."""
    cfg = run["config"]
    if override:
        return override
    if run.get("pruning"):
        return run["pruning"]["teacher"]
    if cfg.get("teacher_model"):
        return cfg["teacher_model"]
    return BUNDLED if cfg.get("student") == "tiny" else None


@quiet()
def evaluate(
    db: str,
    model_dir: str,
    query: str | None = None,
    gen_rows: int = 8,
    max_new_tokens: int = 64,
    label: str = "trained",
    echo: Callable[[str], None] | None = None,
    untrained: dict[str, Any] | None = None,
    teacher_model: str | None = None,
    with_teacher: bool = True,
    speed_tokens: int = 32,
) -> dict[str, Any]:
    """Evaluate `model_dir`, its untrained student and the teacher; record them in `evals`.

    `untrained` takes the result of an earlier call on the same rows (compare reuses it);
    the teacher is measured on the same rows from its stored logprobs and, when a local
    model is known (`teacher_spec`), teacher-forced; `speed_tokens` new tokens per prompt
    time student and teacher decoding side by side (0: skip).
    """
    require_train_extra()
    from .closeness import decode_speeds, paired_speed_ratio, ratios, stored_nll
    from .presets import prepare_tokenizer
    from .reference import parameters

    echo = echo_or_log(echo)
    path = Path(model_dir)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.exists():
        raise StudentError(f"{path}: no {CONFIG_FILE}; was it written by synthgen train?")
    run = json.loads(cfg_path.read_text())
    cfg = run["config"]
    split = Split.load(path / "split.json")
    rows = heldout_rows(db, split, query)
    echo(f"eval: {len(rows)} held-out rows")
    model, tok = load_trained(path, cfg)
    prepare_tokenizer(tok)
    trained = metrics(model, tok, rows, cfg["max_length"], gen_rows, max_new_tokens)
    trained["parameters"] = parameters(model)
    if untrained is None:
        base = base_student(run)
        prepare_tokenizer(base.tokenizer)
        base.model.eval()
        untrained = metrics(base.model, base.tokenizer, rows, cfg["max_length"], gen_rows, max_new_tokens)
        untrained["parameters"] = parameters(base.model)
    speed_rows = rows[: max(1, gen_rows)]
    teacher = None
    spec = teacher_spec(run, teacher_model) if with_teacher else None
    if with_teacher:
        stored, stored_tokens = stored_nll(rows)
        teacher = {"loss": stored, "loss_source": "stored logprobs", "loss_stored": stored}
        teacher["stored_tokens"] = stored_tokens
    if spec is not None and teacher is not None:
        from .reference import load_teacher

        ref = load_teacher(None if spec == BUNDLED else spec)
        prepare_tokenizer(ref.tokenizer)
        echo(f"eval: teacher {ref.spec}")
        forced = metrics(ref.model, ref.tokenizer, rows, cfg["max_length"], 0, max_new_tokens)
        teacher.update(
            model=ref.spec,
            parameters=parameters(ref.model),
            loss=forced["loss"],
            loss_source="teacher-forced",
            loss_teacher_forced=forced["loss"],
            perplexity=forced["perplexity"],
            token_accuracy=forced["token_accuracy"],
            tokens=forced["tokens"],
            same_tokenizer=ref.tokenizer.get_vocab() == tok.get_vocab(),
        )
        if speed_tokens:
            echo(f"eval: decode speed, {len(speed_rows)} prompts x {speed_tokens} new tokens")
            speeds, times = decode_speeds(
                {"student": (model, tok), "teacher": (ref.model, ref.tokenizer)}, speed_rows, speed_tokens
            )
            trained["tokens_per_s"], teacher["tokens_per_s"] = speeds["student"], speeds["teacher"]
            trained["speed_ratio"] = paired_speed_ratio(times["student"], times["teacher"])
    result: dict[str, Any] = {"trained": trained, "untrained": untrained}
    if teacher is not None:
        result["teacher"] = {**teacher, **ratios(trained, teacher)}
        result["teacher"]["untrained_nll_ratio"] = ratios(untrained, teacher)["nll_ratio"]
    result["model_dir"] = str(path)
    result["kd_used"] = run.get("kd_used", False)
    result["heldout_rows"] = len(rows)
    result["eval_id"] = record(db, str(path), label, query or split.query, len(rows), result)
    return result


def record(db: str, model_dir: str, label: str, query: str, rows: int, result: dict) -> str:
    """One `evals` row per model (trained under `label`, untrained as 'untrained')."""
    names = ((label, "trained"), ("untrained", "untrained"), ("teacher", "teacher"))
    entries = [(name, result[key]) for name, key in names if key in result]
    return insert_evals(db, model_dir, query, rows, entries)


def insert_evals(db: str, model: str, query: str, rows: int, entries: list[tuple[str, dict]]) -> str:
    """`evals` rows sharing one new eval_id, one per (label, metrics); `model` names what was
    evaluated (a model directory, or a served model's URL)."""
    from ..store import connect

    eval_id = uuid.uuid4().hex[:16]
    con = connect(db)
    try:
        for label, metrics in entries:
            con.execute(
                "INSERT INTO evals VALUES (?, now(), ?, ?, ?, ?, ?)",
                [eval_id, model, label, query, rows, json.dumps(metrics)],
            )
    finally:
        con.close()
    return eval_id
