"""Sharded clients: N Ray actors, each one more caller of `generate()` on its own store.

    driver (this process)                      actor i (a core anywhere on the cluster)
    sharding.prepare: plan the job in main,
      give shard i its pending hash range  ──>  generate(cfg, db=shard i, given_plan=...)
                                                 the same engine, writer, retries, resume
    wait; Ctrl-C here is Ctrl-C there    <──   RunSummary
    sharding.finish: fold every shard into main (anti-join on request_id), close the run

An actor is a process with one CPU of Ray's: generate() runs on its main thread, so a
SIGINT (what the driver sends on Ctrl-C, by a task on the actor's own node) stops it
exactly as Ctrl-C stops a run in a terminal: in-flight requests drain, the writer flushes. A shard
actor that is killed instead loses what a `kill -9` loses (the requests in flight, at
most 0.1 s of answers), and the same command run again folds what it stored and sends
the rest. Shard stores must be where the actors' nodes can write them and the driver
read them: beside the main store on one machine, `--shard-dir` on a shared file system
on a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import sharding
from ..config import GenerateConfig
from ..run import RunSummary
from .connect import NAMESPACE, connect, import_ray
from .fleet import reason

log = logging.getLogger("synthgen.cluster")
STOP_WAIT_S = 30.0


class ShardClient:
    """One shard's client process: `generate()` on the shard's store, nothing else."""

    def __init__(self) -> None:
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()

    def where(self) -> tuple[int, str]:
        """(pid, node id): where to send SIGINT on Ctrl-C."""
        return os.getpid(), self.node_id

    def run(self, cfg: GenerateConfig) -> RunSummary:
        """generate() on the shard's store. Ray workers block SIGINT; it is let through while
        the run lasts, so the driver's Ctrl-C (sent here by `_interrupt`) is generate's own."""
        from ..run import generate

        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        try:
            return generate(cfg)
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])


def _interrupt(pid: int) -> None:
    """Runs on the shard's node: a Ctrl-C for the shard's run. A shard that finished
    before it came (Ray starts a worker for it, seconds on a busy node) needs none."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)


def generate_sharded(cfg: GenerateConfig, *, shards: int, address: str | None,
                     shard_dir: Path | None = None, keep_shards: bool = False,
                     announce: Callable[[str], None] | None = None) -> RunSummary:
    """Run the job as `shards` client actors and fold their stores into `cfg.db`."""
    say = announce or log.info
    template = None
    if cfg.template:
        from ..inputs.templates import load_template

        template = load_template(cfg.template, cfg.prompts_dir)
    started = time.monotonic()
    job = sharding.prepare(cfg, shards, shard_dir, template)  # holds the main store until finish
    try:
        return _run_job(cfg, job, address, keep_shards, say, started)
    finally:
        job.close()  # finish let it go already, unless something failed on the way


def _run_job(cfg: GenerateConfig, job: sharding.Job, address: str | None, keep_shards: bool,
             say: Callable[[str], None], started: float) -> RunSummary:
    if job.folded_before.rows:
        say(f"folded {job.folded_before.answers:,} answers and {job.folded_before.failures:,} failures "
            "that shards of an earlier try had stored")
    outcomes = [sharding.ShardOutcome(s) for s in job.shards]
    interrupted = False
    busy = [o for o in outcomes if o.shard.pending]
    if busy:
        ray = import_ray()
        # A local cluster gets a CPU per shard even on a smaller machine: a shard asks Ray
        # for one CPU, and the shards are what the user asked to run at once.
        gcs = connect(address, must_exist=False, local_cpus=max(os.cpu_count() or 1, len(busy)))
        cpus = ray.cluster_resources().get("CPU", 0)
        say(f"{job.pending:,} requests pending: {len(busy)} shard(s) on the Ray cluster at {gcs}"
            + (f" ({cpus:g} CPUs: shards beyond that start as others end)" if cpus < len(busy) else ""))
        try:
            _run_on_ray(ray, cfg, busy, say)
        except KeyboardInterrupt:
            interrupted = True
    return sharding.finish(cfg, job, outcomes, keep_shards=keep_shards, interrupted=interrupted,
                           elapsed=time.monotonic() - started)


def _run_on_ray(ray: Any, cfg: GenerateConfig, busy: list[sharding.ShardOutcome],
                say: Callable[[str], None]) -> None:
    """One actor per shard; each is asked where it runs (for Ctrl-C) and then to run."""
    cls = ray.remote(ShardClient)
    actors, places, refs = [], [], {}
    try:
        for o in busy:
            actor = cls.options(num_cpus=1, max_restarts=0, namespace=NAMESPACE).remote()
            actors.append(actor)
            places.append(actor.where.remote())  # runs before `run`: an actor runs calls in order
            refs[actor.run.remote(o.shard.config(cfg))] = o
            say(f"{o.shard.label}: {o.shard.pending:,} requests -> {o.shard.path}")
        try:
            _collect(ray, refs, say)
        except KeyboardInterrupt:
            say("interrupted: stopping the shards (each finishes what is in flight and flushes)")
            _stop(ray, places, refs)
            raise
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def _collect(ray: Any, refs: dict[Any, sharding.ShardOutcome], say: Callable[[str], None]) -> None:
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
        for ref in done:
            o = refs[ref]
            try:
                o.summary = ray.get(ref)
            except ray.exceptions.RayError as exc:
                o.error = reason(exc)
                say(f"{o.shard.label}: ended without finishing ({o.error}); what it stored is kept, "
                    "and the same command run again sends the rest")
                continue
            s = o.summary
            say(f"{o.shard.label}: {s.status}, {s.answered:,} answered, {s.failed:,} failed, "
                f"{s.pending:,} pending in {s.elapsed:.1f}s")
            if s.status in ("aborted", "failed"):
                o.error = s.message or s.status


def _stop(ray: Any, places: list[Any], refs: dict[Any, sharding.ShardOutcome]) -> None:
    """Ctrl-C each shard that has started, on its own node, then wait (bounded) for their
    summaries. A shard that had not started yet stored nothing; its actor is removed."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started, _ = ray.wait(places, num_returns=len(places), timeout=0)
    kill = ray.remote(num_cpus=0)(_interrupt)
    for place in started:
        try:
            pid, node = ray.get(place)
        except ray.exceptions.RayError:  # that actor is already gone
            continue
        kill.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(pid)
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=STOP_WAIT_S)
    for ref in ready:
        try:
            refs[ref].summary = ray.get(ref)
        except ray.exceptions.RayError as exc:
            refs[ref].error = reason(exc)
