"""What the viewer asks the store: the corpus rows that pass the page's filters, one row in
full, the facets the filters offer, and the evaluations' student answers.

Every query is one SELECT (checked by parsing the whole statement, the user's WHERE text
inside it, before it runs) on a connection that can only read: a read-only, sandboxed
DuckDB connection opened for that one request (no other file, no setting it could change
back), or, while a run holds the store, the run's live-read server, which runs it in a
READ ONLY transaction. User text is a bound parameter everywhere except the WHERE box,
whose whole point is SQL; what it may reach is the store, read-only.

Columns that later issues add (a recipe's `stage`, a judge's `score`, `kept`) are used
where the store has them and left out where it does not.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb

from .. import store
from ..errors import StoreError
from ..store.readonly import READ_KINDS

PAGE_ROWS = 50
MAX_PAGE_ROWS = 500
QUERY_SECONDS = 20.0  # a query from the WHERE box that runs longer is interrupted
SNIPPET = 160


class QueryError(Exception):
    """A query the page asked for that cannot run (bad SQL, not a read): shown to the user."""


@contextmanager
def connection(db: Path):
    """A connection for one request: opened and closed around it, so the viewer never
    keeps the file locked (a run can start while the page is open)."""
    con = store.connect(db, read_only=True, sandbox=True)
    try:
        yield con
    finally:
        con.close()


def run(con: Any, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
    """Columns and rows of one read-only SELECT, interrupted past QUERY_SECONDS."""
    _one_select(sql)
    timer = None
    if isinstance(con, duckdb.DuckDBPyConnection):
        timer = threading.Timer(QUERY_SECONDS, con.interrupt)
        timer.daemon = True
        timer.start()
    try:
        cur = con.execute(sql, params)
        return [d[0] for d in cur.description], cur.fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, duckdb.InterruptException):
            first = f"the query ran past {QUERY_SECONDS:.0f} s and was stopped"
        raise QueryError(first) from None
    finally:
        if timer is not None:
            timer.cancel()


def _one_select(sql: str) -> None:
    parser = duckdb.connect()
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip().splitlines()[0]) from None
    finally:
        parser.close()
    if len(statements) != 1 or statements[0].type.name not in READ_KINDS:
        kinds = ", ".join(s.type.name for s in statements) or "nothing"
        raise QueryError(f"the viewer runs one SELECT at a time, read-only (this makes: {kinds})")


def corpus_columns(con: Any) -> set[str]:
    _, rows = run(con, "SELECT column_name FROM information_schema.columns WHERE table_name = 'corpus'")
    return {r[0] for r in rows}


def _plan_columns(con: Any) -> set[str]:
    _, rows = run(con, "SELECT column_name FROM information_schema.columns WHERE table_name = 'plans'")
    return {r[0] for r in rows}


def score_expr(cols: set[str]) -> str:
    """A judge's score: a `score` column where the store has one, else `json.score`."""
    if "score" in cols:
        return "TRY_CAST(score AS DOUBLE)"
    if "json" in cols:
        return "TRY_CAST(json_extract_string(json, '$.score') AS DOUBLE)"
    return "NULL::DOUBLE"


def stage_expr(con: Any) -> str:
    """A plan's stage name (the same notion as the report's funnel, report/data.py)."""
    return "coalesce(p.stage, p.source)" if "stage" in _plan_columns(con) else "p.source"


def _filters(con: Any, cols: set[str], args: dict[str, str]) -> tuple[str, list[Any]]:
    where, params = [], []
    if args.get("stage"):
        if "stage" in cols:
            where.append("stage = ?")
        else:
            where.append(f"request_id IN (SELECT pr.request_id FROM plan_requests pr JOIN plans p "
                         f"USING (plan_key) WHERE {stage_expr(con)} = ?)")
        params.append(args["stage"])
    if "finish_reason" in args and args["finish_reason"] != "":
        if args["finish_reason"] == "(none)":
            where.append("finish_reason IS NULL")
        else:
            where.append("finish_reason = ?")
            params.append(args["finish_reason"])
    for key, op in (("score_min", ">="), ("score_max", "<=")):
        if args.get(key):
            try:
                value = float(args[key])
            except ValueError:
                raise QueryError(f"{key.replace('_', ' ')}: not a number: {args[key]!r}") from None
            where.append(f"{score_expr(cols)} {op} ?")
            params.append(value)
    if args.get("q"):
        where.append("(contains(lower(response), lower(?)) OR contains(lower(messages::VARCHAR), lower(?)))")
        params += [args["q"], args["q"]]
    if args.get("where", "").strip():
        where.append(f"({args['where']}\n)")  # a line break ends a trailing -- comment
    return (" WHERE " + " AND ".join(where)) if where else "", params


