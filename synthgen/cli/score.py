"""`synthgen score`: a thin click layer over scoring.score().

Progress lines and the summary go to stderr; `--json` prints the summary as one JSON
object on stdout.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict

import click

from ..errors import RunAborted
from ..scoring.score import MAX_K, ScoreConfig, ScoreSummary, score
from ..student.deps import require_train_extra


@click.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="The store.")
@click.option("--teacher", "teachers", multiple=True, required=True, metavar="URL|local",
              help="A served teacher's OpenAI-compatible base URL (vLLM; repeat for replicas), "
                   "or `local`: the teacher's weights in this process (transformers).")
@click.option("--where", default=None,
              help="A condition on corpus's columns choosing the answers to score [default: all].")
@click.option("--logprobs", "k", type=click.IntRange(0, MAX_K), default=20, show_default=True,
              help="The teacher's top-K alternatives stored at each position (0: only each "
                   "token's own logprob).")
@click.option("--model", default=None, help="The served model's name [default: the server's only one].")
@click.option("--teacher-model", default=None, metavar="DIR|FILE.gguf",
              help="`local`: the teacher's weights [default: the bundled teacher].")
@click.option("--tokenizer", default=None, metavar="DIR|FILE.gguf",
              help="The tokenizer the answers and the teacher share [default: the local teacher's].")
@click.option("--form", type=click.Choice(["prompt_logprobs", "echo"]), default=None,
              help="How a served teacher is asked [default: the first the server answers].")
@click.option("--concurrency", type=int, default=None, help="Requests in flight [default: 16; local 2].")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds per attempt.")
@click.option("--max-attempts", type=int, default=5, show_default=True)
@click.option("--retry-failed", is_flag=True, help="Send again what earlier runs filed as failed.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the served teacher's API key (never stored).")
@click.option("--progress-interval", type=float, default=10.0, show_default=True,
              help="Seconds between progress lines on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def score_command(db: str, teachers: tuple[str, ...], where: str | None, k: int, model: str | None,
                  teacher_model: str | None, tokenizer: str | None, form: str | None,
                  concurrency: int | None, timeout: float, max_attempts: int, retry_failed: bool,
                  api_key_env: str, progress_interval: float, as_json: bool) -> None:
    """Score stored answers with a teacher: its log-probability of every answer token.

    Each result is stored once in `scores` (one per answer, teacher and K) beside the
    answer, in the logprobs layout generation uses; `scored` joins them to corpus. Run the
    same command again to resume: nothing stored is sent again.
    """
    cfg = ScoreConfig(db=db, teacher=list(teachers), where=where, k=k, model=model,
                      teacher_model=teacher_model, tokenizer=tokenizer, form=form,
                      concurrency=concurrency, timeout=timeout, max_attempts=max_attempts,
                      retry_failed=retry_failed, api_key_env=api_key_env)
    require_train_extra()  # transformers: the tokenizer, and the local teacher's weights
    try:
        summary = score(cfg, progress=sys.stderr, progress_interval=progress_interval)
    except RunAborted as exc:
        click.echo(f"stopped: {exc}\nThe store is consistent; resume with:\n  {_again()}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(asdict(summary)))
    else:
        click.echo(describe(summary), err=True)
    if summary.status == "interrupted":
        click.echo(f"Interrupted with {summary.pending:,} answers to score. Resume with:\n  {_again()}",
                   err=True)
        sys.exit(130)


def describe(s: ScoreSummary) -> str:
    """The summary in one line."""
    how = f" ({s.form})" if s.form else ""
    parts = [f"scored {s.scored:,} answers ({s.tokens:,} tokens) with {s.teacher}{how}, top-{s.k}"]
    if s.already_scored:
        parts.append(f"{s.already_scored:,} already scored")
    if s.failed:
        parts.append(f"{s.failed:,} failed (see score_failures; --retry-failed sends them again)")
    if s.no_text:
        parts.append(f"{s.no_text:,} without text (not scorable)")
    parts.append(f"{s.pending:,} pending")
    parts.append(f"{s.elapsed:.1f}s")
    return "; ".join(parts)


def _again() -> str:
    return "synthgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
