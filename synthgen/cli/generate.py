"""`synthgen generate`: flags (and an optional config file) -> GenerateConfig -> generate()."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from ..config import NOT_SENT, build_config, load_config_file
from ..errors import InputError, RunAborted
from ..hints import quote, synthgen_command
from ..pricing import unpriced
from ..run import RunSummary
from ..run import generate as run_generate
from ..urls import redact_argv
from . import options
from .progress import announcer, progress_options, show_library_messages


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict | None:
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"top_k\": 20}'")
    return data


class OrNotSent(click.ParamType):
    """A number, or 'none': send no value (the server's own default)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.name = f"{kind.__name__.upper()}|none"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, str) and value.strip().lower() == NOT_SENT:
            return NOT_SENT
        try:
            return self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number, nor 'none' (send no value)", param, ctx)


@click.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML or YAML file whose keys mirror these flags; flags override it.")
@click.option("--input", "input_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Prompts: .jsonl (prompt or messages per line), .csv or .parquet.")
@click.option("--input-sql", help="A DuckDB query whose rows are the prompts.")
@click.option("--template", help="Render prompts/NAME.jinja (or .yaml) with each row's fields.")
@click.option("--prompts-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where templates live.")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False), help="The DuckDB store.")
@click.option("--model", help="Model name the teacher serves.")
@click.option("--base-url", "base_urls", multiple=True,
              help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1. Repeat for "
                   "several replicas. Without it the bundled local teacher is started.")
@click.option("--api", help="The API the teacher speaks: openai (OpenAI and every OpenAI-compatible "
                            "server: vLLM, llama.cpp, gateways), anthropic (Messages API), or a "
                            "backend another package adds.")
@click.option("--api-key-env", help="Environment variable holding the API key (with --api anthropic: "
                                    "ANTHROPIC_API_KEY). The key is never stored.")
@click.option("--cache-prompt", is_flag=True, default=None,
              help="Ask the API to cache the prompt's shared prefix where it takes such a hint "
                   "(Anthropic: cache_control on the system prompt); cached tokens are priced apart.")
@click.option("--skip-preflight", is_flag=True, default=None,
              help="Do not check the endpoints, the key and the model name before sending.")
@click.option("--think-tags", metavar="OPEN,CLOSE|none",
              help="Reasoning the teacher writes inline in its answer between these tags is stored "
                   "as its reasoning, not its answer (also an answer that only closes the tag, as "
                   "R1 distills write) [default: '<think>,</think>'; 'none': the content as sent].")
@click.option("--concurrency", help="Requests in flight, or 'auto' (found by measurement).")
@click.option("--timeout", type=float, help="Seconds per attempt.")
@click.option("--max-attempts", type=int, help="Attempts per request before it fails; "
                                               "429s (rate limits) do not count, see --rate-limit-wait.")
@click.option("--rate-limit-wait", type=float,
              help="Seconds one request keeps waiting out 429s before it fails.")
@click.option("--budget", type=float,
              help="Dollars this store may spend in all (its earlier runs count): sending stops "
                   "before the spend could pass it, counting requests in flight at their worst "
                   "(max_tokens); the rest stays pending for a rerun with a larger budget. Needs "
                   "--price-in/--price-out.")
@click.option("--spend-per-window", metavar="USD/MIN",
              help="At most USD spent in any MIN minutes (e.g. 5/10), for providers that limit "
                   "dollars per window: requests wait for room.")
@click.option("--length-retries", type=int,
              help="Retries of an answer max_tokens cut before it fit --response-schema, at "
                   "temperature > 0 (default 1; at temperature 0 or with a seed: none, it would "
                   "be cut again). Each is paid.")
@click.option("--n", type=int, help="Samples per prompt.")
@click.option("--temperature", type=OrNotSent(float),
              help="Sampling temperature, sent with every request; 'none' sends none (the server's own).")
@click.option("--top-p", type=OrNotSent(float),
              help="Nucleus sampling, sent with every request; 'none' sends none.")
@click.option("--max-tokens", type=OrNotSent(int),
              help="Longest answer in tokens, sent with every request; 'none' sends none (a server may "
                   "then write to its context length). Answers it cuts are left out of export.")
