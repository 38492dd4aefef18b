"""`status`: per run, what is done, pending and failed (by kind), and what it cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..pricing import Prices
from . import LiveConnection, connect
from . import stages as stage_store

RUNS_SQL = """
WITH plan AS (
    SELECT ids.plan_key,
           count(*) AS total,
           count(s.request_id) AS answered,
           count(*) FILTER (WHERE s.request_id IS NULL AND f.request_id IS NOT NULL) AS failed
    FROM plan_requests ids LEFT JOIN responses s USING (request_id)
         LEFT JOIN failures f USING (request_id)
    GROUP BY ids.plan_key
)
SELECT r.run_id, r.status, r.started_at, r.ended_at, r.model, r.base_urls, r.config,
       r.answered AS run_answered, r.failed AS run_failed, r.prompt_tokens, r.completion_tokens,
       r.message, r.plan_key, p.total, p.answered, p.failed, r.cached_tokens, r.cache_write_tokens
FROM runs r LEFT JOIN plan p USING (plan_key)
ORDER BY r.run_id
"""

FAILED_KINDS_SQL = """
SELECT error_type, count(*) FROM failures
WHERE request_id IN (SELECT request_id FROM plan_requests WHERE plan_key = ?)
GROUP BY 1 ORDER BY 2 DESC
"""


def status(db: str | Path) -> list[dict[str, Any]]:
    """One dict per run: the run's own counts and its plan's done/pending/failed (and the
    recipe stage it ran, where it was one)."""
    return status_and_stages(db)[0]


def status_and_stages(db: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs (as `status`) and the recipe stages: planned, answered, failed, rows, kept."""
    con = connect(db, read_only=True)
    try:
        stages = stage_store.status(con)
        by_plan = {s["plan_key"]: s for s in stages if s["plan_key"]}
        cur = con.execute(RUNS_SQL)
        cols = [d[0] for d in cur.description]
        runs = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        # The run that holds the store is the only one that can be running; any other row
        # still saying so belongs to a process that was killed (generate marks it so).
        live_run = con.info.get("run_id") if isinstance(con, LiveConnection) else None
        for run in runs:
            if run["status"] == "running" and run["run_id"] != live_run:
                run["status"] = "killed"
            config = orjson.loads(run.pop("config") or "{}")
            run["failed_by_kind"] = dict(con.execute(FAILED_KINDS_SQL, [run["plan_key"]]).fetchall())
            total = run["total"] or 0
            run["pending"] = total - (run["answered"] or 0) - (run["failed"] or 0)
            run["batch"] = bool(config.get("batch"))
            prices = Prices.of_config(config)
            run["cost"] = _cost(run, prices)
            run["prices"] = prices.describe() if prices.known else None
            stage = by_plan.get(run["plan_key"])
            run["recipe"], run["stage"] = (stage["recipe"], stage["stage"]) if stage else (None, None)
        return runs, stages
    finally:
        con.close()


def _cost(run: dict[str, Any], prices: Prices) -> float | None:
    """At the run's prices; a batch run's at the batch discount off them (pricing.py)."""
    return prices.cost(run["prompt_tokens"], run["completion_tokens"],
                                         run.get("cached_tokens"), run.get("cache_write_tokens"))


def input_label(source: str | None, width: int = 48) -> str:
    """A plan's input (`plans.source`) short enough for a label: a file's name, or the
    start of a query (the report's funnel and the viewer's stage list show it)."""
    if not source:
        return "(unnamed)"
    if source.startswith("sql: "):
        text = "query: " + " ".join(source[5:].split())
        return text if len(text) <= width else text[: width - 1] + "…"
    name = Path(source).name
    return name if len(name) <= width else "…" + name[-(width - 1):]
