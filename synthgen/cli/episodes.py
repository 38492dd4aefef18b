"""`synthgen episodes`: tool-use episodes, the teacher's tool calls run in a sandbox."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from .generate import run_rounds


@click.command()
@click.option("--input", "seeds", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Seeds, one episode each: JSONL/CSV/Parquet rows with a 'prompt' or 'messages'.")
@click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The DuckDB store.")
@click.option("--tools", "tools_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The tools, a JSON list of OpenAI tool schemas [default: one tool, 'python', run in "
                   "the sandbox]. From the command line only 'python' runs; the Python API "
                   "(synthgen.episodes.episodes, run_tool=) runs any.")
@click.option("--max-steps", type=click.IntRange(min=1), default=4,
              help="Teacher turns per episode, at most.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the episodes here (JSONL, {'messages', 'tools'} per episode: TRL's "
                   "tool-calling format) once every step is stored.")
@click.option("--model", help="Model name the teacher serves.")
@click.option("--base-url", "base_urls", multiple=True,
              help="The teacher's OpenAI-compatible endpoint; without it the bundled teacher.")
@click.option("--api-key-env", help="Environment variable holding the teacher's API key.")
@click.option("--temperature", type=float, help="The teacher's sampling temperature.")
@click.option("--max-tokens", type=int, help="The longest teacher turn, in tokens.")
@click.option("--concurrency", help="Requests in flight, or 'auto'.")
@click.option("--max-attempts", type=int, help="Attempts per request before it fails.")
@click.option("--progress-interval", type=float,
              help="Seconds between progress lines when not on a terminal (default 10).")
def episodes(seeds: Path, db: Path, tools_file: Path | None, max_steps: int, out: Path | None,
             progress_interval: float | None, **flags) -> None:
    """Let the teacher call tools until it answers, each seed an episode; every call runs
    sandboxed, and its result (or its error) goes back to the teacher.

    Every teacher turn is stored once in --db, every tool result once: kill it anywhere
    and run the same command again; nothing is sent or run twice.
    """
    from ..episodes import PYTHON_TOOL
    from ..episodes import episodes as run_episodes

    tools = [PYTHON_TOOL]
    if tools_file is not None:
        try:
            tools = orjson.loads(tools_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise click.ClickException(f"--tools {tools_file}: cannot read it as JSON ({exc})") from None
    teacher = {k: flags[k] for k in ("model", "api_key_env", "temperature", "max_tokens", "concurrency",
                                     "max_attempts")}
    teacher["base_urls"] = list(flags["base_urls"]) or None
    summary = run_rounds(lambda announce, **shown: run_episodes(
        seeds, db, tools, max_steps=max_steps, teacher=teacher, out=out, announce=announce, **shown),
        progress_interval)
    click.echo(f"{summary.episodes:,} episodes, {summary.answered:,} answered; {summary.tool_calls:,} tool "
               f"calls ({summary.tool_errors:,} failed: their errors went back to the teacher)"
               + (f"; written to {out}" if out is not None else ""), err=True)
