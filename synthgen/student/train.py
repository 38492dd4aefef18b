"""One training run: rows -> guards -> (KD targets) -> SFTTrainer -> a model directory.

The output directory is what vLLM or transformers loads (safetensors, tokenizer, chat
template), plus what makes the run reproducible and evaluable:

    synthgen_train.json   the config, guard report, KD status, loss history, versions
    query.sql             the SQL that chose the data
    split.json            train and held-out ids (eval uses exactly the held-out ones)
    checkpoints/          Trainer checkpoints; a rerun with the same --out resumes
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .deps import StudentError, require_train_extra
from .guards import GuardReport, check_rows
from .log import echo_or_log, quiet
from .presets import Student, load_student, prepare_tokenizer
from .prune import Pruning, parse_spec, pruned_student
from .render import Rendered, preview, render
from .rows import Row, load_rows, split_rows

CONFIG_FILE = "synthgen_train.json"
# Learning rates when --lr is not given: 1e-3 suits the randomly initialized `tiny` (and
# stays the default for given models, as before); a pruned teacher is healed, not trained
# from scratch: PRUNED_LR won bench/distill's small sweep (3e-4 over 1e-4, bench/DISTILL.md).
DEFAULT_LR = 1e-3
PRUNED_LR = 3e-4


@dataclass
class TrainConfig:
    """Everything `synthgen train` takes; saved with the model."""

    db: str
    out: str
    query: str | None = None
    student: str = "tiny"
    teacher_model: str | None = None  # for prune:K students and eval's reference
    prune_by: str = "influence"
    lora: bool = False
    lora_rank: int = 16
    merge_lora: bool = False
    kd: bool = False
    kd_weight: float = 0.5
    temperature: float = 1.0
    kd_loss: str = "forward"
    jsd_beta: float = 0.5
    epochs: float | None = None
    max_steps: int | None = None
    lr: float | None = None  # None: DEFAULT_LR for tiny and given models, PRUNED_LR for prune:K
    batch_size: int = 4
    max_length: int = 512
    overflow: str = "truncate"
    holdout: float = 0.1
    seed: int = 0
    threads: int | None = None
    save_steps: int = 100
    logging_steps: int = 10
    bf16: bool = False
    # Recompute activations in the backward pass, for memory. Off unless asked (TRL's SFTConfig
    # turns it on by default): for prune:20 of the 135M teacher on 2 CPU cores it cost 11-16%
    # more training time to save 7-9% of peak RSS, same losses (README, "Distil the teacher").
    gradient_checkpointing: bool = False
    tiny: dict[str, int] = field(default_factory=dict)
    with_reasoning: bool = False  # train on the teacher's reasoning (the `reasoning` column)


@dataclass
class Prepared:
    """The data a run trains on, after the guards."""

    student: Student
    train_rows: list[Row]
    heldout_rows: list[Row]
    rendered: list[Rendered]
    report: GuardReport
    split: Any
    pruning: Pruning | None = None


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Defaults that depend on the student, and choices checked before anything loads."""
    from .kd import KD_LOSSES
    from .prune import PRUNE_BY

    if cfg.prune_by not in PRUNE_BY:
        raise StudentError(f"--prune-by {cfg.prune_by!r}: expected one of {', '.join(PRUNE_BY)}")
    if cfg.kd_loss not in KD_LOSSES:
        raise StudentError(f"--kd-loss {cfg.kd_loss!r}: expected one of {', '.join(KD_LOSSES)}")
    if not 0.0 < cfg.jsd_beta < 1.0:
        raise StudentError(f"--jsd-beta must be strictly between 0 and 1, got {cfg.jsd_beta}")
    if cfg.lr is None:
        cfg = replace(cfg, lr=PRUNED_LR if parse_spec(cfg.student) else DEFAULT_LR)
    return cfg


