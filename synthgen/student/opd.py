"""On-policy distillation: the student writes, the teacher scores its tokens, the student
learns where it went wrong (`synthgen distill`).

    round 0   the student: the teacher cut to K layers (prune:K), or a directory (a warm
              start from an off-policy SFT/KD checkpoint, as Thinking Machines and Qwen3 do)
    round r   1. sample   the round-(r-1) student answers the round's training prompts
                          (student/sample.py: stored like any answer, model student:LABEL@HASH)
              2. score    the teacher scores those answers' own tokens (scoring/: `scores`)
              3. train    on the student's sampled ids, the KD loss against the teacher's
                          top-K at every position (reverse KL by default, as Thinking Machines
                          and MiniLLM; forward and GKD's JSD available), from round r-1's weights
              4. save     OUT/round-r, a model directory `synthgen eval` reads

The prompts come from the store (`--prompts SQL`, rows with `messages`); the held-out share
is split off by prompt exactly as `synthgen train` splits the same rows, so no held-out
prompt is ever sampled for training and OPD is evaluated on the same held-out answers as
off-policy KD (OUT/split.json, copied into every round).

Everything a round makes is stored or saved as it is made, so killing the command at any
point and running it again resumes: rollouts and scores are in the store (sampling and
scoring send only what is missing; every rollout is reproducible alone, rollout.py), and
training resumes from its last checkpoint. Training reads its rows in request_id order, so
the final checkpoint does not depend on where a run was killed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..scoring.score import LOCAL, ScoreConfig, check_teacher, score
from ..scoring.tokens import chat_ids, same_tokenizer
from ..store import connect
from ..store.scores import quoted, rollout_counts, scored_rollouts
from .deps import StudentError, require_train_extra
from .log import echo_or_log, quiet
from .opd_prompts import Prompts, round_prompts, split_prompts
from .render import IGNORE
from .rows import DEFAULT_QUERY
from .sample import SampleOptions, load_sampler, sample
from .train import CONFIG_FILE, PRUNED_LR, TrainConfig, fit

STATE_FILE = "distill.json"
# Settings of how a run computes, not of what it makes, so a resumed run may change them;
# and --rounds, since no round depends on how many follow it: a finished run given more
# rounds goes on from its last one (the benchmark adds rounds until a teacher-token budget).
HOW = ("threads", "sample_batch", "save_steps", "rounds")


@dataclass
class DistillConfig:
    """Everything `synthgen distill` takes; saved as OUT/distill.json."""

    db: str
    out: str
    student: str  # prune:K, or a model directory (a warm start)
    teacher: list[str] = field(default_factory=lambda: [LOCAL])
    rounds: int = 4
    prompts: str = DEFAULT_QUERY
    teacher_model: str | None = None  # the local teacher, and what prune:K cuts (default: bundled)
    served_model: str | None = None  # a served teacher's model name (default: its only one)
    prune_by: str = "influence"
    logprobs: int = 20  # the teacher's top-K scored at each position
    samples: int = 1  # rollouts per prompt per round
    prompts_per_round: int | None = None  # default: every training prompt each round
    steps: int = 60  # optimizer steps per round
    loss: str = "reverse"
    jsd_beta: float = 0.5
    lr: float = PRUNED_LR
    batch_size: int = 4
    max_tokens: int = 128  # per rollout
    temperature: float = 1.0  # of the rollouts
    max_length: int = 512
    holdout: float = 0.1
    seed: int = 0
    sample_batch: int = 8
    threads: int | None = None
    save_steps: int = 20


@dataclass
class RoundResult:
    """What one round did, in OUT/distill.json."""

    round: int
    student: str  # the name its rollouts carry (student:LABEL@HASH)
    prompts: int
    rollouts: int
    rollout_tokens: int
    scored: int
    teacher_tokens: int  # answer tokens the teacher scored (what OPD pays the teacher for)
    steps: int
    train_loss: float | None
    seconds: dict[str, float]
    # What the invocation that finished the round sampled and scored itself: after a kill,
    # what an earlier one stored is not sampled or scored again (0 here if it was all stored).
    sampled_here: int = 0
    scored_here: int = 0


@quiet()
def distill(cfg: DistillConfig, echo: Callable[[str], None] | None = None,
            callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run (or resume) every round; returns OUT/distill.json's content. `callbacks` are
    TrainerCallbacks added to every round's training (tests interrupt a run with one)."""
    require_train_extra()
    import torch

    echo = echo_or_log(echo)
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _state(out, cfg)
    prompts = split_prompts(cfg.db, cfg.prompts, cfg.holdout, cfg.seed)
    prompts.split.save(out / "split.json")
    echo(f"prompts: {len(prompts.train)} to train on, {len(prompts.split.heldout_ids)} held-out "
         "answers (their prompts are never sampled)")
    previous = _round_zero(cfg, out, prompts, echo)
    scorer = _local_scorer(cfg, previous)
    for r in range(1, cfg.rounds + 1):
        done = out / f"round-{r}" / CONFIG_FILE
        if done.exists() and len(state["rounds"]) >= r:
            previous = out / f"round-{r}"
            continue
        result = _round(cfg, r, previous, prompts, scorer, echo, callbacks)
        state["rounds"] = [*state["rounds"][: r - 1], asdict(result)]
        state["final"] = str(out / f"round-{r}")
        (out / STATE_FILE).write_text(json.dumps(state, indent=1))
        previous = out / f"round-{r}"
    state["teacher_tokens"] = sum(x["teacher_tokens"] for x in state["rounds"])
    (out / STATE_FILE).write_text(json.dumps(state, indent=1))
    return state


