"""Recipe stages in the store: which plan each stage is, its rows with their keep
decisions, and the view named after it.

    claim()      record a stage before it runs (its plan key is known before planning)
    rows_sql()   every row of a stage: corpus's columns, parent_request_id, its columns
    settle()     one transaction: the stage's rows and why each was kept or removed, its
                 pass rates and preference pairs, its counts, and its view (kept rows)
    status()     per stage: planned, answered, failed, rows, kept (and funnel_text(): in words)
    judged_scores_sql(), verdicts_sql()   a judge stage's scores joined to the rows it
                 rated, and its own rows (verdicts, which are not answers to count)

Settling replaces everything the stage had, so a stage settled again after a kill (or with
other settings) holds exactly what its rows say now. Nothing here knows what a filter is.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson

from ..errors import StoreError
from .tx import transaction


def claim(con: duckdb.DuckDBPyConnection, recipe: str, stage: str, position: int,
          plan_key: str | None, spec: dict[str, Any]) -> None:
    """Record `stage` of `recipe` as running with `plan_key`; a stage of that name that
    another recipe made in this store is refused (its view would be replaced)."""
    row = con.execute("SELECT recipe FROM stages WHERE stage = ?", [stage]).fetchone()
    if row is not None and row[0] != recipe:
        raise StoreError(f"stage {stage!r} belongs to recipe {row[0]!r} in this store; run {recipe!r} "
                         "into another --db, or rename the stage")
    con.execute(
        "INSERT OR REPLACE INTO stages (stage, recipe, position, plan_key, status, spec, rows, kept, "
        "updated_at) VALUES (?, ?, ?, ?, 'running', ?, NULL, NULL, now())",
        [stage, recipe, position, plan_key, orjson.dumps(spec, default=str).decode()])


def rows_sql(stage: str, plan_key: str | None, input_sql: str | None, input_columns: list[str],
             columns: dict[str, str]) -> str:
    """The SELECT of every row of a stage (before `keep`), in input order.

    A generating stage's rows are its plan's answers (their parent is in the request's
    metadata, put there from the input's request_id). A filtering stage's rows are the
    stored rows its input query names by request_id, with the query's own columns beside
    corpus's (its parent_request_id, if it has one, and any other it selects)."""
    if plan_key is not None:
        base = ("SELECT c.*, c.metadata->>'parent_request_id' AS parent_request_id FROM corpus c "
                f"WHERE c.request_id IN (SELECT request_id FROM plan_requests WHERE plan_key = '{plan_key}')")
    else:
        parent = "any_value(parent_request_id)" if "parent_request_id" in input_columns else "NULL::VARCHAR"
        extra_in = [c for c in input_columns if c not in ("request_id", "parent_request_id")]
        picked = "".join(f', any_value("{c}") AS "{c}"' for c in extra_in)
        shown = "".join(f', i."{c}"' for c in extra_in)
        base = (f"SELECT c.*, i.parent_request_id{shown} FROM corpus c JOIN (SELECT request_id, {parent} AS "
                f"parent_request_id{picked} FROM ({input_sql}) AS q GROUP BY request_id) i "
                "USING (request_id)")
    extra = "".join(f", ({expr}) AS {name}" for name, expr in columns.items())
    return f"SELECT *{extra} FROM ({base}) AS s ORDER BY line, sample_index, request_id"


def view_sql(stage: str, columns: dict[str, str]) -> str:
    """The stage's view: its kept rows, corpus's columns, parent_request_id, its columns."""
    return f'CREATE OR REPLACE VIEW "{stage}" AS {_with_columns(_settled(stage, False), columns)}'


def decided_rows_sql(stage: str, columns: dict[str, str]) -> str:
    """Every row of a settled stage, kept or not, as its view has them, with its keep
    decision: `kept`, `removed_by` (the rule) and `removed_detail`."""
    return _with_columns(_settled(stage, True), columns)


def _settled(stage: str, every_row: bool) -> str:
    decision = ", m.kept, m.rule AS removed_by, m.detail AS removed_detail" if every_row else ""
    which = "" if every_row else " AND m.kept"
    return (f"SELECT c.*, m.parent_request_id{decision} FROM corpus c JOIN stage_rows m "
            f"ON m.request_id = c.request_id WHERE m.stage = '{stage}'{which}")


def _with_columns(rows: str, columns: dict[str, str]) -> str:
    extra = "".join(f", ({expr}) AS {name}" for name, expr in columns.items())
    return f"SELECT *{extra} FROM ({rows}) AS s"


def settle(con: duckdb.DuckDBPyConnection, stage: str, columns: dict[str, str],
           rows: list[tuple[str, str | None]], removed: dict[str, tuple[str, str, str | None]],
           pass_rates: list[tuple[str, int, int]], pairs: list[tuple[str, str, float, float]]) -> int:
    """Store the stage's rows ((request_id, parent)) with `removed` ({request_id: (rule,
    detail, other)}), its pass rates and pairs, its counts and its view. Returns kept."""
    ids = [r[0] for r in rows]
    kept = sum(1 for rid in ids if rid not in removed)
    with transaction(con):
        con.execute("DELETE FROM stage_rows WHERE stage = ?", [stage])
        con.execute("DELETE FROM pass_rates WHERE stage = ?", [stage])
        con.execute("DELETE FROM preference_pairs WHERE stage = ?", [stage])
        if rows:
            why = [removed.get(rid) for rid in ids]
            con.execute(
                "INSERT INTO stage_rows SELECT $stage, unnest($ids), unnest($parents), unnest($kept), "
                "unnest($rules), unnest($details), unnest($others)",
                {"stage": stage, "ids": ids, "parents": [r[1] for r in rows],
                 "kept": [w is None for w in why], "rules": [w[0] if w else None for w in why],
                 "details": [w[1] if w else None for w in why], "others": [w[2] if w else None for w in why]})
        if pass_rates:
            con.executemany("INSERT INTO pass_rates VALUES (?, ?::JSON, ?, ?, ?)",
                            [(stage, p, n, k, k / n if n else None) for p, n, k in pass_rates])
        if pairs:
            con.executemany("INSERT INTO preference_pairs VALUES (?, ?, ?, ?, ?, now())",
                            [(stage, *pair) for pair in pairs])
        con.execute("UPDATE stages SET status = 'done', rows = ?, kept = ?, updated_at = now() "
                    "WHERE stage = ?", [len(rows), kept, stage])
        con.execute(view_sql(stage, columns))
    return kept


STATUS_SQL = """
SELECT s.recipe, s.position, s.stage, s.status, s.plan_key, s.rows, s.kept, s.updated_at,
       coalesce(s.spec->>'judge' = 'true', false) AS judge,
       CASE WHEN s.plan_key IS NULL THEN s.rows ELSE (
           SELECT count(*) FROM plan_requests p WHERE p.plan_key = s.plan_key) END AS planned,
       CASE WHEN s.plan_key IS NULL THEN s.rows ELSE (
           SELECT count(*) FROM plan_requests p JOIN responses r USING (request_id)
           WHERE p.plan_key = s.plan_key) END AS answered,
       CASE WHEN s.plan_key IS NULL THEN 0 ELSE (
           SELECT count(*) FROM plan_requests p JOIN failures f USING (request_id)
           WHERE p.plan_key = s.plan_key
             AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.request_id = p.request_id)) END AS failed,
       (SELECT list(struct_pack(rule := rule, n := n) ORDER BY n DESC) FROM (
           SELECT rule, count(*) AS n FROM stage_rows x WHERE x.stage = s.stage AND NOT x.kept
           GROUP BY rule)) AS removed
FROM stages s ORDER BY s.recipe, s.position
"""


def status(con: Any) -> list[dict[str, Any]]:
    """One dict per stage (live reads too): recipe, position, stage, status, planned,
    answered, failed, rows, kept (None until settled), removed ({rule: count}), judge
    (its rows are verdicts on the rows they came from) and updated_at."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "stages" not in tables:
        return []
    cur = con.execute(STATUS_SQL)
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        item = dict(zip(cols, row, strict=True))
        item["removed"] = {r["rule"]: r["n"] for r in item["removed"] or []}
        out.append(item)
    return out


def funnel_text(s: dict[str, Any]) -> str:
    """A stage's funnel in words, as `status`, the report and the viewer all say it."""
    kept = "not settled yet" if s["kept"] is None else f"{s['kept']:,} kept"
    removed = ", ".join(f"{rule} {n:,}" for rule, n in s["removed"].items())
    return (f"{s['planned']:,} planned, {s['answered']:,} answered, {s['failed']:,} failed, {kept}"
            + (f" (removed: {removed})" if removed else ""))


def judged_scores_sql(con: Any, stages: list[dict[str, Any]]) -> str | None:
    """(request_id, score): the mean score the judge stages gave each row they rated (a
    verdict its keep removed rated the row too), from each judge stage's `score` column;
    None where no judge stage has one."""
    parts = []
    for s in stages:
        if not s["judge"] or s["kept"] is None:
            continue
        columns = stage_columns(con, s["stage"])
        if "score" in columns:
            parts.append(f"SELECT parent_request_id, TRY_CAST(score AS DOUBLE) AS score "
                         f"FROM ({decided_rows_sql(s['stage'], columns)}) AS j")
    if not parts:
        return None
    return ("SELECT parent_request_id AS request_id, avg(score) AS score FROM ("
            + " UNION ALL ".join(parts) + ") AS v WHERE parent_request_id IS NOT NULL GROUP BY 1")


def verdicts_sql(stages: list[dict[str, Any]]) -> str | None:
    """The request ids of the judge stages' own rows (verdicts, not answers); None: none."""
    names = [s["stage"] for s in stages if s["judge"]]
    if not names:
        return None
    listed = ", ".join(f"'{n}'" for n in names)  # stage names are [a-z][a-z0-9_]*
    return f"SELECT request_id FROM stage_requests WHERE stage IN ({listed})"


def stage_columns(con: Any, stage: str) -> dict[str, str]:
    """The stage's own `columns` (name -> SQL expression), as its recipe gave them."""
    row = con.execute("SELECT spec->'columns' FROM stages WHERE stage = ?", [stage]).fetchone()
    value = orjson.loads(row[0]) if row and isinstance(row[0], str | bytes) else (row[0] if row else None)
    return value if isinstance(value, dict) else {}
