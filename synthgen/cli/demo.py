"""`synthgen demo`: the whole loop on a laptop, on the bundled teacher."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import TeacherError
from ..hints import quote, synthgen_command

# The demo's seeds and template ship inside the package (links to the checkout's
# data/seeds.jsonl and prompts/demo.jinja), so the demo runs from any directory.
DEMO_DIR = Path(__file__).resolve().parents[1] / "teacher" / "demo"
DEMO_SEEDS = DEMO_DIR / "seeds.jsonl"
DEMO_TEMPLATE = "demo"


def demo_file(name: str) -> Path:
    """A file the demo ships with; a clear error if this install lost it."""
    path = DEMO_DIR / name
    if not path.is_file():
        raise TeacherError(
            f"{path} is missing from this synthgen install; reinstall synthgen (or pass --input)"
        )
    return path



def _echo_err(message: str) -> None:
    click.echo(message, err=True)


DEMO_QUERY = """\
SELECT metadata->>'category' AS category,
       metadata->>'prompt' AS prompt,
       response,
       completion_tokens AS tokens,
       len(logprobs[1].top_logprobs) AS top_k
FROM corpus ORDER BY line LIMIT 5"""


@click.command()
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("demo.duckdb"),
    show_default=True,
    help="DuckDB file to write.",
)
@click.option("--limit", type=int, default=100, show_default=True, help="Seed prompts to answer.")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Answers per prompt (sampled at T=0.7): more distillation data from the same seeds.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Seed prompts (JSONL with `prompt`) [default: the ~340 bundled seeds].",
)
@click.option("--logprobs", type=int, default=5, show_default=True, help="Top logprobs stored per token.")
@click.option("--max-tokens", type=int, default=128, show_default=True)
@click.option("--threads", type=int, help="CPU threads for the teacher [default: all].")
def demo(
    db: Path, limit: int, samples: int, input_path: Path | None, logprobs: int, max_tokens: int,
    threads: int | None,
) -> None:
    """The whole loop on a laptop: bundled teacher -> answers in DuckDB -> SQL.

    Starts the bundled SmolLM2 teacher, answers LIMIT bundled seed prompts (SAMPLES
    times each) with top-LOGPROBS logprobs into DB, stops the teacher and shows a few rows.
    """
    from .. import generate
    from .progress import progress_options, show_library_messages
    from .store import sql

    # generate() starts the bundled teacher (its log shows here) once the input is checked,
    # and not at all when the store has every answer already
    with show_library_messages(), progress_options() as shown:
        summary = generate(
            **shown,
            input=input_path or demo_file("seeds.jsonl"),
            db=db,
            template=DEMO_TEMPLATE,
            prompts_dir=demo_file("demo.jinja").parent,
            limit=limit,
            n=samples,
            threads=threads,
            temperature=0.7,
            top_p=0.9,
            max_tokens=max_tokens,
            seed=0,
            logprobs=logprobs,
            logprobs_mode="raw",
        )
    done = (f"{summary.answered} answered, {summary.failed} failed in {summary.elapsed:.1f}s "
            f"({summary.requests_per_s:.2f} requests/s, {summary.completion_tokens} tokens); teacher stopped."
            if summary.answered or summary.failed else
            f"nothing left to answer: {db} holds all {summary.already_done} answers "
            "(no teacher was started).")
    _echo_err(
        f"{done} Rows below come from:\n"
        f"  {synthgen_command()} sql --db {quote(str(db))} {quote(' '.join(DEMO_QUERY.split()))}"
    )
    click.get_current_context().invoke(sql, db=db, fmt="table", max_rows=5, query=DEMO_QUERY)