def _check(cfg: DistillConfig) -> None:
    from .kd import KD_LOSSES
    from .prune import PRUNE_BY, parse_spec

    if cfg.loss not in KD_LOSSES:
        raise StudentError(f"--loss {cfg.loss!r}: expected one of {', '.join(KD_LOSSES)}")
    if cfg.prune_by not in PRUNE_BY:
        raise StudentError(f"--prune-by {cfg.prune_by!r}: expected one of {', '.join(PRUNE_BY)}")
    if cfg.rounds < 1 or cfg.steps < 1 or cfg.samples < 1:
        raise StudentError("--rounds, --steps and --samples must be at least 1")
    if cfg.logprobs < 1:
        raise StudentError("--logprobs must be at least 1: the KD losses compare the teacher's top-K")
    if parse_spec(cfg.student) is None and not (Path(cfg.student) / "config.json").exists():
        raise StudentError(f"--student {cfg.student!r}: expected prune:K or a model directory (with "
                           "config.json), e.g. an off-policy `synthgen train` output to warm-start from")


def _state(out: Path, cfg: DistillConfig) -> dict[str, Any]:
    """OUT/distill.json: refuses to resume a directory made with other settings."""
    path = out / STATE_FILE
    config = asdict(cfg)
    if path.exists():
        state = json.loads(path.read_text())
        changed = sorted(k for k in config if k not in HOW and state["config"].get(k) != config[k])
        if changed:
            raise StudentError(f"{out} was distilled with other settings ({', '.join(changed)}): "
                               "run the same command to resume, or pass another --out")
        state["config"] = config
        return state
    state = {"config": config, "rounds": [], "final": None}
    path.write_text(json.dumps(state, indent=1))
    return state


def _round_zero(cfg: DistillConfig, out: Path, prompts: Prompts, echo: Callable[[str], None]) -> Path:
    """The starting student's directory: a warm-start directory as given, or prune:K cut
    from the teacher (block influence on the training prompts' stored answers) and saved."""
    from .prune import parse_spec, pruned_student
    from .reference import load_teacher

    k = parse_spec(cfg.student)
    if k is None:
        return Path(cfg.student)
    zero = out / "round-0"
    if (zero / CONFIG_FILE).exists():
        return zero
    teacher = load_teacher(cfg.teacher_model)
    from .presets import prepare_tokenizer

    prepare_tokenizer(teacher.tokenizer)
    student, pruning = pruned_student(teacher, k, cfg.prune_by, prompts.influence_ids(teacher.tokenizer))
    echo(f"round 0: kept layers {pruning.kept} of {pruning.layers} ({cfg.prune_by})")
    student.model.save_pretrained(str(zero))
    student.tokenizer.save_pretrained(str(zero))
    run = {"config": asdict(_train_config(cfg, 0, Path(cfg.student))), "pruning": pruning.to_dict()}
    (zero / CONFIG_FILE).write_text(json.dumps(run, indent=1, default=str))
    return zero


