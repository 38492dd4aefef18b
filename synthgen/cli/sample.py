"""`synthgen student sample`: a thin click layer over student/sample.py.

Progress lines and the summary go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..student.deps import require_train_extra


@click.command("sample")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="The student: a model directory (synthgen train or distill output).")
@click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False), help="The store.")
@click.option("--input", "input_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Prompts: .jsonl (prompt or messages per line), .csv or .parquet.")
@click.option("--input-sql", help="A DuckDB query over the store whose rows are the prompts.")
@click.option("--template", help="Render prompts/NAME.jinja (or .yaml) with each row's fields.")
@click.option("--n", type=int, default=1, show_default=True, help="Answers per prompt.")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True, help="0: greedy.")
@click.option("--top-p", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--logprobs", type=click.IntRange(0, 20), default=0, show_default=True,
              help="The student's own top-K stored per token (its sampled token's id and "
                   "logprob are always stored).")
@click.option("--label", default=None,
              help="The name its answers carry, student:LABEL@HASH [default: the directory's name].")
@click.option("--limit", type=int, default=None, help="Only the first N prompts.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Answers sampled together.")
@click.option("--threads", type=int, default=None, help="torch threads.")
@click.option("--progress-interval", type=float, default=10.0, show_default=True)
def sample_command(model_dir: str, db: Path, input_path: Path | None, input_sql: str | None,
                   template: str | None, n: int, max_tokens: int, temperature: float, top_p: float | None,
                   seed: int, logprobs: int, label: str | None, limit: int | None, batch_size: int,
                   threads: int | None, progress_interval: float) -> None:
    """The student answers prompts into the store, stored like any answer.

    Each answer's model is student:LABEL@HASH (the checkpoint that wrote it), with the id and
    the student's own logprob of every token it sampled: `synthgen score` then asks a teacher
    for its log-probabilities of exactly those tokens. Rerun to resume.
    """
    require_train_extra()
    from ..student.sample import SampleOptions, sample

    options = SampleOptions(batch_size=batch_size, threads=threads, label=label)
    summary = sample(model_dir, db, options=options, progress=sys.stderr, progress_interval=progress_interval,
                     input=input_path, input_sql=input_sql, template=template, n=n, max_tokens=max_tokens,
                     temperature=temperature, top_p=top_p, seed=seed, logprobs=logprobs, limit=limit)
    click.echo(f"{summary.answered:,} answers sampled by {summary.model} ({summary.already_done:,} already "
               f"stored, {summary.pending:,} pending) in {summary.elapsed:.1f}s", err=True)
    if summary.status == "interrupted":
        sys.exit(130)