@click.option("--seed", type=int, help="Seed for sample 0; sample k uses seed+k.")
@click.option("--stop", multiple=True, help="Stop sequence (repeatable).")
@click.option("--logprobs", type=int, help="Store the teacher's top-K logprobs per token.")
@click.option("--logprobs-mode", type=click.Choice(["raw", "processed"]),
              help="What the teacher's logprobs are, recorded for KD: raw (the model's own, before "
                   "temperature: llama.cpp, vLLM's default) or processed (after the request's "
                   "temperature: vLLM --logprobs-mode processed_logprobs) [default: raw for a "
                   "bundled teacher, else unknown].")
@click.option("--extra-body", callback=_json_object,
              help="JSON object merged into each request (vLLM's top_k, min_p, guided_json...).")
@click.option("--response-schema", type=click.Path(path_type=Path, dir_okay=False),
              help="JSON Schema file: every answer must be JSON that fits it (sent the way the "
                   "server wants it; a misfit is retried, then filed as 'schema').")
@click.option("--limit", type=int, help="Only the first N valid prompts.")
@click.option("--skip-invalid", is_flag=True, default=None,
              help="Record invalid input rows and go on with the valid ones.")
@click.option("--retry-failed", is_flag=True, default=None,
              help="Send the requests recorded in failures again.")
@click.option("--rpm", type=float, help="Requests per minute, client side.")
@click.option("--tpm", type=float, help="Tokens per minute, client side.")
@options.prices(" (for the cost)")
@click.option("--batch", is_flag=True, default=None,
              help="Send through the endpoint's Batch API (files + batches, answers within 24h, "
                   "at its discount) instead of one request at a time. Same plan, ids and store; "
                   "rerun the same command to re-attach after a stop.")
@click.option("--batch-discount", type=float,
              help="Batch price as a discount off the prices (default: the price table's, else 0.5; 0 "
                   "when the prices given are batch prices already).")
@click.option("--batch-poll-interval", type=float,
              help="Seconds before the first poll of a batch; doubles up to --batch-poll-max (default 15).")
@click.option("--batch-poll-max", type=float, help="Longest wait between polls, seconds (default 300).")
@click.option("--batch-max-requests", type=int, help="Requests per batch file (default and most: 50,000).")
@click.option("--batch-max-bytes", type=int, help="Bytes per batch file (default 200,000,000).")
@click.option("--threads", type=int, help="CPU threads of the bundled local teacher.")
@click.option("--progress-interval", type=float,
              help="Seconds between progress lines when not on a terminal (default 10).")
@click.option("-v", "--verbose", count=True, help="More detail in the summary.")
@click.option("--teacher", "teacher_name", metavar="NAME",
              help="Use the teacher `synthgen teacher start` recorded as NAME (its base URLs and "
                   "model), e.g. 'fleet' for a Ray fleet.")
@click.option("--teacher-state-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where --teacher looks [default: ~/.cache/synthgen/teachers].")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None,
              metavar="[ADDRESS]",
              help="Run --shards client actors on the Ray cluster at ADDRESS [default: the one "
                   "`ray start` made here, or RAY_ADDRESS, else a local one]. Needs the [ray] extra.")
@click.option("--shards", type=click.IntRange(min=1),
              help="With --ray: client processes, each sending a disjoint hash range of the pending "
                   "requests into its own shard store, folded into --db at the end.")
@click.option("--shard-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where the shard stores go [default: beside --db]; on a cluster, a directory "
                   "every node sees at the same path.")
@click.option("--keep-shards", is_flag=True,
              help="Keep the shard stores after they were folded into --db.")
@click.option("--dry-run", is_flag=True,
              help="Send nothing: plan the input into --db (the real run reuses the plan) and print "
                   "the pending requests, their prompt tokens, the output tokens (at most --max-tokens "
                   "each) and the cost online and through a Batch API.")
@click.option("--pilot", type=click.IntRange(min=1), metavar="N",
              help="With --dry-run: first answer N pending requests (spread over the input; sent "
                   "online and stored like any answer), and estimate the rest from their measured "
                   "output tokens.")