def _local_scorer(cfg: DistillConfig, student_dir: Path) -> Any:
    """The local teacher, loaded once for every round, after checking it shares the
    student's tokenizer; a served teacher is checked the way `score` checks it (it can
    score, its tokenizer is the student's), both before anything is sampled."""
    if cfg.teacher != [LOCAL]:
        check_teacher(ScoreConfig(db=cfg.db, teacher=cfg.teacher, k=cfg.logprobs, model=cfg.served_model,
                                  tokenizer=str(student_dir)))
        return None
    from transformers import AutoTokenizer

    from ..scoring.local import load_local

    scorer = load_local(cfg.teacher_model)
    same_tokenizer(AutoTokenizer.from_pretrained(str(student_dir)), scorer.tokenizer, "the teacher")
    return scorer


def _round(cfg: DistillConfig, r: int, previous: Path, prompts: Prompts, scorer: Any,
           echo: Callable[[str], None], callbacks: list[Any] | None) -> RoundResult:
    here = Path(cfg.out) / f"round-{r}"
    here.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    batch = round_prompts(prompts, r, cfg.prompts_per_round, cfg.seed)
    source = here / "prompts.jsonl"
    if not source.exists():  # the same file on every rerun: its plan is reused, nothing re-sampled
        tmp = source.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"messages": m, "opd_round": r}) + "\n" for m in batch))
        tmp.replace(source)
    options = SampleOptions(batch_size=cfg.sample_batch, label=f"{Path(cfg.out).name}/round-{r - 1}")
    sampled = sample(previous, cfg.db, options=options, input=source, n=cfg.samples,
                     max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed + r, logprobs=0)
    if sampled.status == "interrupted":
        raise KeyboardInterrupt
    name = sampled.model
    seconds["sample"] = time.monotonic() - t0
    echo(f"round {r}: {sampled.answered} rollouts sampled ({sampled.already_done} already stored) "
         f"by {name}")
    t0 = time.monotonic()
    written = f"request_id IN (SELECT request_id FROM requests WHERE model = {quoted(name)})"
    scored = score(ScoreConfig(db=cfg.db, teacher=cfg.teacher, k=cfg.logprobs, model=cfg.served_model,
                               teacher_model=cfg.teacher_model, where=written, retry_failed=True,
                               tokenizer=None if scorer is not None else str(previous)),
                   local_scorer=scorer)
    if scored.status == "interrupted":
        raise KeyboardInterrupt
    if scored.pending:
        raise StudentError(f"round {r}: {scored.pending} rollouts are not scored ({scored.failed} failed "
                           "this time, see score_failures); run the same command again to score them")
    seconds["score"] = time.monotonic() - t0
    echo(f"round {r}: {scored.scored} rollouts scored ({scored.already_scored} already) by {scored.teacher}")
    t0 = time.monotonic()
    records, teacher_tokens = _records(cfg, scored.teacher, name, previous)
    saved = here / CONFIG_FILE  # trained, then killed before the round was recorded
    fitted = (json.loads(saved.read_text()) if saved.exists()
              else _train(cfg, r, previous, records, echo, callbacks))
    seconds["train"] = time.monotonic() - t0
    con = connect(cfg.db, read_only=True)
    try:
        made = rollout_counts(con, name)
    finally:
        con.close()
    return RoundResult(r, name, len(batch), made["answers"], made["tokens"], len(records),
                       teacher_tokens, fitted["steps"], fitted["train_loss"],
                       {k: round(v, 1) for k, v in seconds.items()}, sampled.answered, scored.scored)


