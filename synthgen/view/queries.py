"""What the viewer asks the store: the corpus rows that pass the page's filters, one row in
full, the facets the filters offer, and the evaluations' student answers.

Every query is one SELECT (checked by parsing the whole statement, the user's WHERE text
inside it, before it runs) on a connection that can only read: a read-only, sandboxed
DuckDB connection opened for that one request (no other file, no setting it could change
back), or, while a run holds the store, the run's live-read server, which runs it in a
READ ONLY transaction. User text is a bound parameter everywhere except the WHERE box,
whose whole point is SQL; what it may reach is the store, read-only.

Recipe stages are read as `status` reads them (store/stages.py): a stage's rows are its
`stage_rows`, each with its keep decision; a judge stage's verdicts are not counted as
answers, and its `score` is joined to the rows it rated (`score` in the WHERE box too).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from .. import store
from ..errors import StoreError
from ..store import stages as stage_store
from ..store.readonly import READ_KINDS
from ..store.status import input_label

PAGE_ROWS = 50
MAX_PAGE_ROWS = 500
QUERY_SECONDS = 20.0  # a query from the WHERE box that runs longer is interrupted
SNIPPET = 160
INPUT = "input:"  # a stage choice that is a plan's input (`generate`'s), not a recipe stage
EVERYTHING = "*"  # every row of the corpus, the judges' verdicts too


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


@dataclass
class Corpus:
    """The corpus as the page shows it: `relation` is corpus with each row's judged `score`
    (the mean a judge stage gave it) beside its columns; `answers` excludes the judge
    stages' own rows (verdicts are no answers of the corpus); `stages` is `status`'s."""

    relation: str
    cols: set[str]
    stages: list[dict[str, Any]]
    verdicts: str | None  # SQL: the request ids of judge stages' rows

    @property
    def score(self) -> str:
        """A row's score: the judged one, else its own `json.score` (a judge's verdict)."""
        own = ("TRY_CAST(json_extract_string(json, '$.score') AS DOUBLE)" if "json" in self.cols
               else "NULL::DOUBLE")
        return f"coalesce(TRY_CAST(score AS DOUBLE), {own})" if "score" in self.cols else own


def corpus(con: Any) -> Corpus:
    cols = corpus_columns(con)
    stages = stage_store.status(con)
    judged = None if "score" in cols else stage_store.judged_scores_sql(con, stages)
    relation = "corpus"
    if judged is not None:
        relation = (f"(SELECT c.*, j.score FROM corpus c LEFT JOIN ({judged}) AS j USING (request_id)) "
                    "AS corpus")
        cols = cols | {"score"}
    return Corpus(relation, cols, stages, stage_store.verdicts_sql(stages))


def _filters(c: Corpus, args: dict[str, str]) -> tuple[str, list[Any]]:
    where, params = [], []
    stage = args.get("stage", "")
    if stage.startswith(INPUT):  # a plan that is no recipe stage, by its input
        where.append("request_id IN (SELECT pr.request_id FROM plan_requests pr JOIN plans p "
                     "USING (plan_key) WHERE p.source = ?)")
        params.append(stage.removeprefix(INPUT))
    elif stage == EVERYTHING:
        pass
    elif stage:
        if stage not in {s["stage"] for s in c.stages}:
            raise QueryError(f"no stage {stage!r} in this store")
        where.append("request_id IN (SELECT request_id FROM stage_rows WHERE stage = ?)")
        params.append(stage)
    elif c.verdicts is not None:  # every answer: not the judges' verdicts
        where.append(f"request_id NOT IN ({c.verdicts})")
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
            where.append(f"{c.score} {op} ?")
            params.append(value)
    if args.get("q"):
        where.append("(contains(lower(response), lower(?)) OR contains(lower(messages::VARCHAR), lower(?)))")
        params += [args["q"], args["q"]]
    if args.get("where", "").strip():
        where.append(f"({args['where']}\n)")  # a line break ends a trailing -- comment
    return (" WHERE " + " AND ".join(where)) if where else "", params


def rows(con: Any, args: dict[str, str]) -> dict[str, Any]:
    c = corpus(con)
    where, params = _filters(c, args)
    try:
        limit = min(MAX_PAGE_ROWS, max(1, int(args.get("limit") or PAGE_ROWS)))
        offset = max(0, int(args.get("offset") or 0))
    except ValueError:
        raise QueryError("limit and offset are whole numbers") from None
    refusal = "refusal" if "refusal" in c.cols else "NULL"
    # a recipe stage chosen: each row's keep decision (kept, or the rule that removed it);
    # its name is one of the store's stages ([a-z][a-z0-9_]*), checked by _filters
    stage = args.get("stage", "")
    kept = (f"(SELECT CASE WHEN m.kept THEN 'kept' ELSE m.rule END FROM stage_rows m "
            f"WHERE m.stage = '{stage}' AND m.request_id = corpus.request_id LIMIT 1)"
            if stage in {s["stage"] for s in c.stages} else "NULL")
    _, [(total,)] = run(con, f"SELECT count(*) FROM {c.relation}{where}", params)
    names, found = run(con, f"""
        SELECT request_id, sample_index, run_id, finish_reason, prompt_tokens, completion_tokens,
               {c.score} AS score, {kept} AS kept,
               left(json_extract_string(messages, '$[#-1].content'), {SNIPPET}) AS prompt,
               left(coalesce(response, {refusal}, ''), {SNIPPET}) AS answer,
               logprobs IS NOT NULL AS has_logprobs
        FROM {c.relation}{where}
        ORDER BY run_id, line, sample_index, request_id LIMIT {limit} OFFSET {offset}""", params)
    return {"total": total, "offset": offset, "limit": limit,
            "rows": [dict(zip(names, r, strict=True)) for r in found]}


OPTIONAL = ("reasoning", "tool_calls", "refusal", "json", "stage", "score", "kept")


def row(con: Any, request_id: str) -> dict[str, Any] | None:
    c = corpus(con)
    extra = "".join(f", {col}" for col in OPTIONAL if col in c.cols and col not in ("score", "kept"))
    names, found = run(con, f"""
        SELECT request_id, sample_index, run_id, line, messages, response, finish_reason,
               prompt_tokens, completion_tokens, model, endpoint, latency_ms, attempts, created_at,
               metadata, params, logprobs, {c.score} AS score{extra}
        FROM {c.relation} WHERE request_id = ?""", [request_id])
    if not found:
        return None
    out = dict(zip(names, found[0], strict=True))
    for key in ("messages", "metadata", "params", "tool_calls", "json"):
        if isinstance(out.get(key), str):
            with suppress(ValueError):
                out[key] = json.loads(out[key])
    out["logprobs"] = _tokens(out.get("logprobs"))
    out["students"] = students(con, request_id)
    out["stages"] = _decisions(con, request_id)
    out["judgments"] = _judgments(con, c, request_id)
    return out


def _decisions(con: Any, request_id: str) -> list[dict[str, Any]]:
    """The recipe stages this row is in, each with its keep decision."""
    if "stage_rows" not in _tables(con):
        return []
    names, found = run(con, "SELECT m.stage, s.recipe, m.kept, m.rule, m.detail, m.parent_request_id "
                            "FROM stage_rows m JOIN stages s USING (stage) WHERE m.request_id = ? "
                            "ORDER BY s.recipe, s.position", [request_id])
    return [dict(zip(names, r, strict=True)) for r in found]


def _judgments(con: Any, c: Corpus, request_id: str) -> list[dict[str, Any]]:
    """What each judge stage said of this row: its columns (score, rationale...) per verdict."""
    out = []
    for s in c.stages:
        if not s["judge"] or s["kept"] is None:
            continue
        columns = stage_store.stage_columns(con, s["stage"])
        rows = stage_store.decided_rows_sql(s["stage"], columns)
        picked = "".join(f', "{col}"' for col in columns)
        names, found = run(con, f"SELECT request_id AS verdict, kept, removed_by{picked} FROM ({rows}) AS j "
                                "WHERE parent_request_id = ?", [request_id])
        out += [{"stage": s["stage"], **dict(zip(names, r, strict=True))} for r in found]
    return out


def _tables(con: Any) -> set[str]:
    _, found = run(con, "SELECT table_name FROM information_schema.tables")
    return {r[0] for r in found}


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
    """What the filters offer, and the header's counts: answers (not the judges' verdicts),
    finish reasons and scores over them, and every stage with `status`'s funnel."""
    c = corpus(con)
    answers = f" WHERE request_id NOT IN ({c.verdicts})" if c.verdicts else ""
    _, [(total,)] = run(con, f"SELECT count(*) FROM corpus{answers}")
    _, [(every,)] = run(con, "SELECT count(*) FROM corpus")
    _, reasons = run(con, f"SELECT coalesce(finish_reason, '(none)'), count(*) FROM corpus{answers} "
                          "GROUP BY 1 ORDER BY 2 DESC")
    stages = [{"value": s["stage"],
               "label": f"{s['recipe']} · {s['stage']}" + (" (judge)" if s["judge"] else ""),
               "rows": s["rows"] if s["rows"] is not None else s["answered"],
               "funnel": stage_store.funnel_text(s), "judge": s["judge"]} for s in c.stages]
    in_stages = " AND p.plan_key NOT IN (SELECT plan_key FROM stages WHERE plan_key IS NOT NULL)" \
        if c.stages else ""
    _, plans = run(con, f"""
        SELECT p.source, count(*), count(r.request_id) FROM plans p
        JOIN plan_requests pr USING (plan_key) LEFT JOIN responses r USING (request_id)
        WHERE TRUE{in_stages} GROUP BY 1 ORDER BY min(p.created_at)""")
    stages += [{"value": INPUT + source, "label": input_label(source), "rows": answered,
                "funnel": f"{planned:,} planned, {answered:,} answered", "judge": False}
               for source, planned, answered in plans]
    _, [(scored, lo, hi)] = run(con, f"SELECT count(s), min(s), max(s) FROM (SELECT {c.score} AS s "
                                     f"FROM {c.relation}{answers})")
    _, [(evals,)] = run(con, "SELECT count(*) FROM evals")
    return {"total": total, "verdicts": every - total, "finish_reasons": reasons, "stages": stages,
            "score": {"rows": scored, "min": lo, "max": hi},
            "columns": sorted(col for col in OPTIONAL if col in c.cols), "evals": evals,
            "stage_source": "stages" if c.stages else "plan"}


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
