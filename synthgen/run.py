"""`generate()`: the Python API behind `synthgen generate`, and the one place that wires
the pipeline together:

    preflight ──> store + run record ──> Planner.validate (the whole input, nothing sent)
        ──> Planner.start (plans in a thread) ──> Engine(pending, Governor(transports), Writer)
        ──> LiveServer (others read the store meanwhile) ──> run record closed with its counts

With `batch=True` the same plan goes through a Batch API instead of the engine:
Planner.pending ──> BatchRunner (files, batches, polls, ingestion; synthgen/batch/).

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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import duckdb
import orjson
from pydantic import ValidationError

from . import store
from .backends.http import HttpTransport
from .backends.openai_batch import BatchClient
from .backends.vllm_metrics import MetricsReader
from .batch import records as batch_records
from .batch.runner import BatchRunner, Settings
from .config import GenerateConfig, describe_validation_error
from .engine import adaptive
from .engine.adaptive import AdaptiveConcurrency
from .engine.core import FETCH_ROWS, Engine, raise_if_aborted
from .engine.governor import build_governor
from .engine.limiter import ConcurrencyLimit
from .engine.preflight import check_teachers
from .engine.progress import report, snapshot
from .engine.server_queue import watch_queues
from .errors import ConfigError, InputError, RunAborted, StoreWriteError
from .fit import SchemaCheck
from .plan import Planner, plan_counts
from .store import recovery
from .store.live import LiveServer
from .store.memory import limit_memory
from .store.writer import Writer
from .types import Stats

if TYPE_CHECKING:
    from .backends.base import Transport
    from .inputs.templates import Template

log = logging.getLogger("synthgen")


@dataclass
class RunSummary:
    """What a run did. `pending` > 0 means running the same command again resumes."""

    run_id: int
    status: str  # done | interrupted | aborted | failed | invalid_input | incomplete
    #              | cancelled (a batch was cancelled) | planned (plan_only)
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
    cost: float | None = None  # estimated, where --price-in/--price-out were given (batch: discounted)
    batch: bool = False  # sent through a Batch API (generate --batch)
    batches_open: int = 0  # batch mode: batches still running at the API when the run ended
    batches_submitted: int = 0  # batch mode: batches this run created
    failed_by_kind: dict[str, int] = field(default_factory=dict)  # this run's failures
    duplicates: int = 0  # input lines that repeat an earlier line's request (duplicate_inputs)
    no_usage: int = 0  # answers without token counts: the cost misses them

    @property
    def all_failed_alike(self) -> bool:
        """Every request this run settled failed, and for the same reason: a setting (a
        model name, a parameter the server refuses), not the prompts."""
        return self.failed > 0 and self.answered == 0 and len(self.failed_by_kind) == 1

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
    transports: list[Transport] | None = None  # given ones, instead of HttpTransports

    def warn(self, message: str) -> None:
        log.warning(message)
        if self.stream is not None:
            self.stream.write(f"warning: {message}\n")


def generate(config: GenerateConfig | None = None, /, *, progress: TextIO | None = None,
             progress_interval: float | None = None,
             on_progress: Callable[[Stats], None] | None = None, retry_sleep=None,
             prompt_template: Template | None = None, transports: list[Transport] | None = None,
             **options: Any) -> RunSummary:
    """Send every pending request of the input to the teacher and store the answers.

    Pass a `GenerateConfig`, or its fields as keywords:
    ``generate(input="prompts.jsonl", db="corpus.duckdb", model="gpt-4o-mini",
    base_urls=["https://api.openai.com/v1"])``. Without `base_urls`, the bundled local
    teacher is started for the run and stopped after it.

    Nothing is written to stdout or stderr: pass `progress` (a text stream: a plain line
    every `progress_interval` seconds, default 10) or `on_progress` (called with the live
    `Stats` every `progress_interval`, default 0.25 s) to follow the run.
    `prompt_template` is a compiled template (a recipe's inline one) used instead of
    `config.template`. `transports` answer instead of `base_urls` (a model in this process:
    `synthgen student sample`); no bundled teacher is started and no preflight is sent then.
    """
    if config is None:
        try:
            config = GenerateConfig(**options)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, "generate()")) from None
    elif options:
        config = config.model_copy(update=options)
    reporting = _Reporting(progress, progress_interval, on_progress, retry_sleep, transports)
    if transports:
        return _generate(config, reporting, prompt_template)
    given = "concurrency" in config.model_fields_set
    with teacher_settings(config.base_urls, config.threads, given) as update:
        return _generate(config.model_copy(update=update), reporting, prompt_template)


@contextlib.contextmanager
def teacher_settings(base_urls: list[str], threads: int | None = None,
                     concurrency_given: bool = False) -> Iterator[dict[str, Any]]:
    """The settings that point a run at its teacher: none when `base_urls` are given;
    else the bundled local teacher is started (and stopped when the block ends), and
    these are its URL, its model name, its logprobs' mode (raw) and, unless one was given,
    a concurrency that suits it (64 requests queued on 4 CPU slots only slow Ctrl-C down).
    Recipes start it once for all their stages."""
    if base_urls:
        yield {}
        return
    from .teacher import start_teacher

    with start_teacher("local", threads=threads, announce=log.info) as teacher:
        # llama.cpp's server reports the model's own (raw, temperature-1) probabilities.
        update: dict[str, Any] = {"base_urls": teacher.base_urls, "model": teacher.model,
                                  "logprobs_mode": "raw"}
        if not concurrency_given and teacher.concurrency_hint:
            update["concurrency"] = teacher.concurrency_hint
        yield update


def plan_only(cfg: GenerateConfig) -> RunSummary:
    """Validate and plan the input into the store, sending nothing (what `synthgen batch
    write` needs before it writes files for `vllm run-batch`). The run is recorded as
    "planned"; its `pending` is what is left to answer."""
    if not cfg.model:
        raise ConfigError("model is required to plan requests (the name the teacher serves)")
    template = None
    if cfg.template:
        from .inputs.templates import load_template

        template = load_template(cfg.template, cfg.prompts_dir)
    con = store.connect(cfg.db)
    try:
        mark_killed_runs(con)
        run_id = _open_run(con, cfg)
        summary = RunSummary(run_id=run_id, status="failed", model=cfg.model)
        started = time.monotonic()
        planner = Planner(con, cfg, run_id, template)
        try:
            planner.validate()
            plan = planner.plan_all()
        except InputError as exc:
            summary.status, summary.message = "invalid_input", str(exc)
            _close_run(con, summary)
            raise
        finally:
            planner.close()  # an --input-sql snapshot is not needed once planned
        counts = plan_counts(con, plan.key, plan.total)
        summary.status, summary.total, summary.invalid = "planned", plan.total, plan.invalid
        summary.already_done, summary.pending = counts["answered"] + counts["failed"], counts["pending"]
        summary.plan_reused, summary.duplicates = plan.reused, plan.duplicates
        summary.elapsed = time.monotonic() - started
        _close_run(con, summary)
        return summary
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()


def _generate(cfg: GenerateConfig, reporting: _Reporting, template: Template | None = None) -> RunSummary:
    if template is None and cfg.template and cfg.given_plan is None:  # a given plan is rendered
        from .inputs.templates import load_template

        template = load_template(cfg.template, cfg.prompts_dir)
    api_key = os.environ.get(cfg.api_key_env) or None
    if api_key is None and "api_key_env" in cfg.model_fields_set:
        raise ConfigError(f"--api-key-env {cfg.api_key_env}: that environment variable is not set "
                          "(or empty); export it, or leave --api-key-env out for a server without keys")
    stop = _StopFlag()
    with stop.handling():
        return asyncio.run(_with_teachers(cfg, template, api_key, reporting, stop))


class _StopFlag:
    """Ctrl-C, SIGTERM or SIGHUP (a dropped SSH session) before or after sending: noted,
    so reading the input ends cleanly and the run's row is closed; while sending, the
    engine's own handlers take over (and put these back)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.requested = False

    def is_set(self) -> bool:
        return self.requested

    @contextlib.contextmanager
    def handling(self):
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    previous[sig] = signal.signal(sig, self._note)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _note(self, signum, frame) -> None:
        self.requested = True


async def _with_teachers(cfg: GenerateConfig, template, api_key: str | None,
                         reporting: _Reporting, stop: _StopFlag) -> RunSummary:
    async with contextlib.AsyncExitStack() as stack:
        transports = reporting.transports or [await stack.enter_async_context(
            HttpTransport(url, cfg.model or "", api_key, cfg.timeout)) for url in cfg.base_urls]
        if not cfg.skip_preflight and not reporting.transports:
            for warning in await check_teachers(transports, cfg.model or ""):
                reporting.warn(warning)
        client = None
        if cfg.batch:
            client = await stack.enter_async_context(
                BatchClient(cfg.base_urls[0], api_key, cfg.timeout))
        con = store.connect(cfg.db)
        try:
            limit_memory(con)
            mark_killed_runs(con)
            if restored := recovery.restore(con, cfg.db):
                reporting.warn(f"stored {restored:,} answers and failures that an earlier run "
                               "received but could not write")
            if not cfg.batch:
                _warn_batches_in_flight(con, cfg, reporting)
            return await _with_store(con, cfg, template, transports, reporting, stop, client)
        finally:
            with contextlib.suppress(duckdb.Error):
                con.close()


def _warn_batches_in_flight(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig,
                            reporting: _Reporting) -> None:
    batches, requests = batch_records.in_flight(con)
    if batches:
        reporting.warn(f"{requests:,} requests are in {batches} Batch API batches still in flight; "
                       "an online run sends them again (paid twice): `synthgen generate --batch` "
                       f"collects them, `synthgen batch cancel --db {cfg.db}` cancels them")


async def _with_store(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, template,
                      transports: list[HttpTransport], reporting: _Reporting,
                      stop: _StopFlag, client: BatchClient | None = None) -> RunSummary:
    run_id = _open_run(con, cfg)
    summary = RunSummary(run_id=run_id, status="failed", model=cfg.model or "")
    started = time.monotonic()
    try:
        planner = Planner(con, cfg, run_id, template)
    except ConfigError as exc:  # the input file is missing, the input query fails
        summary.status, summary.message = "invalid_input", str(exc)
        _close_run(con, summary)
        raise
    try:
        return await _plan_and_send(con, cfg, run_id, planner, summary, started, transports,
                                    reporting, stop, client)
    finally:
        planner.close()


async def _plan_and_send(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, run_id: int,
                         planner: Planner, summary: RunSummary, started: float,
                         transports: list[HttpTransport], reporting: _Reporting,
                         stop: _StopFlag, client: BatchClient | None = None) -> RunSummary:
    try:
        finished = planner.validate(should_stop=stop.is_set)
    except InputError as exc:
        summary.status, summary.message = "invalid_input", str(exc)
        _close_run(con, summary)
        raise
    if not finished:  # a signal while the input was read: nothing was planned or sent
        summary.status, summary.elapsed = "interrupted", time.monotonic() - started
        summary.pending = planner.expected
        _close_run(con, summary)
        return summary
    planner.claim()
    stats = Stats(started=started, price_in=cfg.price_in, price_out=cfg.price_out)
    if planner.reused:
        # One query, not partitions: at the start the answer key's index is not loaded, so
        # its hash table fits the run's memory (0.5 s against 2 s at a million requests).
        counts = plan_counts(con, planner.key)
        stats.total = counts["total"]
        stats.already_done = counts["answered"] + (0 if cfg.retry_failed else counts["failed"])
        # Nothing to send: a finished million-prompt job answers at once instead of
        # reading its whole plan back to find no pending row.
        to_send = stats.total > stats.already_done
    else:
        stats.total, stats.planning, to_send = planner.expected, True, True
    # From here the store is read by others through this process, and reads nothing else.
    live = LiveServer(con, cfg.db, {"run_id": run_id},
                      progress=lambda: snapshot(stats).as_dict()).start()
    con.execute("SET enable_external_access = false")
    engine: Engine | None = None
    batch_reason: str | None = None
    committed: int | None = None  # answers stored, where that differs from answers received
    try:
        if to_send and client is not None:
            batch_reason = await _drive_batches(con, cfg, run_id, planner, stats, transports[0],
                                                client, summary, reporting, stop)
        elif to_send:
            try:
                engine = await _drive(con, cfg, run_id, planner, stats, transports, reporting)
            except StoreWriteError as exc:
                committed, summary.message = exc.committed, str(exc)
                raise
        reason = engine.stop_reason if engine is not None else batch_reason
        summary.status = "done" if reason is None else (
            reason if reason in ("interrupted", "cancelled") else "aborted")
        summary.message = reason if summary.status == "aborted" else None
    finally:
        planner.stop()
        planner.join(raise_error=False)  # its error, if any, already stopped the engine
        live.close()
        _summarize(summary, cfg, planner, stats, started)
        if committed is not None:
            summary.answered = committed  # the run's record holds what is stored, no more
        try:
            summary.pending = _pending(con, cfg, planner, stats, exact=committed is None)
            if summary.status == "done" and summary.pending and not cfg.retry_failed:
                summary.status = "incomplete"
            _close_run(con, summary)
        except duckdb.Error:
            # The database itself failed (a full disk invalidates it): the exception on its
            # way out says what happened; the next run marks this run's row.
            log.debug("the run's row could not be closed", exc_info=True)
    if engine is not None:
        raise_if_aborted(engine)
    if summary.status == "aborted" and batch_reason is not None:
        raise RunAborted(batch_reason)
    return summary


def _summarize(summary: RunSummary, cfg: GenerateConfig, planner: Planner, stats: Stats,
               started: float) -> None:
    plan = planner.plan
    summary.total = max(plan.total, stats.total) if not planner.finished else plan.total
    summary.invalid, summary.plan_reused, summary.duplicates = plan.invalid, plan.reused, plan.duplicates
    summary.already_done = stats.already_done
    summary.answered, summary.failed = stats.answered, stats.failed
    summary.failed_by_kind = dict(stats.failures)
    summary.prompt_tokens, summary.completion_tokens = stats.prompt_tokens, stats.completion_tokens
    summary.no_usage = stats.no_usage
    summary.errors = dict(stats.errors)
    summary.cost = estimate_cost(stats.prompt_tokens, stats.completion_tokens,
                                 cfg.price_in, cfg.price_out)
    summary.batch = cfg.batch
    if cfg.batch and summary.cost is not None:
        summary.cost *= 1 - cfg.batch_discount
    summary.elapsed = time.monotonic() - started


def _pending(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, planner: Planner, stats: Stats,
             exact: bool) -> int:
    """What is left of the plan. Counted from the run's own figures where they are exact
    (the whole plan was read, one writer, every answer stored): a million-request plan's
    count takes seconds, which a user waits for at the end of every run."""
    if exact and planner.finished and not cfg.retry_failed and not cfg.batch:
        return planner.total - stats.already_done - stats.answered - stats.failed
    after = plan_counts(con, planner.key, max(planner.total, stats.total))
    if planner.finished:
        return after["pending"]
    # Cut short while planning: the rest of the input is planned by the next run.
    return max(after["pending"], planner.expected - after["answered"] - after["failed"])


async def _drive(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, run_id: int, planner: Planner,
                 stats: Stats, transports: list[HttpTransport],
                 reporting: _Reporting) -> Engine:
    concurrency = adaptive.INITIAL if cfg.concurrency == "auto" else cfg.concurrency
    limit = ConcurrencyLimit(concurrency)
    stats.limit = limit.limit
    governor = build_governor(cfg, transports, limit, stats)
    queues = _watch_vllm_queues(transports, governor.adaptive, stats)
    writer = Writer(con.cursor(), run_id, cfg.flush_interval,
                    replace_failures=cfg.retry_failed, db=cfg.db).start()
    planner.start(stats)
    reporter = asyncio.create_task(report(stats, reporting.stream, reporting.interval, reporting.callback,
                                          pacing=governor.pacing))
    recorder = asyncio.create_task(_record_progress(con, run_id, writer, stats))
    # A response schema is checked on every answer, outside the governor (fit.py)
    sender = governor if cfg.response_schema is None else SchemaCheck(governor, cfg.response_schema)
    engine = Engine(planner.pending(cfg.retry_failed, FETCH_ROWS), sender, writer, limit=limit,
                    stats=stats, max_attempts=cfg.max_attempts, retry_sleep=reporting.retry_sleep,
                    on_stop=planner.stop, rate_limit_wait=cfg.rate_limit_wait)
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
            reporting.warn(f"{len(writer.unstorable):,} answers held values no column could store; "
                           f"they are in failures as 'unstorable' (first: {writer.unstorable[0].message})")
    if plan_failed is not None:
        raise StoreWriteError(_first_line(plan_failed), committed=writer.committed_answers) from plan_failed
    return engine


def _watch_vllm_queues(transports: list[HttpTransport], auto: AdaptiveConcurrency | None,
                       stats: Stats) -> asyncio.Task[None]:
    """With --concurrency auto, a task that reads the queue of every vLLM endpoint (known by
    the preflight's GET /models) into the adaptive limit (engine/server_queue.py)."""
    urls = [t.endpoint for t in transports if t.dialect == "vllm"] if auto is not None else []

    async def watch() -> None:
        async with contextlib.AsyncExitStack() as stack:
            readers = [await stack.enter_async_context(MetricsReader(url)) for url in urls]
            await watch_queues([r.read for r in readers], auto, stats)

    return asyncio.create_task(watch())


async def _drive_batches(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, run_id: int,
                         planner: Planner, stats: Stats, transport: HttpTransport,
                         client: BatchClient, summary: RunSummary, reporting: _Reporting,
                         stop: _StopFlag) -> str | None:
    """The plan through the Batch API: the same pending requests, the same body as the
    online transport sends (`transport.body`), answers stored by the same INSERTs."""
    planner.start(stats)
    recorder = con.cursor()

    def should_stop() -> bool:
        if stop.is_set():
            planner.stop()
            return True
        return False

    def record() -> None:
        recorder.execute(
            "UPDATE runs SET answered = ?, failed = ?, prompt_tokens = ?, completion_tokens = ? "
            "WHERE run_id = ?",
            [stats.answered, stats.failed, stats.prompt_tokens, stats.completion_tokens, run_id])

    settings = Settings(max_requests=cfg.batch_max_requests, max_bytes=cfg.batch_max_bytes,
                        poll_interval=cfg.batch_poll_interval, poll_max=cfg.batch_poll_max,
                        max_attempts=cfg.max_attempts)
    runner = BatchRunner(con, client, lambda: planner.pending(cfg.retry_failed, FETCH_ROWS),
                         transport.body, run_id, planner.key, settings, stats,
                         should_stop=should_stop, on_progress=record)
    reporter = asyncio.create_task(report(stats, reporting.stream, reporting.interval, reporting.callback))
    try:
        return await runner.run()
    finally:
        planner.stop()
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        summary.batches_open = len(runner.open)
        summary.batches_submitted = runner.submitted
        recorder.close()


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


def mark_killed_runs(con: duckdb.DuckDBPyConnection) -> int:
    """Runs still marked running when we hold the store's write lock cannot be running:
    they were killed (or their store failed). Say so, keeping the counts they recorded."""
    rows = con.execute(KILLED_SQL).fetchall()
    return len(rows)


# A killed run recorded its counts at most a second before it died (or never, if it died
# while planning): they are counted again from what it stored.
KILLED_SQL = """
UPDATE runs SET status = 'killed',
    message = coalesce(message, 'the process ended without closing its run (killed, or its store '
                                || 'could not be written)'),
    answered = (SELECT count(*) FROM responses s WHERE s.run_id = runs.run_id),
    failed = (SELECT count(*) FROM failures f WHERE f.run_id = runs.run_id),
    prompt_tokens = (SELECT coalesce(sum(prompt_tokens), 0) FROM responses s WHERE s.run_id = runs.run_id),
    completion_tokens = (SELECT coalesce(sum(completion_tokens), 0) FROM responses s
                         WHERE s.run_id = runs.run_id)
WHERE status = 'running' RETURNING run_id
"""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
