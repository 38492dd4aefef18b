"""`synthgen train` and `synthgen eval`: a thin click layer over train.py and evaluate.py.

Progress and reports go to stderr; `eval --json` prints exactly one JSON object on
stdout. torch is imported only once a command runs, after the extra is checked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..student.deps import StudentError, require_train_extra


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="The store.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model directory.")
@click.option("--query", default=None, help="SQL choosing the rows (default: corpus, stop).")
@click.option(
    "--student", default="tiny", show_default=True, help="tiny, prune:K, an HF dir or a .gguf."
)
@click.option(
    "--prune-by",
    type=click.Choice(["influence", "even"]),
    default="influence",
    show_default=True,
    help="prune:K keeps the K layers of most block influence, or K evenly spaced.",
)
@click.option(
    "--teacher-model",
    default=None,
    help="Teacher DIR or FILE.gguf that prune:K cuts and eval compares with [default: bundled].",
)
@click.option("--lora", is_flag=True, help="Train LoRA adapters instead of all weights.")
@click.option("--lora-rank", default=16, show_default=True)
@click.option("--merge-lora", is_flag=True, help="Merge the adapters into the saved model.")
@click.option("--kd", is_flag=True, help="Add sparse KL to the teacher's stored top-K logprobs.")
@click.option("--kd-weight", default=0.5, show_default=True, help="KD share of the loss.")
@click.option("--temperature", default=1.0, show_default=True, help="KD temperature.")
@click.option(
    "--kd-loss",
    type=click.Choice(["forward", "reverse", "jsd"]),
    default="forward",
    show_default=True,
    help="KL(teacher||student), KL(student||teacher) or GKD's generalized JSD.",
)
@click.option("--jsd-beta", default=0.5, show_default=True, help="The JSD's teacher weight.")
@click.option("--epochs", type=float, default=None, help="Epochs (default 3).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (instead of epochs).")
@click.option("--lr", type=float, default=None, help="Learning rate [default: 1e-3; 3e-4 for prune:K].")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option(
    "--overflow",
    type=click.Choice(["truncate", "drop"]),
    default="truncate",
    show_default=True,
    help="What to do with rows over --max-length.",
)
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Held-out share.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads (1 beside a teacher).")
@click.option("--save-steps", type=int, default=100, show_default=True)
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute activations in the backward pass: less memory for a large student, "
                   "more compute (TRL's default; off here).")
@click.option("--with-reasoning", is_flag=True,
              help="Train on the teacher's reasoning too (the `reasoning` column), rendered by "
                   "the student's chat template (<think>...</think> where it has no field for it).")
@click.option("--preview", is_flag=True, help="Show one tokenized example, trained tokens marked.")
@click.option(
    "--compare-kd",
    is_flag=True,
    help="Train SFT-only and SFT+KD into OUT/sft and OUT/kd, then print the eval table.",
)
def train(**opts: Any) -> None:
    """Train a student on teacher answers chosen by SQL."""
    require_train_extra()
    from ..student.train import TrainConfig, preview_text
    from ..student.train import train as run_train

    preview, compare = opts.pop("preview"), opts.pop("compare_kd")
    if opts["epochs"] is not None and opts["max_steps"] is not None:
        raise StudentError("give --epochs or --max-steps, not both")
    if opts["epochs"] is None and opts["max_steps"] is None:
        opts["epochs"] = 3.0
    cfg = TrainConfig(**opts)
    if preview:
        click.echo(preview_text(cfg, color=sys.stdout.isatty()))
        return
    if compare:
        from ..student.compare import compare_kd

        click.echo(compare_kd(cfg, _echo))
        return
    run_train(cfg, _echo)


@click.command("eval")
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="The store.")
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="The trained student directory (with --served: only its split.json, for the "
              "held-out rows).")
@click.option("--served", "served_url", default=None, metavar="URL",
              help="Score the model this llama.cpp server serves, through its logprobs, instead "
              "of a directory.")
@click.option("--query", default=None, help="Rows to evaluate (prompts not trained on).")
@click.option("--gen-rows", type=int, default=8, show_default=True, help="Rows for ROUGE-L.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option(
    "--teacher-model",
    default=None,
    help="Teacher DIR or FILE.gguf to compare with [default: the run's, bundled for tiny].",
)
@click.option("--no-teacher", is_flag=True, help="Skip the teacher comparison.")
@click.option(
    "--speed-tokens",
    type=int,
    default=32,
    show_default=True,
    help="New tokens per prompt when timing decode speed (0: skip).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(
    db: str,
    model_dir: str,
    query: str | None,
    gen_rows: int,
    max_new_tokens: int,
    teacher_model: str | None,
    no_teacher: bool,
    speed_tokens: int,
    as_json: bool,
    served_url: str | None,
) -> None:
    """Evaluate a trained student, its untrained self and the teacher on held-out answers."""
    if served_url is not None:
        _eval_served(db, served_url, model_dir, query, as_json)
        return
    require_train_extra()
    from ..student.evaluate import evaluate

    if model_dir is None:
        raise click.UsageError("give --model DIR (a trained student) or --served URL (a served model)")
    if not Path(model_dir).is_dir():
        raise StudentError(f"{model_dir}: no such model directory")
    if speed_tokens < 0:
        raise StudentError(f"--speed-tokens must be 0 or more, got {speed_tokens}")
    result = evaluate(
        db,
        model_dir,
        query,
        gen_rows,
        max_new_tokens,
        echo=_echo,
        teacher_model=teacher_model,
        with_teacher=not no_teacher,
        speed_tokens=speed_tokens,
    )
    if as_json:
        click.echo(json.dumps(result))
    else:
        from ..student.compare import report

        click.echo(report(result))


def _eval_served(db: str, url: str, split_dir: str | None, query: str | None, as_json: bool) -> None:
    """`eval --served`: no torch needed, the server computes."""
    from ..student.served import evaluate_served, report

    if split_dir is not None and not Path(split_dir).is_dir():
        raise StudentError(f"--model {split_dir}: no such model directory")
    result = evaluate_served(db, url, split_dir, query, echo=_echo)
    click.echo(json.dumps(result) if as_json else report(result))
