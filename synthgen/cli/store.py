"""Store commands: `sql` (read-only queries), `status` and `export`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
import duckdb
import orjson

from .. import store
from ..errors import StoreError
from ..store.export import FORMATS
from ..store.export import export as export_corpus
from ..store.readonly import read_statements
from ..store.status import status_and_stages

DB = click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False),
                  help="The DuckDB store.")


@click.command()
@DB
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl"]), default="table",
              show_default=True)
@click.option("--max-rows", type=int, default=100, show_default=True,
              help="Rows shown by --format table (csv and jsonl print all).")
@click.option("--allow-files", is_flag=True,
              help="Let the query read local files too (read_parquet, read_csv); still read-only.")
@click.argument("query")
def sql(db: Path, fmt: str, max_rows: int, allow_files: bool, query: str) -> None:
    """Run QUERY on the store, read-only (e.g. "SELECT * FROM corpus LIMIT 5").

    Only statements that read are run; the store is all they can see unless
    --allow-files. Several statements print one result after another (--format table).
    """
    statements = read_statements(query)
    if len(statements) > 1 and fmt != "table":
        raise StoreError(f"sql: {len(statements)} statements: --format {fmt} prints one result; "
                         "run them one at a time, or use --format table")
    con = store.connect(db, read_only=True, sandbox="files" if allow_files else True)
    try:
        if allow_files and isinstance(con, store.LiveConnection):
            raise StoreError("sql: --allow-files: a run is writing this store and serves reads of the "
                             "store only; run it again when the run has ended")
        results = []
        for statement in statements:  # every one runs before anything is shown
            try:
                cur = con.execute(statement)
            except duckdb.Error as exc:
                raise StoreError(f"sql: {str(exc).strip().splitlines()[0]}") from None
            if cur.description is not None:
                results.append(cur if len(statements) == 1 else
                               ([d[0] for d in cur.description], cur.fetchmany(max_rows + 1)))
        for result in results:
            if isinstance(result, tuple):
                _table(*result, max_rows)
            else:
                _print(result, fmt, max_rows)
    finally:
        con.close()


def _print(cur, fmt: str, max_rows: int) -> None:
    """One result, streamed (csv and jsonl print every row)."""
    cols = [d[0] for d in cur.description]
    if fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(cols)
        while rows := cur.fetchmany(4096):
            out.writerows([_cell(v) for v in r] for r in rows)
    elif fmt == "jsonl":
        while rows := cur.fetchmany(4096):
            for r in rows:
                record = dict(zip(cols, r, strict=True))
                sys.stdout.write(orjson.dumps(record, default=str).decode() + "\n")
    else:
        _table(cols, cur.fetchmany(max_rows + 1), max_rows)


def _cell(value: object) -> object:
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=str).decode()
    return value


def _table(cols: list[str], rows: list[tuple], max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*cols, show_lines=False)
    for row in rows[:max_rows]:
        table.add_row(*(_short(v) for v in row))
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"(first {max_rows} rows shown; use --max-rows or --format csv for more)")


def _short(value: object, limit: int = 200) -> str:
    text = "NULL" if value is None else str(_cell(value))
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@click.command()
@DB
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@click.option("--watch", is_flag=True,
              help="Follow the run writing --db live (the display its own terminal shows) until "
                   "it ends, then print the status.")
@click.option("--interval", type=float, default=None,
              help="With --watch: seconds between redraws [default: 0.5 on a terminal, 10 otherwise].")
def status(db: Path, as_json: bool, watch: bool, interval: float | None) -> None:
    """Per run: done, pending, failed by kind, tokens (and cost where prices were given);
    per recipe stage: planned, answered, failed, kept."""
    if watch:
        if as_json:
            raise click.UsageError("--watch draws a live display; --json prints once: use one of them")
        if interval is not None and interval <= 0:
            raise click.BadParameter("must be above 0", param_hint="--interval")
        from .watch import watch as watch_run

        if not Path(db).exists():
            raise StoreError(f"{db}: no such database")
        if not watch_run(db, interval):
            click.echo(f"no run is writing {db} now; its runs:", err=True)
    runs, stages = status_and_stages(db)
    if as_json:
        for run in runs:
            click.echo(orjson.dumps(run, default=str).decode())
        return
    if not runs:
        click.echo(f"{db}: no runs yet")
        return
    for r in runs:
        ended = r["ended_at"].strftime("%Y-%m-%d %H:%M:%S") if r["ended_at"] else "-"
        of = f"  (recipe {r['recipe']}, stage {r['stage']})" if r["stage"] else ""
        click.echo(f"run {r['run_id']}  {r['status']}  model {r['model']}  "
                   f"started {r['started_at']:%Y-%m-%d %H:%M:%S}  ended {ended}{of}")
        if r["total"] is not None:
            kinds = ", ".join(f"{k} {v:,}" for k, v in r["failed_by_kind"].items())
            click.echo(f"  plan: {r['total']:,} requests, {r['answered']:,} done, "
                       f"{r['pending']:,} pending, {r['failed']:,} failed" + (f" ({kinds})" if kinds else ""))
        tokens = f"  this run: {r['run_answered'] or 0:,} answered, {r['run_failed'] or 0:,} failed, " \
                 f"tokens {r['prompt_tokens'] or 0:,} in / {r['completion_tokens'] or 0:,} out"
        if r["cost"] is not None:
            tokens += f", estimated cost ${r['cost']:,.4f}" + (" (batch prices)" if r.get("batch") else "")
        click.echo(tokens)
        if r["message"]:
            click.echo(f"  {r['message'].splitlines()[0]}")
    _stages(stages)


def _stages(stages: list[dict]) -> None:
    """Each recipe's funnel, stage by stage."""
    recipe = None
    for s in stages:
        if s["recipe"] != recipe:
            recipe = s["recipe"]
            click.echo(f"recipe {recipe}")
        kept = "not settled yet" if s["kept"] is None else f"{s['kept']:,} kept"
        removed = ", ".join(f"{rule} {n:,}" for rule, n in s["removed"].items())
        click.echo(f"  stage {s['position']} {s['stage']}: {s['planned']:,} planned, "
                   f"{s['answered']:,} answered, {s['failed']:,} failed, {kept}"
                   + (f" (removed: {removed})" if removed else ""))


@click.command()
@DB
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="FILE.jsonl or FILE.parquet")
@click.option("--where", help="SQL condition over the corpus view, e.g. \"finish_reason = 'stop'\" "
                              "(over the pairs with --format preference).")
@click.option("--all-plans", is_flag=True,
              help="Every answer in the store, not only the latest plan's (the last input run).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="messages", show_default=True,
              help="messages: the conversation; prompt-completion: TRL trains only the answer; "
                   "preference: prompt/chosen/rejected pairs (from `synthgen run preferences`); "
                   "distillm2: the teacher's answer chosen, a student's (student sample, distill) "
                   "rejected, per prompt.")
def export(db: Path, out: Path, where: str | None, all_plans: bool, fmt: str) -> None:
    """Write one chat-format row per answer (messages + assistant answer + metadata).

    By default the answers of the latest plan: an answer to a prompt since edited in the
    input is not exported (--all-plans exports it too).
    """
    count = export_corpus(db, out, where, all_plans=all_plans, format=fmt)
    pairs = fmt in ("preference", "distillm2")
    scope = ("" if all_plans or pairs else " (the latest plan; --all-plans for every answer in the store)")
    click.echo(f"wrote {count:,} {'pairs' if pairs else 'rows'} to {out}{scope}", err=True)
