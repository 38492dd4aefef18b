"""`generate()`: the Python API behind `synthgen generate`, and the one place that wires
the pipeline together:

    preflight ──> store + run record ──> Planner.validate (the whole input, nothing sent)
        ──> Planner.start (plans in a thread) ──> Engine(pending, Governor(transports), Writer)
        ──> LiveServer (others read the store meanwhile) ──> run record closed with its counts

Whatever way the run ends (done, interrupted, aborted, crashed), the run row gets its
counts. Silent unless asked: `progress=stream` gets plain progress lines, `on_progress`
gets the live `Stats`, and warnings go to the "synthgen" logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import duckdb
import orjson
from pydantic import ValidationError

from . import store
from .backends.http import HttpTransport
from .config import GenerateConfig, describe_validation_error
from .engine import adaptive
from .engine.core import FETCH_ROWS, Engine, raise_if_aborted
from .engine.governor import build_governor
from .engine.limiter import ConcurrencyLimit
from .engine.preflight import check_teachers
from .engine.progress import report
from .errors import ConfigError, InputError
from .plan import Planner, plan_counts
from .store.live import LiveServer
from .store.memory import limit_memory
from .store.writer import Writer
from .types import Stats

log = logging.getLogger("synthgen")


@dataclass
class RunSummary:
    """What a run did. `pending` > 0 means running the same command again resumes."""

    run_id: int
    status: str  # done | interrupted | aborted | failed | invalid_input | incomplete
    total: int = 0
    already_done: int = 0
    answered: int = 0
    failed: int = 0
    pending: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    plan_reused: bool = False
    model: str = ""
    message: str | None = None
    cost: float | None = None  # estimated, where --price-in/--price-out were given

    @property
    def requests_per_s(self) -> float:
        return (self.answered + self.failed) / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class _Reporting:
    """Who asked to hear about the run, and how often."""

    stream: TextIO | None = None
    interval: float | None = None
    callback: Callable[[Stats], None] | None = None
    retry_sleep: Any = None

    def warn(self, message: str) -> None:
        log.warning(message)
        if self.stream is not None:
            self.stream.write(f"warning: {message}\n")


def generate(config: GenerateConfig | None = None, /, *, progress: TextIO | None = None,
             progress_interval: float | None = None,
             on_progress: Callable[[Stats], None] | None = None, retry_sleep=None,
             **options: Any) -> RunSummary:
    """Send every pending request of the input to the teacher and store the answers.

    Pass a `GenerateConfig`, or its fields as keywords:
    ``generate(input="prompts.jsonl", db="corpus.duckdb", model="gpt-4o-mini",
    base_urls=["https://api.openai.com/v1"])``. Without `base_urls`, the bundled local
    teacher is started for the run and stopped after it.

    Nothing is written to stdout or stderr: pass `progress` (a text stream: a plain line
    every `progress_interval` seconds, default 10) or `on_progress` (called with the live
    `Stats` every `progress_interval`, default 0.25 s) to follow the run.
    """
    if config is None:
        try:
            config = GenerateConfig(**options)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, "generate()")) from None
    elif options:
        config = config.model_copy(update=options)
    reporting = _Reporting(progress, progress_interval, on_progress, retry_sleep)
    if not config.base_urls:
        from .teacher import start_teacher

        with start_teacher("local", threads=config.threads, announce=log.info) as teacher:
            update: dict[str, Any] = {"base_urls": teacher.base_urls, "model": teacher.model}
            if "concurrency" not in config.model_fields_set and teacher.concurrency_hint:
                # 64 requests queued on 4 CPU slots only slow Ctrl-C down.
                update["concurrency"] = teacher.concurrency_hint
            local = config.model_copy(update=update)
            return _generate(local, reporting)
    return _generate(config, reporting)


def _generate(cfg: GenerateConfig, reporting: _Reporting) -> RunSummary:
    template = None
    if cfg.template:
        from .inputs.templates import load_template

        template = load_template(cfg.template, cfg.prompts_dir)
    api_key = os.environ.get(cfg.api_key_env) or None
    return asyncio.run(_with_teachers(cfg, template, api_key, reporting))


async def _with_teachers(cfg: GenerateConfig, template, api_key: str | None,
                         reporting: _Reporting) -> RunSummary:
    async with contextlib.AsyncExitStack() as stack:
        transports = [await stack.enter_async_context(
            HttpTransport(url, cfg.model or "", api_key, cfg.timeout)) for url in cfg.base_urls]
        if not cfg.skip_preflight:
            for warning in await check_teachers(transports, cfg.model or ""):
                reporting.warn(warning)
        con = store.connect(cfg.db)
        limit_memory(con)
        try:
            return await _with_store(con, cfg, template, transports, reporting)
        finally:
            con.close()


async def _with_store(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, template,
                      transports: list[HttpTransport], reporting: _Reporting) -> RunSummary:
    run_id = _open_run(con, cfg)
    summary = RunSummary(run_id=run_id, status="failed", model=cfg.model or "")
    started = time.monotonic()
    planner = Planner(con, cfg, run_id, template)
    try:
        planner.validate()
    except InputError as exc:
        summary.status, summary.message = "invalid_input", str(exc)
        _close_run(con, summary)
        raise
    planner.claim()
    stats = Stats(started=started)
    if planner.reused:
        counts = plan_counts(con, planner.key, planner.total)
        stats.total = counts["total"]
        stats.already_done = counts["answered"] + (0 if cfg.retry_failed else counts["failed"])
        # Nothing to send: a finished million-prompt job answers at once instead of
        # reading its whole plan back to find no pending row.
        to_send = stats.total > stats.already_done
    else:
        stats.total, stats.planning, to_send = planner.expected, True, True
    # From here the store is read by others through this process, and reads nothing else.
    live = LiveServer(con, cfg.db, {"run_id": run_id}).start()
    con.execute("SET enable_external_access = false")
    engine: Engine | None = None
    try:
        if to_send:
            engine = await _drive(con, cfg, run_id, planner, stats, transports, reporting)
        reason = engine.stop_reason if engine is not None else None
        summary.status = "done" if reason is None else (
            "interrupted" if reason == "interrupted" else "aborted")
        summary.message = reason if summary.status == "aborted" else None
    finally:
        planner.stop()
        try:
            planner.join()
        finally:
            live.close()
            plan = planner.plan
            after = plan_counts(con, plan.key, max(plan.total, stats.total))
            summary.total, summary.invalid, summary.plan_reused = after["total"], plan.invalid, plan.reused
            summary.already_done = stats.already_done
            summary.answered, summary.failed = stats.answered, stats.failed
            summary.pending = after["pending"] if planner.finished else max(
                after["pending"], planner.expected - after["answered"] - after["failed"])
            summary.prompt_tokens, summary.completion_tokens = stats.prompt_tokens, stats.completion_tokens
            summary.errors = dict(stats.errors)
            summary.cost = estimate_cost(stats.prompt_tokens, stats.completion_tokens,
                                         cfg.price_in, cfg.price_out)
            summary.elapsed = time.monotonic() - started
            if summary.status == "done" and summary.pending and not cfg.retry_failed:
                summary.status = "incomplete"
            _close_run(con, summary)
    if engine is not None:
        raise_if_aborted(engine)
    return summary


async def _drive(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, run_id: int, planner: Planner,
                 stats: Stats, transports: list[HttpTransport], reporting: _Reporting) -> Engine:
    concurrency = adaptive.INITIAL if cfg.concurrency == "auto" else cfg.concurrency
    limit = ConcurrencyLimit(concurrency)
    stats.limit = limit.limit
    governor = build_governor(cfg, transports, limit, stats)
    writer = Writer(con.cursor(), run_id, cfg.flush_interval,
                    replace_failures=cfg.retry_failed).start()
    planner.start(stats)
    reporter = asyncio.create_task(report(stats, reporting.stream, reporting.interval, reporting.callback))
    recorder = asyncio.create_task(_record_progress(con, run_id, writer, stats))
    engine = Engine(planner.pending(cfg.retry_failed, FETCH_ROWS), governor, writer, limit=limit,
                    stats=stats, max_attempts=cfg.max_attempts, retry_sleep=reporting.retry_sleep,
                    on_stop=planner.stop)
    try:
        await engine.run()
    finally:
        planner.stop()
        await governor.aclose()
        for task in (reporter, recorder):
            task.cancel()
        await asyncio.gather(reporter, recorder, return_exceptions=True)
        writer.close()  # commits whatever is queued, even on Ctrl-C or a crash
    return engine


RECORD_EVERY = 1.0


async def _record_progress(con: duckdb.DuckDBPyConnection, run_id: int, writer: Writer,
                           stats: Stats) -> None:
    """Keep the run's row at what is committed, so `status` during the run (and after a
    kill) shows this run's counts instead of zeros."""
    while True:
        await asyncio.sleep(RECORD_EVERY)
        con.execute(
            "UPDATE runs SET answered = ?, failed = ?, prompt_tokens = ?, completion_tokens = ? "
            "WHERE run_id = ?",
            [writer.committed_answers, writer.committed_failures, stats.prompt_tokens,
             stats.completion_tokens, run_id])


