"""What the report shows, read from a store with SQL only (so it works on a `LiveConnection`
during a run as well as on a closed file): plain lists and dicts, no plotting here.

Time series are per run, in buckets of whole seconds chosen so that a run has at most
about MAX_BUCKETS of them (a 10-second run is drawn per second, a 10-hour one per 6 min)
that hold a few answers each; every bucket is there, the empty ones at 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..pricing import Prices
from ..store import stages as stage_store
from ..store.status import input_label

MAX_BUCKETS = 120
MIN_PER_BUCKET = 3
HIST_BINS = 40
# What `synthgen train` writes into its model directory (student/train.py's CONFIG_FILE; named
# here rather than imported, so the report never imports the student and its torch).
TRAIN_FILE = "synthgen_train.json"
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


@dataclass
class RunData:
    """One run: its row in `runs` and the series drawn for it."""

    run_id: int
    status: str
    model: str | None
    started_at: Any
    ended_at: Any
    answered: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    prices: Prices
    cached_tokens: int = 0  # of the prompt tokens: read from the provider's cache
    cache_write_tokens: int = 0  # ... and written to it
    stage: str | None = None  # the recipe stage it ran ("self-instruct · answers"), if one
    bucket_s: int = 1
    series: list[dict[str, Any]] = field(default_factory=list)  # per bucket: t, answers, tokens, p50...
    failures: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # kind -> (t, n)
    finish_reasons: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)  # p50, p90, p99 over the run
    prompt_hist: list[tuple[float, float, int]] = field(default_factory=list)  # (lo, hi, n)
    answer_hist: list[tuple[float, float, int]] = field(default_factory=list)
    length_unit: str = "tokens"

    @property
    def cost(self) -> float | None:
        return self.prices.cost(self.prompt_tokens, self.completion_tokens, self.cached_tokens,
                                self.cache_write_tokens)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass
class Stage:
    """One step of the funnel: planned -> answered -> kept (kept is None: not settled yet).

    A recipe stage has its recipe, what each keep rule removed, and (a judge stage with a
    `score` column) how many rows it rated at each score. A plan that is no recipe stage
    (a `generate` run's input) has no keep filter: what it answered is what it keeps."""

    name: str
    planned: int
    answered: int
    failed: int
    kept: int | None
    recipe: str | None = None
    removed: dict[str, int] = field(default_factory=dict)
    judge: bool = False
    text: str = ""  # the funnel in words, exactly as `synthgen status` prints it
    scores: list[tuple[float, int]] = field(default_factory=list)  # judge: (score, rows rated)


@dataclass
class EvalData:
    eval_id: str
    created_at: Any
    model_dir: str
    label: str
    rows: int
    metrics: dict[str, Any]


@dataclass
class ReportData:
    db: str
    runs: list[RunData]
    stages: list[Stage]
    stage_source: str  # where the funnel's stages came from, said in the report
    evals: list[EvalData]
    training: dict[str, list[dict[str, float]]]  # model_dir -> loss history
    live_run: int | None = None


def _rows(con: Any, sql: str, params: Any = None) -> list[tuple]:
    return con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()


def nice_bucket(duration_s: float, answers: int = 0) -> int:
    """Seconds per bucket: at most MAX_BUCKETS of them, and wide enough to hold about
    MIN_PER_BUCKET answers each (a slow run's 1-second buckets hold 0 or 1 answer: their
    rates read 0 and 1 answers/s, never the run's 0.27)."""
    want = max(1.0, duration_s / MAX_BUCKETS, MIN_PER_BUCKET * duration_s / answers if answers else 0.0)
    return next((s for s in NICE_STEPS if s >= want), int(math.ceil(want / 3600) * 3600))


def nice_width(top: float, bins: int = HIST_BINS) -> float:
    """A round bin width (1, 2, 5 x 10^k) that covers 0..top in about `bins` bins."""
    if top <= 0:
        return 1.0
    raw = top / bins
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def load(con: Any, db: str, live_run: int | None = None) -> ReportData:
    runs = [_run(con, row) for row in _rows(con, RUNS_SQL)]
    by_plan = {s["plan_key"]: s for s in stage_store.status(con) if s["plan_key"]}
    plans = dict(_rows(con, "SELECT run_id, plan_key FROM runs"))
    for run in runs:
        if (s := by_plan.get(plans.get(run.run_id))) is not None:
            run.stage = f"{s['recipe']} · {s['stage']}" + (" (judge: its answers are verdicts)" if s["judge"]
                                                          else "")
    stages, source = funnel(con)
    evals, training = _evals(con)
    return ReportData(db=db, runs=runs, stages=stages, stage_source=source, evals=evals,
                      training=training, live_run=live_run)


RUNS_SQL = """
SELECT run_id, status, model, started_at, ended_at, coalesce(answered, 0), coalesce(failed, 0),
       coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0), config,
       coalesce(cached_tokens, 0), coalesce(cache_write_tokens, 0)
FROM runs ORDER BY run_id
"""


def _run(con: Any, row: tuple) -> RunData:
    run_id, status, model, started, ended, answered, failed, pt, ct, config, cached, written = row
    cfg = json.loads(config) if isinstance(config, str) and config else {}
    run = RunData(run_id, status, model, started, ended, answered, failed, pt, ct, Prices.of_config(cfg),
                  cached, written)
    [(t0, t1)] = _rows(con, """
        SELECT least(min(epoch_ms(created_at)), (SELECT epoch_ms(started_at) FROM runs WHERE run_id = $r)),
               max(epoch_ms(created_at))
        FROM (SELECT created_at FROM responses WHERE run_id = $r
              UNION ALL SELECT created_at FROM failures WHERE run_id = $r)""", {"r": run_id})
    if t0 is None or t1 is None:
        return run  # nothing was stored by this run
    [(stored,)] = _rows(con, "SELECT count(*) FROM responses WHERE run_id = ?", [run_id])
    span = (t1 - t0) / 1000
    run.bucket_s = b = nice_bucket(span, stored)
    last = int(span // b)
    if last and span - last * b < b / 2:
        last -= 1  # a short tail joins the bucket before it: a rate over 0.3 s is noise
    params = {"r": run_id, "t0": t0, "b": b * 1000, "last": last}
    found = {bucket: rest for bucket, *rest in _rows(con, """
            SELECT least(floor((epoch_ms(created_at) - $t0) / $b)::BIGINT, $last) AS k, count(*),
                   sum(prompt_tokens)::BIGINT, sum(completion_tokens)::BIGINT,
                   quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.9),
                   quantile_cont(latency_ms, 0.99), count(*) FILTER (WHERE attempts > 1)
            FROM responses WHERE run_id = $r GROUP BY k ORDER BY k""", params)}
    for bucket in range(last + 1):  # every bucket, the empty ones at 0: a gap is no answer
        n, ptok, ctok, p50, p90, p99, retried = found.get(bucket, (0, 0, 0, None, None, None, 0))
        # the last bucket ends with the run: a rate over the time it covers
        width = max(float(b) / 2, span - bucket * b) if bucket == last else float(b)
        run.series.append({"t": bucket * b, "width": width, "answers": n, "answers_s": n / width,
                           "tokens_s": (ctok or 0) / width,
                           "prompt_tokens": ptok or 0, "completion_tokens": ctok or 0,
                           "p50": p50, "p90": p90, "p99": p99, "retried": retried})
    for bucket, ptok, ctok in _rows(con, """
            SELECT least(greatest(floor((epoch_ms(created_at) - $t0) / $b)::BIGINT, 0), $last) AS k,
                   sum(prompt_tokens)::BIGINT, sum(completion_tokens)::BIGINT
            FROM wasted_attempts WHERE run_id = $r GROUP BY k""", params):
        point = run.series[bucket]  # attempts paid but not kept: in the bill, so in its curve
        point["prompt_tokens"] += ptok or 0
        point["completion_tokens"] += ctok or 0
    for bucket, kind, n in _rows(con, """
            SELECT least(floor((epoch_ms(created_at) - $t0) / $b)::BIGINT, $last) AS k, error_type, count(*)
            FROM failures WHERE run_id = $r GROUP BY ALL ORDER BY k""", params):
        run.failures.setdefault(kind or "unknown", []).append((bucket * b, n))
    run.finish_reasons = {(k if k is not None else "(none)"): n for k, n in _rows(con, """
        SELECT finish_reason, count(*) FROM responses WHERE run_id = ? GROUP BY 1 ORDER BY 2 DESC""",
        [run_id])}
    [(p50, p90, p99)] = _rows(con, """SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.9),
        quantile_cont(latency_ms, 0.99) FROM responses WHERE run_id = ?""", [run_id])
    run.latency = {"p50": p50, "p90": p90, "p99": p99}
    _lengths(con, run)
    return run


def _lengths(con: Any, run: RunData) -> None:
    """Histograms of prompt and answer lengths in tokens (the teacher's usage), or in
    characters where the teacher reported no usage."""
    [(with_usage, n)] = _rows(con, "SELECT count(prompt_tokens), count(*) FROM responses WHERE run_id = ?",
                              [run.run_id])
    if not n:
        return
    if with_usage:
        prompt, answer = "r.prompt_tokens", "r.completion_tokens"
    else:
        run.length_unit = "characters"
        prompt, answer = "length(q.messages::VARCHAR)", "length(coalesce(r.text, ''))"
    base = "FROM responses r JOIN requests q USING (request_id) WHERE r.run_id = $r"
    for expr, target in ((prompt, run.prompt_hist), (answer, run.answer_hist)):
        [(top,)] = _rows(con, f"SELECT max({expr}) {base}", {"r": run.run_id})
        width = nice_width(float(top or 0))
        for k, count in _rows(con, f"SELECT floor({expr} / $w)::BIGINT AS k, count(*) {base} "
                                   "AND k IS NOT NULL GROUP BY k ORDER BY k", {"r": run.run_id, "w": width}):
            target.append((k * width, (k + 1) * width, count))


def funnel(con: Any) -> tuple[list[Stage], str]:
    """Per stage: requests planned, answered, failed, and kept, counted as `status` counts
    them (store/stages.py): every recipe stage by its name, then each plan that is no
    recipe stage, named after its input, with kept = answered (nothing filters it)."""
    recipe = stage_store.status(con)
    stages = [Stage(s["stage"], s["planned"], s["answered"], s["failed"], s["kept"], s["recipe"],
                    s["removed"], s["judge"], stage_store.funnel_text(s), _scores(con, s))
              for s in recipe]
    not_a_stage = ("WHERE p.plan_key NOT IN (SELECT plan_key FROM stages WHERE plan_key IS NOT NULL)"
                   if "stages" in _tables(con) else "")
    for source, planned, answered, failed in _rows(con, f"""
            SELECT p.source, count(*), count(r.request_id),
                   count(*) FILTER (WHERE r.request_id IS NULL AND f.request_id IS NOT NULL)
            FROM plans p JOIN plan_requests pr USING (plan_key)
                 LEFT JOIN responses r USING (request_id) LEFT JOIN failures f USING (request_id)
            {not_a_stage}
            GROUP BY p.source ORDER BY min(p.created_at)"""):
        stages.append(Stage(input_label(source), planned, answered, failed, None,
                            text=f"{planned:,} planned, {answered:,} answered, {failed:,} failed"))
    if recipe:
        where = "the recipes' stages (the stages table), then each plan that is no stage"
    else:
        where = "one stage per input (a plan): the store has no recipe stages (synthgen run makes them)"
    return stages, where


def _scores(con: Any, stage: dict[str, Any]) -> list[tuple[float, int]]:
    """A judge stage's verdicts by score (every verdict: one its keep removed rated a row too)."""
    if not stage["judge"] or stage["kept"] is None:
        return []
    columns = stage_store.stage_columns(con, stage["stage"])
    if "score" not in columns:
        return []
    rows = stage_store.decided_rows_sql(stage["stage"], columns)
    return [(float(v), n) for v, n in _rows(con, f"SELECT TRY_CAST(score AS DOUBLE) AS v, count(*) FROM "
                                                 f"({rows}) AS j WHERE v IS NOT NULL GROUP BY v ORDER BY v")]


def _tables(con: Any) -> set[str]:
    return {r[0] for r in _rows(con, "SELECT table_name FROM information_schema.tables")}


def _evals(con: Any) -> tuple[list[EvalData], dict[str, list[dict[str, float]]]]:
    evals = []
    for eval_id, created, model_dir, label, rows, metrics in _rows(con, """
            SELECT eval_id, created_at, model_dir, label, rows, metrics FROM evals
            ORDER BY created_at, label"""):
        data = json.loads(metrics) if isinstance(metrics, str) else (metrics or {})
        evals.append(EvalData(eval_id, created, model_dir or "", label or "", rows or 0,
                              data if isinstance(data, dict) else {}))
    return evals, _training(evals)


def _training(evals: list[EvalData]) -> dict[str, list[dict[str, float]]]:
    """Each evaluated model's loss history: `metrics.history` where the eval stored it, else
    the `history` that `synthgen train` wrote to its model directory."""
    out: dict[str, list[dict[str, float]]] = {}
    for ev in evals:
        if ev.label in ("untrained", "teacher") or ev.model_dir in out:
            continue
        history = ev.metrics.get("history")
        if not isinstance(history, list):
            history = _history_file(ev.model_dir)
        steps = [h for h in history or [] if isinstance(h, dict) and "step" in h and "loss" in h]
        if steps:
            out[ev.model_dir] = steps
    return out


def _history_file(model_dir: str) -> list | None:
    path = Path(model_dir) / TRAIN_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    history = data.get("history") if isinstance(data, dict) else None
    return history if isinstance(history, list) else None
