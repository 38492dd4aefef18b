"""A run's plan through the engine: the governor around the transports, the single writer,
the progress reporter and the run's row kept at what is committed.

    Engine(planner.pending, Governor(transports) [+ SchemaCheck], Writer)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import duckdb

from ..engine import adaptive
from ..engine.budget import BudgetGate
from ..engine.core import FETCH_ROWS, Engine
from ..engine.governor import build_governor
from ..engine.limiter import ConcurrencyLimit
from ..engine.progress import report
from ..engine.server_queue import watch_queues
from ..errors import RunAborted, StoreWriteError, first_line
from ..fit import SchemaCheck
from ..store import runs
from ..store.commit import warm_arrow
from ..store.runs import spent_by_other_runs
from ..store.writer import Writer
from .session import Ended

if TYPE_CHECKING:
    from ..engine.adaptive import AdaptiveConcurrency
    from ..types import Stats
    from .session import Run

RECORD_EVERY = 1.0


async def drive(run: Run, transports: list[Any]) -> Ended:
    """Send the plan's pending requests until done or stopped; how it ended."""
    cfg, stats, planner = run.cfg, run.stats, run.planner
    assert planner is not None
    limits = cfg.limits
    limit = ConcurrencyLimit(adaptive.INITIAL if limits.concurrency == "auto" else limits.concurrency)
    stats.limit = limit.limit
    governor = build_governor(limits, transports, limit, stats)
    queues = _watch_vllm_queues(transports, governor.adaptive, stats)
    if cfg.logprobs is not None:  # logprobs are written through Arrow: ready before the first answer
        warm_arrow()
    writer = Writer(run.con.cursor(), run.run_id, cfg.flush_interval,
                    replace_failures=cfg.retry_failed, db=cfg.db).start()
    planner.start(stats)
    heard = run.reporting
    reporter = asyncio.create_task(report(stats, heard.stream, heard.interval, heard.callback,
                                          pacing=governor.pacing))
    recorder = asyncio.create_task(_record_progress(run, writer))
    # A response schema is checked on every answer, outside the governor (fit.py)
    sender = governor if cfg.response_schema is None else SchemaCheck(governor, cfg.response_schema)
    if cfg.budget is not None or cfg.spend_per_window is not None:  # outermost: it sees every attempt
        sender = BudgetGate(sender, cfg.prices, cfg.max_tokens_sent, cfg.budget,
                            spent_before=spent_by_other_runs(run.con, run.run_id),
                            window=cfg.spend_window)
    engine = Engine(planner.pending(cfg.retry_failed, FETCH_ROWS), sender, writer, limit=limit,
                    stats=stats, max_attempts=limits.max_attempts, retry_sleep=heard.retry_sleep,
                    on_stop=planner.stop, rate_limit_wait=limits.rate_limit_wait,
                    length_retries=limits.length_retries, key=str(run.run_id))
    plan_failed: duckdb.Error | None = None
    try:
        await engine.run()
    except duckdb.Error as exc:  # the planner could not write the plan (a full disk)
        plan_failed = exc
    finally:
        planner.stop()
        await governor.aclose()
        for task in (reporter, recorder, queues):
            task.cancel()
        await asyncio.gather(reporter, recorder, queues, return_exceptions=True)
        writer.close()  # commits whatever is queued; raises StoreWriteError if it could not
        if writer.unstorable:
            heard.warn(f"{len(writer.unstorable):,} answers held values no column could store; "
                       f"they are in failures as 'unstorable' (first: {writer.unstorable[0].message})")
    if plan_failed is not None:
        raise StoreWriteError(first_line(plan_failed), committed=writer.committed_answers) from plan_failed
    raised = _raised(engine)
    return Ended(str(raised) if engine.stop_reason == "budget" else engine.stop_reason, raised)


def _raised(engine: Engine) -> BaseException | None:
    """What the run raises once its row is closed: a crash, a failure of the store, or why
    it stopped early (not a Ctrl-C: the summary says interrupted)."""
    if engine.crash is not None:
        return engine.crash
    if engine.failure is not None:
        return engine.failure
    if engine.stop_reason == "budget":
        return RunAborted(f"{engine.budget_spent}; the rest is pending: rerun with a larger --budget "
                          "to continue")
    if engine.stop_reason not in (None, "interrupted"):
        return RunAborted(engine.stop_reason)
    return None


async def _record_progress(run: Run, writer: Writer) -> None:
    """Keep the run's row at what is committed, so `status` during the run (and after a
    kill) shows this run's counts instead of zeros."""
    while True:
        await asyncio.sleep(RECORD_EVERY)
        runs.record_counts(run.con, run.run_id, run.stats,
                           committed=(writer.committed_answers, writer.committed_failures))


def _watch_vllm_queues(transports: list[Any], auto: AdaptiveConcurrency | None,
                       stats: Stats) -> asyncio.Task[None]:
    """With --concurrency auto, a task that reads the queue of every vLLM endpoint (known by
    the preflight's GET /models) into the adaptive limit (engine/server_queue.py)."""
    urls = [t.endpoint for t in transports if getattr(t, "dialect", None) == "vllm"] if auto else []

    async def watch() -> None:
        from ..backends.vllm_metrics import MetricsReader  # with aiohttp, as the transports

        async with contextlib.AsyncExitStack() as stack:
            readers = [await stack.enter_async_context(MetricsReader(url)) for url in urls]
            await watch_queues([r.read for r in readers], auto, stats)

    return asyncio.create_task(watch())


