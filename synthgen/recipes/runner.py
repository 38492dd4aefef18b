"""`run_recipe()`: every stage of a recipe in order, each a use of the engine.

    for each stage:
        claim it in the store (its plan key is computed before planning, so a stage killed
            mid-run is found again by the next run)
        generate(): the stage's input (a file, or SQL over the store in which each earlier
            stage is a view) through its template, like `synthgen generate` (a stage
            without a template skips this: its rows are ones already stored)
        settle: its rows, its `keep` (SQL conditions and built-in filters), its view

The bundled teacher (when no base URL is given) is started once for all stages. No
connection to the store is held while a stage generates: the run opens its own, and turns
off the store's external access once it plans (a setting of the whole database in this
process, gone when every connection is closed). Every row is stored exactly once by the
engine's content-hashed ids, so running the same command again after a kill sends only
what is missing, in whichever stage that is, and settles each stage again from its rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from pydantic import ValidationError

from .. import store
from ..config import GenerateConfig, describe_validation_error
from ..errors import ConfigError
from ..ids import fingerprint, plan_key
from ..inputs.messages import RESERVED
from ..run import RunSummary, generate, teacher_settings
from ..store import stages as stage_store
from ..store.readonly import read_statements
from .keep import decide
from .spec import CORPUS_COLUMNS, Recipe, Stage

log = logging.getLogger("synthgen")


@dataclass
class StageResult:
    name: str
    planned: int = 0
    answered: int = 0
    failed: int = 0
    rows: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # by rule
    figures: dict[str, Any] = field(default_factory=dict)
    run: RunSummary | None = None


@dataclass
class RecipeSummary:
    recipe: str
    status: str = "done"  # done | interrupted | empty (a stage kept no row: `message` says why)
    stages: list[StageResult] = field(default_factory=list)
    elapsed: float = 0.0
    message: str = ""


def run_recipe(recipe: Recipe, db: str | Path, options: dict[str, Any] | None = None, *,
               announce: Callable[[str], None] | None = None, **reporting: Any) -> RecipeSummary:
    """Run every stage of `recipe` into `db`. `options` are generate's engine and teacher
    fields (model, base_urls, concurrency, max_attempts, ...); `reporting` is passed to
    each stage's generate (progress, progress_interval, on_progress, retry_sleep).
    Returns per-stage results; `status` is 'interrupted' when a stage was, and 'empty' when
    a stage kept no row (the stages after it would have no input): `message` names that
    stage and why its rows went (its failures, or the rules that removed them). A recipe
    never ends "done" with nothing."""
    announce = announce or log.info
    started = time.monotonic()
    base = {k: v for k, v in (options or {}).items() if v is not None}
    summary = RecipeSummary(recipe.name)
    with teacher_settings(base.get("base_urls") or [], base.get("threads"), "concurrency" in base) as update:
        base.update(update)
        for stage in recipe.stages:
            announce(f"stage {stage.position}/{len(recipe.stages)} {stage.name}: "
                     + ("generating" if stage.generates else "filtering stored rows"))
            result = _run_stage(recipe, stage, Path(db), base, reporting)
            summary.stages.append(result)
            if result.run is not None and result.run.status == "interrupted":
                summary.status = "interrupted"
                break
            announce(_funnel_line(stage, result))
            if result.kept == 0:
                summary.status, summary.message = "empty", _why_empty(recipe, stage, Path(db), result)
                break
    summary.elapsed = time.monotonic() - started
    return summary


def _run_stage(recipe: Recipe, stage: Stage, db: Path, base: dict[str, Any],
               reporting: dict[str, Any]) -> StageResult:
    result = StageResult(stage.name)
    con = store.connect(db)
    try:
        input_sql, input_columns = _input_sql(con, stage)
        cfg = _config(stage, db, base, input_sql) if stage.generates else None
        spec = cfg.planning if cfg is not None else None
        key = plan_key(spec, fingerprint(spec)[0], stage.template) if spec is not None else None
        stage_store.claim(con, recipe.name, stage.name, stage.position, key, stage.spec())
    finally:
        con.close()
    if cfg is not None:
        run = generate(cfg, prompt_template=stage.template, **reporting)
        result.run, result.planned, result.answered = run, run.total, run.already_done + run.answered
        result.failed = run.failed
        if run.status == "interrupted":
            return result
    con = store.connect(db)
    try:
        rows = stage_store.rows_sql(stage.name, key, input_sql, input_columns, stage.columns)
        decision = decide(con, stage, rows)
        result.rows = len(decision.rows)
        result.kept = stage_store.settle(con, stage.name, stage.columns, decision.rows, decision.removed,
                                         decision.pass_rates, decision.pairs)
        result.figures = decision.figures
        for rule, _, _ in decision.removed.values():
            result.removed[rule] = result.removed.get(rule, 0) + 1
        if cfg is None:
            result.planned = result.answered = result.rows
        else:
            [(result.answered, result.failed)] = con.execute(
                "SELECT count(r.request_id), count(f.request_id) FILTER (WHERE r.request_id IS NULL) "
                "FROM plan_requests p LEFT JOIN responses r USING (request_id) "
                "LEFT JOIN failures f USING (request_id) WHERE p.plan_key = ?", [key]).fetchall()
    finally:
        con.close()
    return result


def _input_sql(con: duckdb.DuckDBPyConnection, stage: Stage) -> tuple[str | None, list[str]]:
    """The stage's input query as generate runs it, and the columns it returns.

    The input's `request_id` (the earlier stage's row a new row comes from) becomes
    `parent_request_id`, kept in the new request's metadata: lineage is one join. A
    column by one of the names synthgen keeps for its own is refused here, naming it."""
    if stage.input_sql is None:
        return None, []
    where = f"{stage.where}: input"
    try:
        read_statements(stage.input_sql)
    except Exception as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('sql: ')}") from None
    try:
        cols = [d[0] for d in con.execute(f"SELECT * FROM ({stage.input_sql}) AS q LIMIT 0").description]
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{where}: the query failed: {first}") from None
    if not stage.generates:
        if "request_id" not in cols:
            raise ConfigError(f"{where}: a stage without a template keeps rows already stored: its query "
                              f"must return their request_id (it returns {', '.join(cols)})")
        # the stored rows themselves, with the query's own columns (not corpus's) beside them
        return stage.input_sql, [c for c in cols if c not in CORPUS_COLUMNS or c == "parent_request_id"]
    if stage.judge and "request_id" not in cols:
        raise ConfigError(f"{where}: a judge stage rates rows already stored: its query must return "
                          f"their request_id (it returns {', '.join(cols)})")
    if "request_id" in cols and "parent_request_id" in cols:
        raise ConfigError(f"{where}: returns both request_id and parent_request_id; the row's request_id "
                          "becomes its parent_request_id, so give one")
    clash = [c for c in cols if c in RESERVED and c != "request_id"]
    if clash:
        raise ConfigError(f"{where}: column {clash[0]!r} is a name synthgen keeps for its own "
                          f"({', '.join(RESERVED)}): alias it, e.g. {clash[0]} AS {clash[0]}_in")
    if "request_id" in cols:
        return (f"SELECT * EXCLUDE (request_id), request_id AS parent_request_id "
                f"FROM ({stage.input_sql}) AS q"), cols
    return stage.input_sql, cols


def _config(stage: Stage, db: Path, base: dict[str, Any], input_sql: str | None) -> GenerateConfig:
    fields = {**base, **stage.sampling, "db": db, "response_schema": stage.response_schema}
    if input_sql is not None:
        fields["input_sql"] = input_sql
    else:
        fields["input"] = stage.input_file
    try:
        return GenerateConfig(**fields)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, stage.where)) from None


def _why_empty(recipe: Recipe, stage: Stage, db: Path, r: StageResult) -> str:
    """Why `stage` kept no row: its input was empty, its requests failed (the commonest
    failure and its message, e.g. max_tokens too small for the schema), or rules removed
    every row."""
    where = f"stage {stage.name!r} of recipe {recipe.name!r} kept no row"
    if r.failed and not r.answered:
        con = store.connect(db, read_only=True)
        try:
            top = con.execute(
                "SELECT f.error_type, count(*), any_value(f.message) FROM failures f "
                "JOIN stage_requests s USING (request_id) WHERE s.recipe = ? AND s.stage = ? "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 1", [recipe.name, stage.name]).fetchall()
        finally:
            con.close()
        said = f" ({top[0][1]:,} {top[0][0]}: {top[0][2]})" if top else ""
        return f"{where}: all {r.failed:,} of its requests failed{said}"
    if not r.rows and not r.planned:
        return f"{where}: its input had no rows (the stage before kept none, or its query returns none)"
    removed = ", ".join(f"{rule} {n:,}" for rule, n in r.removed.items())
    return (f"{where}: {r.rows:,} rows, all removed" + (f" ({removed})" if removed else "")
            + (f"; {r.failed:,} requests failed" if r.failed else ""))


def _funnel_line(stage: Stage, r: StageResult) -> str:
    removed = ", ".join(f"{rule} {n:,}" for rule, n in sorted(r.removed.items(), key=lambda x: -x[1]))
    head = (f"  {stage.name}: {r.planned:,} planned, {r.answered:,} answered, {r.failed:,} failed, "
            if stage.generates else f"  {stage.name}: {r.rows:,} rows, ")
    return head + f"{r.kept:,} kept" + (f" (removed: {removed})" if removed else "")
