"""`generate()`: the Python API behind `synthgen generate`, and the one place that wires
the pipeline together:

    precheck (the input, before anything starts) ──> the teacher (given, or the bundled
    one started) ──> transports + preflight ──> the store ──> Run (session.py):
        Planner.validate ──> Planner.start (plans in a thread)
        ──> online.py: Engine(pending, Governor(transports), Writer)
            or batch.py: BatchRunner (files, batches, polls, ingestion; synthgen/batch/)
        ──> LiveServer (others read the store meanwhile) ──> the run's row closed

    teacher.py   the bundled teacher a run starts when it is given none
    signals.py   Ctrl-C, SIGTERM and SIGHUP before and after sending
    reporting.py who hears about the run (the library prints nothing on its own)

Silent unless asked: `progress=stream` gets plain progress lines, `on_progress` gets the
live `Stats`, and warnings go to the "synthgen" logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import duckdb
from pydantic import ValidationError

from .. import precheck, store
from ..backends import registry
from ..backends.base import ListsModels
from ..backends.think import parse_tags
from ..batch import records as batch_records
from ..config import GenerateConfig, describe_validation_error
from ..engine.preflight import check_teachers
from ..errors import ConfigError, InputError
from ..plan import Planner
from ..pricing import estimate_cost
from ..store import recovery
from ..store.memory import limit_memory
from ..store.plans import plan_counts
from ..store.runs import mark_killed_runs
from ..types import RunSummary, Stats
from . import batch, online
from .reporting import Reporting
from .session import Run
from .signals import StopFlag
from .teacher import local_model, teacher_settings

if TYPE_CHECKING:
    from ..backends.base import Transport
    from ..inputs.templates import Template

__all__ = ["RunSummary", "estimate_cost", "generate", "mark_killed_runs", "plan_only", "teacher_settings"]


def generate(config: GenerateConfig | None = None, /, *, progress: TextIO | None = None,
             progress_interval: float | None = None,
             on_progress: Callable[[Stats], None] | None = None, retry_sleep=None,
             prompt_template: Template | None = None,
             transport: Transport | Sequence[Transport] | None = None, **options: Any) -> RunSummary:
    """Send every pending request of the input to the teacher and store the answers.

    Pass a `GenerateConfig`, or its fields as keywords:
    ``generate(input="prompts.jsonl", db="corpus.duckdb", model="gpt-4o-mini",
    base_urls=["https://api.openai.com/v1"])``. Without `base_urls`, the bundled local
    teacher is started for the run and stopped after it; `transport` sends through
    transports of your own instead (anything with `async send(Request) -> Answer` and an
    `endpoint`, see `synthgen.backends.base.Transport`).

    Nothing is written to stdout or stderr: pass `progress` (a text stream: a plain line
    every `progress_interval` seconds, default 10) or `on_progress` (called with the live
    `Stats` every `progress_interval`, default 0.25 s) to follow the run.
    `prompt_template` is a compiled template (a recipe's inline one) used instead of
    `config.template`.
    """
    if config is None:
        try:
            config = GenerateConfig(**options)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, "generate()")) from None
    elif options:
        config = config.model_copy(update=options)
    transports = _given(transport)
    if transports:
        config = config.model_copy(update={"base_urls": [], "model": config.model or "custom"})
    reporting = Reporting(progress, progress_interval, on_progress, retry_sleep)
    backend = registry.get(config.api)
    if not config.base_urls and not transports and backend.base_url:  # the API's own address
        config = config.model_copy(update={"base_urls": [backend.base_url]})
    for warning in backend.check(config) if backend.check is not None else []:
        reporting.warn(warning)  # what the API cannot do is refused (ConfigError) before anything
    if config.logprobs and config.logprobs_mode == "processed" and config.top_p not in (None, 1, 1.0):
        reporting.warn(f"the teacher's logprobs are processed (after sampling's settings), and top_p "
                       f"{config.top_p:g} makes every token outside the nucleus -inf: KD cannot "
                       "recover that tail. For KD targets send --top-p none (or 1).")
    template = prompt_template
    if template is None and config.template and config.given_plan is None:  # a given plan is rendered
        from ..inputs.templates import load_template

        template = load_template(config.template, config.prompts_dir)
    # The input and its lines, before a teacher is started or a store created (precheck.py)
    local = not config.base_urls and not transports
    stop = StopFlag()
    with stop.handling():
        checked = precheck.check(config.planning, template, local_model if local else None, stop.is_set)
    if checked is None:  # a signal while the input was read: nothing was started or stored
        raise KeyboardInterrupt
    if local and checked.finished:  # a finished store: nothing to send, no teacher to start
        update = {"model": local_model(), "logprobs_mode": config.logprobs_mode or "raw",
                  "skip_preflight": True}
        return _generate(config.model_copy(update=update), reporting, template, checked)
    if transports:
        return _generate(config, reporting, template, checked, transports)
    given = "concurrency" in config.model_fields_set
    with teacher_settings(config.base_urls, config.threads, given) as update:
        return _generate(config.model_copy(update=update), reporting, template, checked)


def _given(transport: Any) -> list[Any]:
    if transport is None:
        return []
    return [transport] if hasattr(transport, "send") else list(transport)


def plan_only(cfg: GenerateConfig, prompt_template: Template | None = None) -> RunSummary:
    """Validate and plan the input into the store, sending nothing (what `synthgen batch
    write` needs before it writes files for `vllm run-batch`, and `--dry-run` before it
    estimates). The run is recorded as "planned"; its `pending` is what is left to answer.
    `prompt_template`: a compiled template (a recipe stage's) instead of `cfg.template`."""
    if not cfg.model:
        raise ConfigError("model is required to plan requests (the name the teacher serves)")
    template = prompt_template
    if template is None and cfg.template:
        from ..inputs.templates import load_template

        template = load_template(cfg.template, cfg.prompts_dir)
    con = store.connect(cfg.db)
    try:
        mark_killed_runs(con)
        run = Run(con, cfg, Reporting(), StopFlag())
        planner = Planner(con, cfg.planning, run.run_id, template)
        try:
            planner.validate()
            plan = planner.plan_all()
        except InputError as exc:
            run.close("invalid_input", str(exc))
            raise
        finally:
            planner.close()  # an --input-sql snapshot is not needed once planned
        counts = plan_counts(con, plan.key, plan.total)
        s = run.summary
        s.total, s.invalid, s.duplicates = plan.total, plan.invalid, plan.duplicates
        s.plan_reused = plan.reused
        s.already_done, s.pending = counts["answered"] + counts["failed"], counts["pending"]
        run.close("planned")
        return s
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()


def _generate(cfg: GenerateConfig, reporting: Reporting, template: Template | None,
              checked: precheck.Checked, transports: list[Any] | None = None) -> RunSummary:
    api_key = os.environ.get(cfg.key_env) or None
    if api_key is None and cfg.api_key_env:
        raise ConfigError(f"--api-key-env {cfg.api_key_env}: that environment variable is not set "
                          "(or empty); export it, or leave --api-key-env out for a server without keys")
    stop = StopFlag()
    with stop.handling():
        return run_async(_with_teachers(cfg, template, api_key, reporting, stop, checked, transports))


def run_async(coro: Coroutine[Any, Any, RunSummary]) -> RunSummary:
    """Run the sending on uvloop where it is installed (the client is CPU-bound: uvloop's
    event loop costs a run ~20% less CPU per answer, bench/cpu.py), else asyncio's own.
    SYNTHGEN_EVENT_LOOP=asyncio picks asyncio's loop whatever is installed."""
    factory = None
    if os.environ.get("SYNTHGEN_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


async def _with_teachers(cfg: GenerateConfig, template: Template | None, api_key: str | None,
                         reporting: Reporting, stop: StopFlag, checked: precheck.Checked,
                         given: list[Any] | None) -> RunSummary:
    """The teacher's transports (and a Batch API client), checked once, then the store."""
    backend = registry.get(cfg.api)  # its module imports aiohttp only when it makes a transport
    async with contextlib.AsyncExitStack() as stack:
        think = parse_tags(cfg.think_tags)
        options = {"cache_prompt": cfg.cache_prompt, "think_tags": think}
        transports = given or [await stack.enter_async_context(
            backend.transport(url, cfg.model or "", api_key, cfg.timeout, options)) for url in cfg.base_urls]
        if not cfg.skip_preflight and not given:
            askable = [t for t in transports if isinstance(t, ListsModels)]
            for warning in await check_teachers(askable, cfg.model or "") if askable else []:
                reporting.warn(warning)
        client = None
        if cfg.batch:
            if backend.batch is None:
                raise ConfigError(f"--batch: the {backend.name} API has no batch endpoint here")
            client = await stack.enter_async_context(backend.batch(cfg.base_urls[0], api_key, cfg.timeout))
            if hasattr(client, "think"):  # a client that reads OpenAI bodies splits as online answers are
                client.think = think
        con = store.connect(cfg.db)
        try:
            limit_memory(con)
            mark_killed_runs(con)
            if restored := recovery.restore(con, cfg.db):
                reporting.warn(f"stored {restored:,} answers and failures that an earlier run "
                               "received but could not write")
            if not cfg.batch:
                _warn_batches_in_flight(con, cfg, reporting)
            drive = (functools.partial(batch.drive, transport=transports[0], client=client) if client
                     else functools.partial(online.drive, transports=transports))
            run = Run(con, cfg, reporting, stop)
            return await run.execute(drive, template, checked.validated)
        finally:
            with contextlib.suppress(duckdb.Error):
                con.close()


def _warn_batches_in_flight(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig,
                            reporting: Reporting) -> None:
    batches, requests = batch_records.in_flight(con)
    if batches:
        reporting.warn(f"{requests:,} requests are in {batches} Batch API batches still in flight; "
                       "an online run sends them again (paid twice): `synthgen generate --batch` "
                       f"collects them, `synthgen batch cancel --db {cfg.db}` cancels them")

