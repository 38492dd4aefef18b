"""`synthgen distill`: a thin click layer over student/opd.py.

Progress goes to stderr, one line per round phase and per logging step; the summary of
every round to stderr at the end (`--json`: OUT/distill.json on stdout).
"""

from __future__ import annotations

import json

import click

from ..student.deps import require_train_extra
from ..student.rows import DEFAULT_QUERY


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="The store.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Where every round's student is saved (OUT/round-R); rerun to resume.")
@click.option("--student", required=True, metavar="DIR|prune:K",
              help="The starting student: the teacher cut to K layers, or a model directory (a warm "
                   "start, e.g. an off-policy `synthgen train --kd` output).")
@click.option("--teacher", "teachers", multiple=True, required=True, metavar="URL|local",
              help="Who scores the student's tokens: a served teacher's base URL (vLLM), or `local` "
                   "(its weights in this process).")
@click.option("--rounds", type=int, default=4, show_default=True,
              help="Rounds of sample, score, train; rerun with more to go on from the last.")
@click.option("--prompts", "prompts_sql", default=DEFAULT_QUERY, metavar="SQL",
              help="The prompts: SQL over the store returning `messages` [default: the teacher's "
                   "finished answers, as `synthgen train` reads them]; the held-out share is never sampled.")
@click.option("--teacher-model", default=None, metavar="DIR|FILE.gguf",
              help="The local teacher's weights, and what prune:K cuts [default: the bundled teacher].")
@click.option("--model", "served_model", default=None,
              help="A served teacher's model name [default: the server's only one].")
@click.option("--prune-by", type=click.Choice(["influence", "even"]), default="influence", show_default=True)
@click.option("--loss", type=click.Choice(["reverse", "forward", "jsd"]), default="reverse",
              show_default=True, help="The divergence to the teacher's top-K at every sampled position.")
@click.option("--jsd-beta", type=float, default=0.5, show_default=True)
@click.option("--logprobs", type=click.IntRange(1, 100), default=20, show_default=True,
              help="The teacher's top-K scored at each position.")
@click.option("--samples", type=int, default=1, show_default=True, help="Rollouts per prompt per round.")
@click.option("--prompts-per-round", type=int, default=None,
              help="Training prompts sampled per round [default: all of them].")
@click.option("--steps", type=int, default=60, show_default=True, help="Optimizer steps per round.")
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--max-tokens", type=int, default=128, show_default=True, help="Tokens per rollout.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Of the rollouts.")
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Held-out share of prompts.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sample-batch", type=int, default=8, show_default=True, help="Rollouts sampled together.")
@click.option("--threads", type=int, default=None, help="torch threads.")
@click.option("--save-steps", type=int, default=20, show_default=True,
              help="Training checkpoints (what a killed round resumes from).")
@click.option("--json", "as_json", is_flag=True, help="Print OUT/distill.json on stdout at the end.")
def distill_command(db: str, out: str, student: str, teachers: tuple[str, ...], rounds: int,
                    prompts_sql: str, as_json: bool, **options: object) -> None:
    """On-policy distillation: the student samples, the teacher scores its tokens, the
    student trains on them; every rollout and score stored once in the store.

    Kill it at any point and run the same command again: nothing stored is sampled or
    scored again, and training resumes from its last checkpoint.
    """
    require_train_extra()
    from ..student.opd import DistillConfig, distill

    cfg = DistillConfig(db=db, out=out, student=student, teacher=list(teachers), rounds=rounds,
                        prompts=prompts_sql, **options)  # type: ignore[arg-type]
    state = distill(cfg, echo=_echo)
    for r in state["rounds"]:
        _echo(f"round {r['round']}: {r['rollouts']} rollouts ({r['rollout_tokens']:,} tokens), "
              f"{r['teacher_tokens']:,} tokens scored by the teacher, {r['steps']} steps, "
              f"loss {r['train_loss']:.4f}")
    _echo(f"final student: {state['final']} ({state['teacher_tokens']:,} teacher-scored tokens in all); "
          f"evaluate it with: synthgen eval --db {db} --model {state['final']}")
    if as_json:
        click.echo(json.dumps(state))
