"""`synthgen converse`: multi-turn conversations, the teacher against a simulated user."""

from __future__ import annotations

from pathlib import Path

import click

from .generate import run_rounds


@click.command()
@click.option("--input", "seeds", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Seeds, one conversation each: JSONL/CSV/Parquet rows with a 'prompt' or 'messages'.")
@click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The DuckDB store.")
@click.option("--turns", type=click.IntRange(min=1), default=3,
              help="Assistant turns per conversation, at most.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the conversations here (JSONL, one {'messages': [...]} per conversation: "
                   "TRL's chat format) once every turn is stored.")
@click.option("--persona", type=click.Path(path_type=Path, dir_okay=False),
              help="The user simulator's system prompt (a text file) [default: a curious user who "
                   "asks follow-ups and writes [END] when done].")
@click.option("--model", help="Model name the teacher serves.")
@click.option("--base-url", "base_urls", multiple=True,
              help="The teacher's OpenAI-compatible endpoint; without it the bundled teacher.")
@click.option("--api-key-env", help="Environment variable holding the teacher's API key.")
@click.option("--temperature", type=float, help="The teacher's sampling temperature.")
@click.option("--max-tokens", type=int, help="The longest assistant turn, in tokens.")
@click.option("--logprobs", type=click.IntRange(min=0, max=20),
              help="Keep the teacher's top-K log-probabilities of every assistant turn (for KD on "
                   "conversations); the user simulator's turns keep none.")
@click.option("--concurrency", help="Requests in flight, or 'auto'.")
@click.option("--max-attempts", type=int, help="Attempts per request before it fails.")
@click.option("--price-in", type=float, help="Teacher's $ per million prompt tokens.")
@click.option("--price-out", type=float, help="Teacher's $ per million answer tokens.")
@click.option("--user-model", help="The user simulator's model [default: the teacher's].")
@click.option("--user-base-url", "user_base_urls", multiple=True,
              help="The user simulator's endpoint [default: the teacher's].")
@click.option("--user-api-key-env", help="Environment variable holding the user simulator's API key.")
@click.option("--user-temperature", type=float, default=1.0, help="The user simulator's temperature.")
@click.option("--user-max-tokens", type=int, default=128, help="The longest user turn, in tokens.")
@click.option("--progress-interval", type=float,
              help="Seconds between progress lines when not on a terminal (default 10).")
def converse(seeds: Path, db: Path, turns: int, out: Path | None, persona: Path | None,
             progress_interval: float | None, **flags) -> None:
    """Grow each seed into a conversation of up to --turns assistant turns, a simulated
    user writing the turns between.

    Every turn is a request stored once in --db: kill it anywhere and run the same command
    again; nothing answered is sent again.
    """
    from ..converse import USER_PERSONA
    from ..converse import converse as run_conversations

    teacher = {k: flags[k] for k in ("model", "api_key_env", "temperature", "max_tokens", "concurrency",
                                     "max_attempts", "price_in", "price_out", "logprobs")}
    teacher["base_urls"] = list(flags["base_urls"]) or None
    user = {"model": flags["user_model"], "api_key_env": flags["user_api_key_env"],
            "base_urls": list(flags["user_base_urls"]) or None, "temperature": flags["user_temperature"],
            "max_tokens": flags["user_max_tokens"]}
    try:
        said = persona.read_text(encoding="utf-8") if persona is not None else USER_PERSONA
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"--persona {persona}: cannot read it ({exc})") from None
    summary = run_rounds(lambda announce, **shown: run_conversations(
        seeds, db, turns=turns, persona=said, teacher=teacher, user=user, out=out, announce=announce,
        **shown), progress_interval)
    click.echo(f"{summary.conversations:,} conversations, {summary.turns:,} assistant turns stored "
               f"({summary.ended_by_user:,} ended by the user, {summary.ended_by_failure:,} by a failed turn)"
               + (f"; written to {out}" if out is not None else ""), err=True)
