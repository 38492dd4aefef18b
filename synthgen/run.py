"""`generate()`: the Python API behind `synthgen generate`.

Records a run, plans the input, drives the engine, and closes the run row with its
counts, whatever way the run ends (done, interrupted, aborted, crashed).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

import duckdb
import orjson
from pydantic import ValidationError

from . import adaptive, store
from .client import TeacherClient
from .config import GenerateConfig, describe_validation_error
from .engine import Engine, Stats, raise_if_aborted
from .errors import ConfigError, InputError
from .governor import build_governor
from .limiter import ConcurrencyLimit
from .plan import make_plan, plan_counts
from .preflight import check_teachers
from .progress import report
from .templates import load_template
from .writer import Writer


@dataclass
class RunSummary:
    """What a run did. `pending` > 0 means running the same command again resumes."""

    run_id: int
    status: str  # done | interrupted | aborted | failed | invalid_input
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


def generate(config: GenerateConfig | None = None, /, *, progress: TextIO | None = None,
             progress_interval: float | None = None, retry_sleep=None,
             **options: Any) -> RunSummary:
    """Send every pending request of the input to the teacher and store the answers.

    Pass a `GenerateConfig`, or its fields as keywords:
    ``generate(input="prompts.jsonl", db="corpus.duckdb", model="gpt-4o-mini",
    base_urls=["https://api.openai.com/v1"])``. Without `base_urls`, the bundled local
    teacher is started for the run and stopped after it.
    """
    if config is None:
        try:
            config = GenerateConfig(**options)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, "generate()")) from None
    elif options:
        config = config.model_copy(update=options)
    if not config.base_urls:
        from .teacher import start_teacher

        with start_teacher("local", threads=config.threads) as teacher:
            update: dict[str, Any] = {"base_urls": teacher.base_urls, "model": teacher.model}
            if "concurrency" not in config.model_fields_set and teacher.concurrency_hint:
                # 64 requests queued on 4 CPU slots only slow Ctrl-C down.
                update["concurrency"] = teacher.concurrency_hint
            local = config.model_copy(update=update)
            return _generate(local, progress, progress_interval, retry_sleep)
    return _generate(config, progress, progress_interval, retry_sleep)


def _generate(cfg: GenerateConfig, progress: TextIO | None, progress_interval: float | None,
              retry_sleep) -> RunSummary:
    template = load_template(cfg.template, cfg.prompts_dir) if cfg.template else None
    api_key = os.environ.get(cfg.api_key_env) or None
    if not cfg.skip_preflight:
        for warning in check_teachers(cfg.base_urls, api_key, cfg.model or ""):
            print(f"warning: {warning}", file=progress or sys.stderr)
    con = store.connect(cfg.db)
    store.limit_memory(con)
    try:
        run_id = _open_run(con, cfg)
        summary = RunSummary(run_id=run_id, status="failed", model=cfg.model or "")
        started = time.monotonic()
        try:
            plan = make_plan(con, cfg, run_id, template)
        except InputError as exc:
            summary.status, summary.message = "invalid_input", str(exc)
            _close_run(con, summary)
            raise
        counts = plan_counts(con, plan.key)
        con.execute("UPDATE runs SET plan_key = ?, planned = ? WHERE run_id = ?",
                    [plan.key, plan.total, run_id])
        stats = Stats(total=counts["total"],
                      already_done=counts["answered"] + (0 if cfg.retry_failed else counts["failed"]))
        summary.total, summary.already_done = counts["total"], stats.already_done
        summary.invalid, summary.plan_reused = plan.invalid, plan.reused
        engine: Engine | None = None
        to_send = stats.total > stats.already_done
        try:
            if to_send:
                engine = asyncio.run(_drive(con, cfg, api_key, run_id, plan.key, stats, progress,
                                            progress_interval, retry_sleep))
            # else nothing to send: a finished million-prompt job answers at once instead of
            # reading its whole plan back to find no pending row.
            reason = engine.stop_reason if engine is not None else None
            summary.status = "done" if reason is None else (
                "interrupted" if reason == "interrupted" else "aborted")
            summary.message = reason if summary.status == "aborted" else None
        finally:
            after = plan_counts(con, plan.key, counts["total"]) if to_send else counts
            summary.answered, summary.failed = stats.answered, stats.failed
            summary.pending = after["pending"]
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
    finally:
        con.close()


async def _drive(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, api_key: str | None,
                 run_id: int, plan_key: str, stats: Stats, progress: TextIO | None,
                 progress_interval: float | None, retry_sleep) -> Engine:
    concurrency = adaptive.INITIAL if cfg.concurrency == "auto" else cfg.concurrency
    limit = ConcurrencyLimit(concurrency)
    stats.limit = limit.limit
    writer = Writer(con.cursor(), run_id, cfg.flush_interval,
                    replace_failures=cfg.retry_failed).start()
    reporter = asyncio.create_task(report(stats, progress, progress_interval))
    try:
        async with TeacherClient(cfg.base_urls, api_key, cfg.timeout) as client:
            client.governor = build_governor(cfg, client, limit, stats)
            engine = Engine(con.cursor(), writer, client, limit, model=cfg.model or "",
                            plan_key=plan_key, max_attempts=cfg.max_attempts,
                            retry_failed=cfg.retry_failed, stats=stats, retry_sleep=retry_sleep)
            try:
                await engine.run()
            finally:
                if client.governor is not None:
                    await client.governor.aclose()
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        writer.close()  # commits whatever is queued, even on Ctrl-C or a crash
    return engine


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
        "prompt_tokens = ?, completion_tokens = ?, message = ? WHERE run_id = ?",
        [s.status, s.answered, s.failed, s.prompt_tokens, s.completion_tokens,
         s.message, s.run_id],
    )


def estimate_cost(prompt_tokens: int, completion_tokens: int, price_in: float | None,
                  price_out: float | None) -> float | None:
    """Cost from prices per million tokens; None when no price was given."""
    if price_in is None and price_out is None:
        return None
    return (prompt_tokens * (price_in or 0) + completion_tokens * (price_out or 0)) / 1e6


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("synthgen", "duckdb", "aiohttp", "tenacity", "pydantic", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out