def _records(cfg: DistillConfig, teacher: str, model: str, student_dir: Path) -> tuple[list[dict], int]:
    """Training examples from the student's own sampled ids, with the teacher's top-K at
    every answer position: no re-tokenizing, so each target sits exactly where it was scored."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(student_dir))
    con = connect(cfg.db, read_only=True)
    try:
        rows = scored_rollouts(con, teacher, cfg.logprobs, model)
    finally:
        con.close()
    records, tokens = [], 0
    for _, messages, _, entries in rows:
        prompt = chat_ids(tok, json.loads(messages))
        answer = [int(e["id"]) for e in entries]
        tokens += len(answer)
        ids = (prompt + answer)[: cfg.max_length]
        at = [len(prompt) + j for j in range(len(answer)) if len(prompt) + j < len(ids)]
        if not at:
            continue
        records.append({
            "input_ids": ids, "labels": [IGNORE] * len(prompt) + answer[: len(ids) - len(prompt)],
            "kd_pos": at,
            "kd_ids": [[int(a["id"]) for a in entries[p - len(prompt)]["top_logprobs"]] for p in at],
            "kd_lps": [[float(a["logprob"]) for a in entries[p - len(prompt)]["top_logprobs"]] for p in at],
            "kd_t": 1.0,  # scores are the teacher's raw (temperature-1) distribution
        })
    if not records:
        raise StudentError(f"no scored rollouts of {model} to train on")
    return records, tokens


def _train_config(cfg: DistillConfig, r: int, previous: Path) -> TrainConfig:
    from .prune import parse_spec
    from .reference import teacher_path

    teacher_model = cfg.teacher_model
    if teacher_model is None and (cfg.teacher == [LOCAL] or parse_spec(cfg.student) is not None):
        teacher_model = str(teacher_path(None))  # eval compares with the teacher it knows
    return TrainConfig(db=cfg.db, out=str(Path(cfg.out) / f"round-{r}"), student=str(previous),
                       teacher_model=teacher_model, kd=True, kd_weight=1.0, kd_loss=cfg.loss,
                       jsd_beta=cfg.jsd_beta, max_steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                       max_length=cfg.max_length, holdout=0.0, seed=cfg.seed + r, threads=cfg.threads,
                       save_steps=cfg.save_steps, logging_steps=max(1, cfg.steps // 10))


def _train(cfg: DistillConfig, r: int, previous: Path, records: list[dict],
           echo: Callable[[str], None], callbacks: list[Any] | None) -> dict[str, Any]:
    """Round r's training from round r-1's weights; saves OUT/round-r as `synthgen train` would."""
    import shutil

    from .presets import load_student, prepare_tokenizer

    tcfg = _train_config(cfg, r, previous)
    student = load_student(str(previous))
    prepare_tokenizer(student.tokenizer)
    started = time.time()
    fitted = fit(tcfg, student.model, student.tokenizer, records, True, echo, callbacks)
    here = Path(tcfg.out)
    fitted.model.save_pretrained(str(here))
    student.tokenizer.save_pretrained(str(here))
    shutil.copyfile(Path(cfg.out) / "split.json", here / "split.json")  # eval: the distill's held-out rows
    (here / "query.sql").write_text(cfg.prompts + "\n")
    summary = {
        "config": asdict(tcfg), "student_kind": "opd", "kd_used": True, "pruning": None,
        "opd": {"round": r, "loss": cfg.loss, "rows": len(records)},
        "parameters": sum(p.numel() for p in fitted.model.parameters()),
        "train_rows": len(records), "heldout_rows": 0, "steps": fitted.result.global_step,
        "train_loss": fitted.result.training_loss, "history": fitted.progress.history,
        "seconds": round(time.time() - started, 1),
    }
    (here / CONFIG_FILE).write_text(json.dumps(summary, indent=1, default=str))
    shutil.rmtree(here / "checkpoints", ignore_errors=True)
    echo(f"round {r}: saved {here} ({fitted.result.global_step} steps, "
         f"loss {fitted.result.training_loss:.4f})")
    return summary


__all__ = ["DistillConfig", "RoundResult", "distill", "load_sampler"]
