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
from ..store.export import FORMATS, THINK_IN_CONTENT
from ..store.export import write as write_export
from ..store.readonly import read_statements
from ..store.stages import funnel_text
from ..store.status import status_and_stages
from .options import DB


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
        # a JSON column (messages, metadata, params, json...) is JSON in the line, not a
        # string of JSON inside it
        parsed = [str(d[1]) == "JSON" for d in cur.description]
        while rows := cur.fetchmany(4096):
            for r in rows:
                record = {c: _parsed(v) if j else v for c, v, j in zip(cols, r, parsed, strict=True)}
                sys.stdout.write(orjson.dumps(record, default=str).decode() + "\n")
    else:
        _table(cols, cur.fetchmany(max_rows + 1), max_rows)


def _parsed(value: object) -> object:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _cell(value: object) -> object:
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=str).decode()
    return value


# A column narrower than this shows nothing readable: more columns than fit at this width
# are printed as records, one `column  value` line each (as psql's \x does).
MIN_COLUMN = 12


def _table(cols: list[str], rows: list[tuple], max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    if len(cols) * MIN_COLUMN > console.width:
        _records(console, cols, rows[:max_rows])
    else:
        table = Table(*cols, show_lines=False)
        for row in rows[:max_rows]:
            table.add_row(*(_short(v) for v in row))
        console.print(table)
    if len(rows) > max_rows:
        console.print(f"(first {max_rows} rows shown; use --max-rows or --format csv for more)")


def _records(console, cols: list[str], rows: list[tuple]) -> None:
    """Each row as a block of `column  value` lines, a value cut to the line: a table of
    this many columns would cut every one of them to a few letters."""
    from rich.text import Text

    name = max(len(c) for c in cols)
    room = max(20, console.width - name - 2)
    for i, row in enumerate(rows, 1):
        console.print(Text(f"-[ row {i} ]" + "-" * max(0, min(console.width, 60) - 11), style="dim"))
        for col, value in zip(cols, row, strict=True):
            console.print(Text(f"{col.ljust(name)}  {_short(value, room)}"), no_wrap=True,
                          overflow="ellipsis")
    if rows:
        console.print(Text(f"({len(cols)} columns shown as records; --format jsonl or csv prints them whole)",
                           style="dim"))


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
            tokens += f", estimated cost ${r['cost']:,.4f} (at {r['prices']})"
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
        click.echo(f"  stage {s['position']} {s['stage']}: {funnel_text(s)}")


@click.command()
@DB
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="FILE.jsonl or FILE.parquet")
@click.option("--where", help="SQL condition over the rows written: corpus's columns, and after a recipe "
                              "the stage's own (score >= 7) and its keep decision (kept, removed_by); "
                              "over the pairs with --format preference.")
@click.option("--stage", help="The kept rows of this recipe stage [default: the last stage of the "
                              "recipe run last; a judge stage's are the rows it rated, with its score].")
@click.option("--all-plans", is_flag=True,
              help="Every answer in the store, not only the latest plan's or recipe's.")
@click.option("--include-truncated", is_flag=True,
              help="Also the answers cut by max_tokens (finish_reason 'length'), left out by default: "
                   "a student trained on them learns to stop mid-sentence.")
@click.option("--include-removed", is_flag=True,
              help="Also the stage's rows its keep removed, with kept, removed_by and removed_detail.")
@click.option("--allow-empty", is_flag=True,
              help="Write an empty file (exit 0) when no row matches, instead of saying why and "
                   "exiting 1.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="messages", show_default=True,
              help="messages: the conversation; prompt-completion: TRL trains only the answer; "
                   "preference: prompt/chosen/rejected pairs (from `synthgen run preferences`); "
                   "distillm2: the teacher's answer chosen, a student's (student sample, distill) "
                   "rejected, per prompt.")
@click.option("--think-in-content", is_flag=False, flag_value=THINK_IN_CONTENT, default=None,
              metavar="[FORM]",
              help="Write the teacher's reasoning into the answer's content, in FORM (with {reasoning} "
                   "and {content}) [default FORM: '<think>\\n{reasoning}\\n</think>\\n\\n{content}'], "
                   "instead of `reasoning_content`, which many students' chat templates drop.")
@click.option("--tokenizer", metavar="teacher|DIR|FILE.gguf",
              help="Warn if this student tokenizer's chat template would drop the reasoning written "
                   "(needs the [train] extra).")
def export(db: Path, out: Path, where: str | None, stage: str | None, all_plans: bool,
           include_truncated: bool, include_removed: bool, allow_empty: bool, fmt: str,
           think_in_content: str | None, tokenizer: str | None) -> None:
    """Write one chat-format row per answer (messages + assistant answer + metadata).

    After `synthgen run RECIPE`: the kept rows of its last stage (--stage NAME for
    another). Otherwise the answers of the latest plan: an answer to a prompt since
    edited in the input is not exported (--all-plans exports it too). Answers cut by
    max_tokens are left out unless --include-truncated.
    """
    done = write_export(db, out, where, all_plans=all_plans, format=fmt, stage=stage,
                        include_truncated=include_truncated, include_removed=include_removed,
                        allow_empty=allow_empty, think_in_content=think_in_content, tokenizer=tokenizer)
    for warning in done.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    left = []
    if done.truncated:
        left.append(f"{done.truncated:,} cut by max_tokens (--include-truncated)")
    if done.removed and include_removed is False and fmt not in ("preference", "distillm2"):
        left.append(f"{done.removed:,} removed by the stage's keep (--include-removed)")
    noun = "pairs" if fmt in ("preference", "distillm2") else "rows"
    click.echo(f"wrote {done.rows:,} {noun} to {out}: {done.what}"
               + (f"; left out: {', '.join(left)}" if left else ""), err=True)
