"""Which rows `export` (and `to_dataset`) write: chosen in one place, and said in words.

    after `synthgen run R`    the kept rows of R's last stage (what the recipe was for)
    --stage NAME              the kept rows of any stage
    otherwise                 the latest plan's answers (the last `generate`'s input)
    --all-plans               every answer in the store

A judge stage (`judge: true` in its recipe) writes verdicts about earlier rows; its
output is the rows it rated, each with the stage's own columns (the `score`, the
`rationale`) beside corpus's, not the judge's prompts. Every selection has the columns
`kept`, `removed_by` and `removed_detail` (a stage row's keep decision: the rule that
removed it, and why), so `--where` can use them and the score alike.

Answers cut by max_tokens (`finish_reason = 'length'`) are left out unless asked for: a
student trained on them learns to stop mid-sentence. `count()` says how many rows each
condition left, so an export of nothing can say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, StoreError
from . import stages as stage_store

# A row with something to train on (an answer, tool calls or a refusal).
ANSWERED = "(response IS NOT NULL OR tool_calls IS NOT NULL OR refusal IS NOT NULL)"
TRUNCATED = "finish_reason = 'length'"
DECISION = ("kept", "removed_by", "removed_detail")
# The latest plan: the input (and parameters) of the most recent run that planned one. An
# answer to an edited prompt of an earlier version of the input is not in it.
LATEST_PLAN = """request_id IN (SELECT request_id FROM plan_requests WHERE plan_key =
    (SELECT plan_key FROM runs r WHERE plan_key IN (SELECT plan_key FROM plans)
     ORDER BY run_id DESC LIMIT 1))"""
_UNDECIDED = "TRUE AS kept, NULL::VARCHAR AS removed_by, NULL::VARCHAR AS removed_detail"


@dataclass
class Selection:
    """Rows with corpus's columns, the keep decision, and `extra` (written into each record)."""

    sql: str
    what: str  # in words, for the user: "the kept rows of stage answers (recipe self-instruct)"
    stage: str | None = None
    extra: list[str] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)  # a stage's removals by rule


@dataclass
class Counts:
    """How many rows each condition left: selected -> kept -> matching --where -> written."""

    rows: int
    kept: int
    matched: int
    truncated: int  # of the matching rows, cut by max_tokens (left out unless asked)
    written: int


def choose(con: Any, stage: str | None = None, all_plans: bool = False,
           include_removed: bool = False) -> Selection:
    """The selection `export` means: `stage`'s rows, every answer (`all_plans`), or by
    default the last stage of the recipe run last, unless a `generate` ran after it (then
    the latest plan)."""
    if stage is not None and all_plans:
        raise ConfigError("export: --stage and --all-plans choose different rows: give one")
    if all_plans:
        return Selection(f"SELECT *, {_UNDECIDED} FROM corpus", "every answer in the store")
    stages = {s["stage"]: s for s in stage_store.status(con)}
    if stage is not None:
        if stage not in stages:
            known = ", ".join(stages) or "none: run a recipe first (synthgen run)"
            raise ConfigError(f"export: --stage {stage}: no such stage in this store (stages: {known})")
        return stage_selection(con, stages[stage], "", include_removed)
    last = _last_stage(con, list(stages.values()))
    if last is None:
        return Selection(f"SELECT *, {_UNDECIDED} FROM corpus WHERE {LATEST_PLAN}",
                         "the latest plan (the last input run)")
    return stage_selection(con, last, ", the last stage of the recipe run last", include_removed)


def _last_stage(con: Any, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last stage of the recipe whose stage was settled or claimed most recently,
    unless a run that is no stage started after that."""
    if not stages:
        return None
    latest = max(stages, key=lambda s: s["updated_at"])
    row = con.execute(
        "SELECT max(started_at) FROM runs WHERE plan_key IS NOT NULL AND plan_key NOT IN "
        "(SELECT plan_key FROM stages WHERE plan_key IS NOT NULL)").fetchone()
    if row and row[0] is not None and row[0] > latest["updated_at"]:
        return None
    return max((s for s in stages if s["recipe"] == latest["recipe"]), key=lambda s: s["position"])


def stage_selection(con: Any, stage: dict[str, Any], why: str = "",
                    include_removed: bool = False) -> Selection:
    """A stage's rows with their keep decision; a judge stage's are the rows it rated."""
    name = stage["stage"]
    if stage["kept"] is None:
        raise StoreError(f"export: stage {name} (recipe {stage['recipe']}) has not finished: it was "
                         "interrupted or is running; run the recipe again to finish it, or export an "
                         "earlier stage with --stage NAME")
    columns = stage_store.stage_columns(con, name)
    rows = stage_store.decided_rows_sql(name, columns)
    if stage["judge"]:
        picked = "".join(f', j."{c}"' for c in columns)
        sql = (f"SELECT p.*, j.request_id AS judged_by, j.kept, j.removed_by, j.removed_detail{picked} "
               f"FROM ({rows}) AS j JOIN corpus p ON p.request_id = j.parent_request_id")
        kept = "" if include_removed else " and kept"
        what = f"the rows judge stage {name} rated{kept}, with its {', '.join(columns) or 'verdict'}"
        extra = [*columns, "judged_by"]
    else:
        sql = rows
        what = (f"every row of stage {name}, kept or not" if include_removed
                else f"the kept rows of stage {name}")
        extra = [*columns, "parent_request_id"]
    return Selection(sql, f"{what} (recipe {stage['recipe']}{why})", name, extra, stage["removed"])




def filtered(sel: Selection, where: str | None, include_truncated: bool = False,
             include_removed: bool = False) -> str:
    """The rows export writes, in input order."""
    conditions = [ANSWERED, f"({where}\n)" if where else "TRUE"]
    if not include_removed:
        conditions.append("kept")
    if not include_truncated:
        conditions.append(f"{TRUNCATED} IS NOT TRUE")
    return (f"SELECT * FROM ({sel.sql}) AS x WHERE {' AND '.join(conditions)} "
            "ORDER BY run_id, line, sample_index, request_id")


def count(con: Any, sel: Selection, where: str | None, include_truncated: bool = False,
          include_removed: bool = False) -> Counts:
    """What each condition of `filtered` leaves of the selection (one query)."""
    match = f"({where}\n)" if where else "TRUE"
    kept = "TRUE" if include_removed else "kept"
    [(rows, kept_n, matched, truncated)] = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {kept}), count(*) FILTER (WHERE {kept} AND {match}), "
        f"count(*) FILTER (WHERE {kept} AND {match} AND {TRUNCATED}) "
        f"FROM ({sel.sql}) AS x WHERE {ANSWERED}").fetchall()
    written = matched - (0 if include_truncated else truncated)
    return Counts(rows, kept_n, matched, truncated, written)


def why_empty(sel: Selection, counts: Counts, where: str | None) -> str:
    """Why nothing would be written, in the terms the user chose."""
    if counts.rows == 0:
        return f"{sel.what} has no answers"
    if counts.kept == 0:
        removed = ", ".join(f"{rule} {n:,}" for rule, n in sel.removed.items())
        return (f"stage {sel.stage} kept none of its {counts.rows:,} rows (removed: {removed}); "
                "--include-removed writes them with the rule that removed each")
    if counts.matched == 0:
        return f"--where {where!r} matched none of the {counts.kept:,} rows of {sel.what}"
    return (f"all {counts.truncated:,} matching rows were cut by max_tokens (finish_reason 'length'); "
            "--include-truncated writes them")