def rows(con: Any, args: dict[str, str]) -> dict[str, Any]:
    cols = corpus_columns(con)
    where, params = _filters(con, cols, args)
    try:
        limit = min(MAX_PAGE_ROWS, max(1, int(args.get("limit") or PAGE_ROWS)))
        offset = max(0, int(args.get("offset") or 0))
    except ValueError:
        raise QueryError("limit and offset are whole numbers") from None
    stage = "stage" if "stage" in cols else "NULL"
    refusal = "refusal" if "refusal" in cols else "NULL"
    _, [(total,)] = run(con, f"SELECT count(*) FROM corpus{where}", params)
    names, found = run(con, f"""
        SELECT request_id, sample_index, run_id, finish_reason, prompt_tokens, completion_tokens,
               {score_expr(cols)} AS score, {stage} AS stage,
               left(json_extract_string(messages, '$[#-1].content'), {SNIPPET}) AS prompt,
               left(coalesce(response, {refusal}, ''), {SNIPPET}) AS answer,
               logprobs IS NOT NULL AS has_logprobs
        FROM corpus{where}
        ORDER BY run_id, line, sample_index, request_id LIMIT {limit} OFFSET {offset}""", params)
    return {"total": total, "offset": offset, "limit": limit,
            "rows": [dict(zip(names, r, strict=True)) for r in found]}


OPTIONAL = ("reasoning", "tool_calls", "refusal", "json", "stage", "score", "kept")


def row(con: Any, request_id: str) -> dict[str, Any] | None:
    cols = corpus_columns(con)
    extra = "".join(f", {c}" for c in OPTIONAL if c in cols)
    names, found = run(con, f"""
        SELECT request_id, sample_index, run_id, line, messages, response, finish_reason,
               prompt_tokens, completion_tokens, model, endpoint, latency_ms, attempts, created_at,
               metadata, params, logprobs{extra}
        FROM corpus WHERE request_id = ?""", [request_id])
    if not found:
        return None
    out = dict(zip(names, found[0], strict=True))
    for key in ("messages", "metadata", "params", "tool_calls", "json"):
        if isinstance(out.get(key), str):
            with suppress(ValueError):
                out[key] = json.loads(out[key])
    out["logprobs"] = _tokens(out.get("logprobs"))
    out["students"] = students(con, request_id)
    return out


def _tokens(logprobs: Any) -> list[dict[str, Any]] | None:
    """The answer's tokens for the heat-map: token, logprob, and the top alternatives."""
    if not logprobs:
        return None
    return [{"token": t.get("token"), "logprob": t.get("logprob"),
             "top": [[a.get("token"), a.get("logprob")] for a in (t.get("top_logprobs") or [])]}
            for t in logprobs]


def students(con: Any, request_id: str) -> list[dict[str, Any]]:
    """Student answers to this row's prompt, where an evaluation stored them: an `evals`
    row whose metrics hold `samples: [{request_id, text}, ...]` (what `synthgen eval` is to
    record beside its ROUGE-L; evals without samples have none to show)."""
    _, found = run(con, """
        SELECT eval_id, created_at, label, model_dir, metrics FROM evals
        WHERE contains(metrics::VARCHAR, ?) ORDER BY created_at""", [request_id])
    out = []
    for eval_id, created, label, model_dir, metrics in found:
        try:
            data = json.loads(metrics) if isinstance(metrics, str) else metrics
        except ValueError:
            continue
        for sample in (data or {}).get("samples") or []:
            if isinstance(sample, dict) and sample.get("request_id") == request_id:
                out.append({"eval_id": eval_id, "created_at": created, "label": label,
                            "model_dir": model_dir, "text": sample.get("text")})
    return out


def facets(con: Any) -> dict[str, Any]:
    cols = corpus_columns(con)
    _, [(total,)] = run(con, "SELECT count(*) FROM corpus")
    _, reasons = run(con, "SELECT coalesce(finish_reason, '(none)'), count(*) FROM corpus GROUP BY 1 "
                          "ORDER BY 2 DESC")
    if "stage" in cols:
        _, stages = run(con, "SELECT stage, count(*) FROM corpus WHERE stage IS NOT NULL "
                             "GROUP BY 1 ORDER BY 1")
    else:
        _, stages = run(con, f"""
            SELECT {stage_expr(con)} AS stage, count(r.request_id) FROM plans p
            JOIN plan_requests pr USING (plan_key) LEFT JOIN responses r USING (request_id)
            GROUP BY 1 ORDER BY min(p.created_at)""")
    _, [(scored, lo, hi)] = run(con, f"SELECT count(s), min(s), max(s) FROM (SELECT {score_expr(cols)} AS s "
                                      "FROM corpus)")
    _, [(evals,)] = run(con, "SELECT count(*) FROM evals")
    return {"total": total, "finish_reasons": reasons, "stages": stages,
            "score": {"rows": scored, "min": lo, "max": hi},
            "columns": sorted(c for c in OPTIONAL if c in cols), "evals": evals,
            "stage_source": "stage" if "stage" in cols else "plan"}


def evals(con: Any) -> list[dict[str, Any]]:
    names, found = run(con, "SELECT eval_id, created_at, label, model_dir, rows, metrics FROM evals "
                            "ORDER BY created_at, label")
    out = []
    for r in found:
        item = dict(zip(names, r, strict=True))
        try:
            metrics = json.loads(item["metrics"]) if isinstance(item["metrics"], str) else item["metrics"]
        except ValueError:
            metrics = {}
        item["metrics"] = {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float | str)}
        out.append(item)
    return out


def check_store(db: Path) -> None:
    """Fail early (before serving) on a path that is not a synthgen store."""
    if not db.exists():
        raise StoreError(f"{db}: no such database")
    with connection(db):
        pass