def prepare(cfg: TrainConfig) -> Prepared:
    """Load rows and the student, render, and run the guards (no training yet)."""
    require_train_extra()
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows = load_rows(cfg.db, cfg.query)
    train_rows, heldout, split = split_rows(rows, cfg.holdout, cfg.seed, cfg.query)
    k = parse_spec(cfg.student)
    if k is not None:
        from .reference import load_teacher

        student = load_teacher(cfg.teacher_model)
    else:
        student = load_student(cfg.student, seed=cfg.seed, tiny_overrides=cfg.tiny)
    prepare_tokenizer(student.tokenizer)
    if cfg.with_reasoning and not any(r.reasoning for r in train_rows):
        raise StudentError("--with-reasoning: no training row has a reasoning trace (the "
                           "`reasoning` column is empty); the teacher gave none")
    rendered = [render(student.tokenizer, r.conversation(cfg.with_reasoning), r.finished)
                for r in train_rows]
    pruning = None
    if k is not None:  # block influence is measured on the training rows, as ShortGPT does
        student, pruning = pruned_student(student, k, cfg.prune_by, [r.input_ids for r in rendered])
    kept, report = check_rows(
        student.tokenizer,
        rendered,
        [f"row {r.request_id}" for r in train_rows],
        cfg.max_length,
        cfg.overflow,
        extra_stop_ids=_generation_eos(student.model),
    )
    kept_rows = [train_rows[i] for i in report.kept]
    return Prepared(student, kept_rows, heldout, kept, report, split, pruning)