def generate(config_file: Path | None, progress_interval: float | None, teacher_name: str | None,
             teacher_state_dir: Path | None, ray_address: str | None, shards: int | None,
             shard_dir: Path | None, keep_shards: bool, dry_run: bool, pilot: int | None,
             **flags) -> None:
    """Send every prompt of the input to the teacher; store each answer once in --db.

    Running the same command again resumes: answered requests are never sent twice.
    """
    file_values = load_config_file(config_file) if config_file else {}
    overrides = {
        "input": flags.pop("input_path"),
        "base_urls": list(flags.pop("base_urls")) or None,
        "stop": list(flags.pop("stop")) or None,
        **flags,
    }
    if overrides["verbose"] == 0:
        overrides["verbose"] = None
    if not file_values.get("db") and not overrides.get("db"):
        # said as click says it for every other command (--db may come from --config here,
        # so click cannot require it itself)
        ctx = click.get_current_context()
        raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "db"))
    if teacher_name is not None:
        _use_recorded_teacher(overrides, file_values, teacher_name, teacher_state_dir)
    if (ray_address is None) != (shards is None):
        raise click.UsageError("--ray and --shards go together: --ray [ADDRESS] --shards N runs N "
                               "client actors on a Ray cluster (for a fleet of teachers, see "
                               "`synthgen teacher start --ray`)")
    cfg = build_config(file_values, overrides, str(config_file) if config_file else "flags")
    if pilot is not None and not dry_run:
        raise click.UsageError("--pilot N goes with --dry-run: it answers N requests, then estimates "
                               "the rest (the run itself is the same command without both)")
    if dry_run:
        from .estimate import dry_run as run_dry

        run_dry(cfg, pilot or 0, progress_interval)
        return
    resume = resume_hint(sys.argv[1:])
    with running(progress_interval) as shown:
        if shards is not None:
            from ..cluster.shards import generate_sharded

            summary = generate_sharded(
                cfg, shards=shards, address=None if ray_address == "auto" else ray_address,
                shard_dir=shard_dir, keep_shards=keep_shards,
                announce=lambda line: click.echo(line, err=True))
        else:
            summary = run_generate(cfg, **shown)
    # A remote teacher whose model has no price says so; the bundled one bills nothing
    prices = cfg.prices.describe() if cfg.prices.known else (unpriced(cfg.model) if cfg.base_urls else None)
    _print_summary(summary, cfg.verbose, cfg.db, prices)
    if summary.status == "aborted":  # a shard ended early; what it stored is in --db
        click.secho(f"stopped early: {summary.message}", fg="red", err=True)
        click.echo(f"The store is consistent ({summary.pending:,} requests pending). Resume with:\n"
                   f"  {resume}", err=True)
        sys.exit(3)
    if summary.status == "interrupted":
        click.echo(f"Interrupted with {summary.pending:,} requests pending. Resume with:\n  {resume}",
                   err=True)
        sys.exit(130)
    if summary.status == "cancelled":
        click.echo(f"A batch was cancelled: what it answered is stored, {summary.pending:,} requests "
                   f"stay pending. To send them after all:\n  {resume}", err=True)
        sys.exit(1)
    if summary.all_failed_alike:
        [(kind, count)] = summary.failed_by_kind.items()
        click.secho(f"every request of this run failed the same way ({kind}, {count:,}): most likely a "
                    "setting (the model name, a parameter the teacher refuses), not the prompts. "
                    "Fix it, then rerun with --retry-failed.", fg="red", err=True)
        sys.exit(1)
    if summary.pending:
        sys.exit(1)


def _use_recorded_teacher(overrides: dict, file_values: dict, name: str, state_dir: Path | None) -> None:
    """--teacher NAME: the base URLs and model `synthgen teacher start` recorded."""
    from ..teacher.paths import state_dir as default_state_dir
    from ..teacher.state import load

    if overrides.get("base_urls") or file_values.get("base_urls"):
        raise click.UsageError("give --teacher or --base-url, not both")
    states = state_dir or default_state_dir()
    record = load(states, name)
    if record is None:
        raise click.UsageError(f"--teacher {name}: no teacher of that name is recorded in {states} "
                               f"(start one with: {synthgen_command()} teacher start ... --name {name})")
    overrides["base_urls"] = record.base_urls
    if not overrides.get("model") and not file_values.get("model"):
        overrides["model"] = record.model
    given = overrides.get("logprobs_mode") or file_values.get("logprobs_mode")
    # What the server was started with (a record from before this field: llama.cpp is raw)
    served = record.logprobs_mode or ("raw" if record.backend == "local" else None)
    if served and not given:
        overrides["logprobs_mode"] = served