def _open_run(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig) -> int:
    run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchone()[0]
    con.execute(
        "INSERT INTO runs (run_id, status, started_at, model, base_urls, config, versions) "
        "VALUES (?, 'running', now(), ?, ?, ?, ?)",
        [run_id, cfg.model, cfg.public_dict()["base_urls"],
         orjson.dumps(cfg.public_dict()).decode(), orjson.dumps(versions()).decode()],
    )
    return run_id


def _close_run(con: duckdb.DuckDBPyConnection, s: RunSummary) -> None:
    con.execute(
        "UPDATE runs SET status = ?, ended_at = now(), answered = ?, failed = ?, "
        "prompt_tokens = ?, completion_tokens = ?, message = ?, "
        "planned = coalesce(planned, ?) WHERE run_id = ?",
        [s.status, s.answered, s.failed, s.prompt_tokens, s.completion_tokens,
         s.message, s.total, s.run_id],
    )


def estimate_cost(prompt_tokens: int, completion_tokens: int, price_in: float | None,
                  price_out: float | None) -> float | None:
    """Cost from prices per million tokens; None when no price was given."""
    if price_in is None and price_out is None:
        return None
    return (prompt_tokens * (price_in or 0) + completion_tokens * (price_out or 0)) / 1e6


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # ~30 ms of import: only here

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("synthgen", "duckdb", "aiohttp", "tenacity", "pydantic", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out