def _generation_eos(model: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


@quiet()
def preview_text(cfg: TrainConfig, color: bool = False) -> str:
    """`--preview`: the guard report and the first training example, tokens marked."""
    prep = prepare(cfg)
    return f"{prep.report.summary()}\n\n{preview(prep.student.tokenizer, prep.rendered[0], color)}"


def _kd_examples(prep: Prepared, echo: Callable[[str], None]) -> list[Any] | None:
    from .targets import Vocab, check_compatible

    targets, reason = check_compatible(prep.train_rows, prep.rendered, Vocab(prep.student.tokenizer))
    if reason:
        echo(f"--kd refused: {reason}; training with plain SFT on the text instead")
        return None
    aligned = [t for t in targets if t is not None]
    k = max(len(ids) for t in aligned for ids in t.ids)
    echo(
        f"KD: teacher top-{k} targets on {len(aligned)} of {len(targets)} rows "
        f"({sum(len(t.positions) for t in aligned)} positions); {logprobs_modes(prep.train_rows)}"
    )
    return targets


def logprobs_modes(rows: list[Any]) -> str:
    """What the training rows' logprobs are, in words: KD tempers each from its own."""
    from collections import Counter

    from .targets import stored_temperature

    kinds: Counter[str] = Counter()
    for r in rows:
        if not r.logprobs:
            continue
        if r.logprobs_mode == "processed":
            t = stored_temperature(r)
            kinds["processed at T=0 (greedy, no target)" if t is None else f"processed at T={t:g}"] += 1
        else:
            kinds[r.logprobs_mode or "of unknown mode (read as raw)"] += 1
    return "logprobs " + ", ".join(f"{kind} on {n}" for kind, n in sorted(kinds.items()))


def checkpointing(config_class: type, on: bool) -> dict[str, bool]:
    """The training arguments that set activation checkpointing: transformers 5 renamed
    `gradient_checkpointing` to `activation_checkpointing` and warns on the old name."""
    names = getattr(config_class, "__dataclass_fields__", {})
    new = "activation_checkpointing"
    return {new if new in names else "gradient_checkpointing": on}


@quiet()
def train(
    cfg: TrainConfig,
    echo: Callable[[str], None] | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Train, save the model directory, and return the run summary.

    `callbacks` are extra transformers TrainerCallbacks (tests use one to interrupt a run).
    """
    echo = echo_or_log(echo)
    if (cfg.epochs is None) == (cfg.max_steps is None):
        raise StudentError("give exactly one of --epochs and --max-steps")
    cfg = resolve(cfg)
    started = time.time()
    prep = prepare(cfg)
    echo(f"data: {prep.report.summary()}; {len(prep.heldout_rows)} rows held out")
    targets = _kd_examples(prep, echo) if cfg.kd else None

    records = []
    for i, r in enumerate(prep.rendered):
        rec: dict[str, Any] = {"input_ids": r.input_ids, "labels": r.labels}
        if targets is not None:
            t = targets[i]
            rec.update(
                kd_pos=t.positions if t else [],
                kd_ids=t.ids if t else [],
                kd_lps=t.logprobs if t else [],
                kd_t=t.temperature if t else 1.0,
            )
        records.append(rec)
    fitted = fit(cfg, prep.student.model, prep.student.tokenizer, records, targets is not None, echo,
                 callbacks)
    model, tok, result, progress = fitted.model, prep.student.tokenizer, fitted.result, fitted.progress
    out = Path(cfg.out)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "query.sql").write_text(prep.split.query + "\n")
    prep.split.save(out / "split.json")
    summary = {
        "config": asdict(cfg),
        "student_kind": prep.student.kind,
        "parameters": sum(p.numel() for p in model.parameters()),
        "guards": asdict(prep.report) | {"kept": len(prep.report.kept)},
        "kd_used": targets is not None,
        "pruning": prep.pruning.to_dict() if prep.pruning else None,
        "train_rows": len(prep.train_rows),
        "heldout_rows": len(prep.heldout_rows),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "history": progress.history,
        "seconds": round(time.time() - started, 1),
        "versions": _versions(),
    }
    (out / CONFIG_FILE).write_text(json.dumps(summary, indent=1, default=str))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    echo(f"saved {out} ({result.global_step} steps, {summary['seconds']}s)")
    return summary


@dataclass
class Fitted:
    """What `fit` returns: the trained model (LoRA merged if asked), the Trainer's result
    and the progress callback with the loss history."""

    model: Any
    result: Any
    progress: Any


def fit(cfg: TrainConfig, model: Any, tok: Any, records: list[dict[str, Any]], kd: bool,
        echo: Callable[[str], None], callbacks: list[Any] | None = None) -> Fitted:
    """Train `model` on tokenized `records` (input_ids, labels, and with `kd` the teacher's
    targets: kd_pos, kd_ids, kd_lps, kd_t) with the KD trainer; resumes from the last
    checkpoint under cfg.out/checkpoints. Shared by `train` (records rendered from stored
    text) and on-policy distillation (records from the student's own sampled ids)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from .trainer import Collator, KDTrainer, Progress

    dataset = Dataset.from_list(records)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=2 * cfg.lora_rank,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
    ckpt = Path(cfg.out) / "checkpoints"
    args = SFTConfig(
        output_dir=str(ckpt),
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        num_train_epochs=cfg.epochs if cfg.epochs is not None else 1.0,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, (cfg.max_steps or 100) // 20),
        weight_decay=0.0,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=1,
        seed=cfg.seed,
        report_to=[],
        disable_tqdm=True,
        bf16=cfg.bf16,
        **checkpointing(SFTConfig, cfg.gradient_checkpointing),
        max_length=None,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    collator = Collator(tok.pad_token_id, kd=kd)
    trainer = KDTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        data_collator=collator,
        kd_weight=cfg.kd_weight if kd else 0.0,
        temperature=cfg.temperature,
        kd_loss=cfg.kd_loss,
        jsd_beta=cfg.jsd_beta,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    progress = Progress(collator, echo)
    trainer.add_callback(progress)
    for callback in callbacks or []:
        trainer.add_callback(callback)

    resume = _last_checkpoint(ckpt)
    if resume:
        echo(f"resuming from {resume}")
    result = trainer.train(resume_from_checkpoint=resume)
    model = trainer.model
    if cfg.lora and cfg.merge_lora:
        model = model.merge_and_unload()
    return Fitted(model, result, progress)


def _last_checkpoint(ckpt: Path) -> str | None:
    """The newest complete checkpoint under `ckpt`; incomplete ones are removed.

    The Trainer writes a checkpoint's files one by one, trainer_state.json last: a run killed
    while saving leaves a directory without it (or with it cut short), which the Trainer
    refuses to resume from ("Can't find a valid checkpoint"). That one is deleted and the
    one before it, still complete (rotation deletes it only after the new one is saved), is
    resumed from."""
    if not ckpt.is_dir():
        return None
    found = sorted((int(p.name.rpartition("-")[2]), p) for p in ckpt.glob("checkpoint-*")
                   if p.is_dir() and p.name.rpartition("-")[2].isdigit())
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return None


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for name in ("synthgen", "torch", "transformers", "trl", "peft"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out