def resume_hint(argv: list[str]) -> str:
    """The command that resumes, runnable as printed unless it held a secret (shown ***)."""
    if not argv:
        return "the same command"
    shown = redact_argv(argv)
    hint = f"{synthgen_command()} {shlex.join(shown)}"
    if shown != argv:
        hint += "\n  (credentials in it are shown as ***: put yours back)"
    return hint


def _print_summary(s: RunSummary, verbose: int, db: Path | str, prices: str | None) -> None:
    lines = [
        f"run {s.run_id}: {s.status} in {s.elapsed:.1f}s, model {s.model}",
        f"  requests: {s.total:,} planned, {s.already_done:,} already done, "
        f"{s.answered:,} answered now, {s.failed:,} failed, {s.pending:,} pending"
        + (f", {s.invalid:,} invalid input rows skipped" if s.invalid else ""),
        *([f"  {s.duplicates:,} input lines repeat an earlier line's prompt: one request each, "
           "their own metadata is in duplicate_inputs"] if s.duplicates else []),
        f"  tokens: {s.prompt_tokens:,} in, {s.completion_tokens:,} out; "
        f"{s.requests_per_s:,.1f} requests/s",
    ]
    if s.batch:
        lines.append(f"  batches: {s.batches_submitted:,} submitted by this run, {s.batches_open:,} still "
                     "running at the API" + (" (they go on, and are paid for: the same command collects "
                                             "them, `synthgen batch cancel --db "
                                             f"{shlex.quote(str(db))}` cancels them)"
                                             if s.batches_open else ""))
    if s.cost is not None:
        lines.append(f"  estimated cost: ${s.cost:,.4f} (at {prices})")
    elif prices is not None and s.answered:
        lines.append(f"  cost: unknown: {prices}")
    if s.no_usage:
        lines.append(f"  {s.no_usage:,} answers came without token counts (usage): their tokens are not "
                     "in the counts" + (" or the cost, which is a lower bound" if s.cost is not None else ""))
    if s.errors:
        lines.append("  errors (attempts): " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.errors.items())))
    if s.failed:
        query = quote("SELECT error_type, message, count(*) AS n FROM failures GROUP BY ALL ORDER BY n DESC")
        lines.append(f"  see them: {synthgen_command()} sql --db {quote(str(db))} {query}")
    if verbose and s.plan_reused:
        lines.append("  (input unchanged since the last run: plan reused)")
    click.echo("\n".join(lines), err=True)


def run_rounds(call: Callable[..., Any], progress_interval: float | None) -> Any:
    """Run `call(announce, **reporting)` (converse, episodes: rounds of generate()) with the
    progress display; a bad input is a one-line error, an early stop says how to resume
    (exit 3), a Ctrl-C says so (exit 130). Returns `call`'s summary."""
    with running(progress_interval) as shown:
        summary = call(announcer(shown), **shown)
    if summary.status == "interrupted":
        click.echo(f"Interrupted. Resume with:\n  {resume_hint(sys.argv[1:])}", err=True)
        sys.exit(130)
    return summary


@contextlib.contextmanager
def running(progress_interval: float | None) -> Iterator[dict[str, Any]]:
    """Around a run (generate, a recipe, rounds of them): the progress display, whose
    options are yielded; a bad input is a one-line error, and an early stop says the store
    is consistent and how to resume (exit 3)."""
    try:
        with show_library_messages(), progress_options(progress_interval) as shown:
            yield shown
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    except RunAborted as exc:
        click.secho(f"stopped early: {exc}", fg="red", err=True)
        click.echo("The store is consistent. Fix the cause, then resume with:\n  "
                   + resume_hint(sys.argv[1:]), err=True)
        sys.exit(3)
