"""`synthgen run RECIPE --db FILE [--set key=value]`: every stage of a recipe, in order."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..hints import quote, synthgen_command
from . import options
from .generate import resume_hint, running
from .progress import announcer


@click.command("run")
@click.argument("recipe")
@click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The DuckDB store.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A recipe setting (prompts=8), or a stage's sampling key (answers.max_tokens=128). "
                   "Repeatable.")
@click.option("--model", help="Model name the teacher serves.")
@click.option("--base-url", "base_urls", multiple=True,
              help="OpenAI-compatible endpoint (repeat for replicas). Without it the bundled local "
                   "teacher is started once for all stages.")
@click.option("--api-key-env", help="Environment variable holding the API key (default OPENAI_API_KEY).")
@click.option("--skip-preflight", is_flag=True, default=None, help="Do not check the endpoints first.")
@click.option("--think-tags", metavar="OPEN,CLOSE|none",
              help="Inline reasoning between these tags is stored as the reasoning, in every stage "
                   "(a judge's JSON after it then fits) [default: '<think>,</think>'; 'none': off].")
@click.option("--concurrency", help="Requests in flight (default 64), or 'auto'.")
@click.option("--timeout", type=float, help="Seconds per attempt (default 600).")
@click.option("--max-attempts", type=int, help="Attempts per request before it fails (default 5).")
@click.option("--rpm", type=float, help="Requests per minute, client side.")
@click.option("--tpm", type=float, help="Tokens per minute, client side.")
@click.option("--retry-failed", is_flag=True, default=None, help="Send what failed in each stage again.")
@click.option("--budget", type=float,
              help="Dollars the whole recipe may spend, every stage and earlier run of the store "
                   "counted; sending stops before it could pass (needs --price-in/--price-out).")
@click.option("--length-retries", type=int,
              help="Retries of an answer max_tokens cut before it fit a stage's schema, at "
                   "temperature > 0 (default 1; none at temperature 0).")
@click.option("--threads", type=int, help="CPU threads of the bundled local teacher.")
@options.prices(", every stage")
@click.option("--prompts-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("prompts"),
              show_default=True, help="Where recipes and templates are looked up by name first.")
@click.option("--progress-interval", type=float,
              help="Seconds between progress lines when not on a terminal (default 10).")
@click.option("--dry-run", is_flag=True,
              help="Send nothing: plan the first generating stage into --db and print its requests, "
                   "tokens and cost online and in batch (later stages are made from its answers: "
                   "they are listed, not estimated).")
@click.option("--pilot", type=click.IntRange(min=1), metavar="N",
              help="With --dry-run: first answer N of the first stage's requests, and estimate the "
                   "rest from their measured output tokens.")
def run(recipe: str, db: Path, sets: tuple[str, ...], prompts_dir: Path, progress_interval: float | None,
        dry_run: bool, pilot: int | None, **options) -> None:
    """Run RECIPE (prompts/NAME.yaml, a built-in name, or a path) into --db.

    Each stage's rows become a view named after it. Kill it anywhere and run the same
    command again: it continues in the stage it was in, and no row is sent twice.
    """
    from ..recipes import find_recipe, load_recipe, run_recipe

    spec = load_recipe(find_recipe(recipe, prompts_dir), list(sets), prompts_dir)
    options["base_urls"] = list(options.pop("base_urls")) or None
    if pilot is not None and not dry_run:
        raise click.UsageError("--pilot N goes with --dry-run: it answers N requests of the first stage, "
                               "then estimates the rest")
    if dry_run:
        from .estimate import recipe_dry_run

        recipe_dry_run(spec, db, options, pilot or 0, progress_interval)
        return
    resume = resume_hint(sys.argv[1:])
    with running(progress_interval) as shown:
        summary = run_recipe(spec, db, options, announce=announcer(shown), **shown)
    if summary.status == "interrupted":
        click.echo(f"Interrupted in stage {summary.stages[-1].name}. Resume with:\n  {resume}", err=True)
        sys.exit(130)
    if summary.status == "empty":
        click.secho(f"recipe {spec.name}: {summary.message}", fg="red", err=True)
        click.echo(f"  every stage: {synthgen_command()} status --db {quote(str(db))}", err=True)
        sys.exit(1)
    last = summary.stages[-1].name
    click.echo(f"recipe {spec.name}: done in {summary.elapsed:.1f}s; {summary.stages[-1].kept:,} rows kept "
               f"in the last stage", err=True)
    click.echo(f"  see them: {synthgen_command()} sql --db {quote(str(db))} {quote(f'SELECT * FROM {last}')}",
               err=True)
    click.echo(f"  every stage: {synthgen_command()} status --db {quote(str(db))}", err=True)
    click.echo(f"  export them: {synthgen_command()} export --db {quote(str(db))} "
               f"--out {quote(Path(db).stem + '.jsonl')}", err=True)
