"""`synthgen batch ...`: the Batch API's batches of a store (status, cancel) and batch
files for elsewhere (write for `vllm run-batch`, ingest what it wrote)."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

import click
import orjson

from ..backends.think import parse_tags
from ..batch.control import batch_status, cancel_batches
from ..batch.offline import ingest_files, write_pending
from ..config import build_config, load_config_file
from ..errors import ConfigError, InputError
from .generate import generate as generate_command
from .options import DB
from .progress import show_library_messages

# What `batch write` takes from generate to plan an input first: the same names, the same ids.
PLANNING = ("config_file", "input_path", "input_sql", "template", "prompts_dir", "model", "n",
            "temperature", "top_p", "max_tokens", "seed", "stop", "logprobs", "logprobs_mode",
            "extra_body", "limit", "skip_invalid", "batch_max_requests", "batch_max_bytes")


@click.group()
def batch() -> None:
    """Batch API batches of a store, and batch files for `vllm run-batch`."""


@batch.command()
@DB
@click.option("--json", "as_json", is_flag=True, help="One JSON object per batch, then the totals.")
def status(db: Path, as_json: bool) -> None:
    """Every batch: its API id, state, requests, what the API counted and what is stored."""
    info = batch_status(db)
    if as_json:
        for b in info["batches"]:
            click.echo(orjson.dumps(b, default=str).decode())
        totals = {k: v for k, v in info.items() if k != "batches"}
        click.echo(orjson.dumps({"totals": totals}, default=str).decode())
        return
    batches = info["batches"]
    if not batches:
        click.echo(f"{db}: no batches")
        return
    for b in batches:
        ended = f"ended {_when(b['ended_at'])}" if b["ended_at"] else (
            f"polled {_when(b['polled_at'])}" if b["polled_at"] else "not polled yet")
        click.echo(f"{b['batch_id'] or '(not created)'}  {b['state']}/{b['status'] or '-'}  "
                   f"{b['requests'] or 0:,} requests: {b['completed'] or 0:,} done, {b['failed'] or 0:,} "
                   f"failed at the API; {b['answered']:,} answered in the store  (run {b['run_id'] or '-'}, "
                   f"created {_when(b['created_at'])}, {ended})")
        if b["message"]:
            click.echo(f"  {b['message']}")
    open_ = [b for b in batches if b["state"] in ("preparing", "uploaded", "submitted")]
    line = (f"{len(batches):,} batches, {len(open_):,} in flight "
            f"({sum(b['requests'] or 0 for b in open_):,} requests); batch runs: "
            f"tokens {info['prompt_tokens']:,} in / {info['completion_tokens']:,} out")
    if info["cost"] is not None:
        line += f", estimated cost ${info['cost']:,.4f} at batch prices"
    click.echo(line)


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


@batch.command()
@DB
@click.option("--base-url", help="The Batch API endpoint, where it differs from the one recorded "
                                 "(credentials are never recorded).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the API key.")
def cancel(db: Path, base_url: str | None, api_key_env: str) -> None:
    """Cancel every batch of the store still in flight. What they answered already is
    stored by the run that polls them; their other requests stay pending."""
    api_key = os.environ.get(api_key_env) or None
    results, recorded = asyncio.run(cancel_batches(db, api_key, base_url))
    if not results:
        click.echo(f"{db}: no batch in flight")
        return
    failed = 0
    for r in results:
        if r.error is not None:
            failed += 1
            click.echo(f"{r.batch_id or r.batch_key}: not cancelled: {r.error}")
        else:
            click.echo(f"{r.batch_id}: {r.status}")
    if recorded:
        click.echo("Recorded. `synthgen generate --batch` with the same flags stores what they answered "
                   "and submits nothing new; run it once more to send the rest.", err=True)
    else:
        click.echo("The run polling these batches stores what they answered at its next poll and "
                   "submits nothing new.", err=True)
    if failed:
        sys.exit(1)


@batch.command("write", params=[p for p in generate_command.params if p.name in PLANNING])
@DB
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Directory for batch-00001.jsonl, ... (empty or new).")
def write(db: Path, out: Path, config_file: Path | None, **flags) -> None:
    """Write the pending requests as batch files (the format of OpenAI's Batch API and of
    `vllm run-batch`). With --input (and the sampling flags of generate) the input is
    planned first; without, the latest plan of the store is written."""
    file_values = load_config_file(config_file) if config_file else {}
    max_requests = flags.pop("batch_max_requests") or file_values.get("batch_max_requests") or 50_000
    max_bytes = flags.pop("batch_max_bytes") or file_values.get("batch_max_bytes") or 200_000_000
    overrides = {"input": flags.pop("input_path"), "stop": list(flags.pop("stop")) or None,
                 "db": db, **flags}
    if overrides["input"] or overrides["input_sql"] or file_values:
        cfg = build_config(file_values, overrides, str(config_file) if config_file else "flags")
        from ..run import plan_only

        try:
            with show_library_messages():
                planned = plan_only(cfg)
        except InputError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"planned {planned.total:,} requests ({planned.already_done:,} already done, "
                   f"{planned.pending:,} pending)", err=True)
    elif any(v not in (None, (), False) for v in flags.values()):
        raise ConfigError("sampling flags plan an input: give --input (or --input-sql) with them")
    written = write_pending(db, out, max_requests, max_bytes)
    if written.held:
        click.echo(f"{written.held:,} pending requests are in flight in Batch API batches and were "
                   "not written (see `synthgen batch status`)", err=True)
    if written.oversized:
        click.echo(f"{written.oversized:,} requests are larger than a batch file may be "
                   f"({max_bytes:,} bytes) and were not written", err=True)
    if not written.files:
        click.echo("nothing pending: no file written", err=True)
        return
    first = written.files[0].path
    click.echo(f"wrote {written.requests:,} requests in {len(written.files)} files to {out} "
               f"({first.name} ...). Run each on a GPU machine, e.g.\n"
               f"  vllm run-batch -i {shlex.quote(str(first))} -o {shlex.quote(str(first.with_suffix('')))}"
               f".out.jsonl --model {shlex.quote(written.model or 'MODEL')}\n"
               f"then store the answers: synthgen batch ingest --db {shlex.quote(str(db))} "
               "OUTPUT.jsonl ...", err=True)


@batch.command()
@DB
@click.option("--think-tags", metavar="OPEN,CLOSE|none", default="<think>,</think>", show_default=True,
              help="Reasoning written inline between these tags is stored as the reasoning "
                   "(as `generate --think-tags`); 'none': the content as written.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
def ingest(db: Path, think_tags: str, files: tuple[Path, ...]) -> None:
    """Store the answers of batch output files made elsewhere (`vllm run-batch`, a download
    from the Batch API): each once, next to its own prompt, by custom_id."""
    try:
        think = parse_tags(think_tags)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--think-tags") from None
    run_id, results = ingest_files(db, list(files), think)
    matched = 0
    for r in results:
        t = r.tally
        matched += t.answered + t.already + t.failed + t.retry + t.not_run
        parts = [f"{t.answered:,} answers stored", f"{t.already:,} stored before", f"{t.failed:,} failed"]
        if t.requeued:
            kinds = ", ".join(sorted(t.errors)) or "not run"
            parts.append(f"{t.requeued:,} left pending (retryable: {kinds})")
        if t.unknown:
            parts.append(f"{t.unknown:,} lines for requests this store does not have")
        if t.bad_lines:
            parts.append(f"{t.bad_lines:,} lines that are not batch output")
        click.echo(f"{r.path}: " + ", ".join(parts))
    click.echo(f"(run {run_id})", err=True)
    if not matched:
        click.secho("no line matched a request of this store: the wrong --db, or not output files?",
                    fg="red", err=True)
        sys.exit(1)
