"""`--concurrency auto` against vLLM: its own queue as the backpressure signal.

A latency window (adaptive.py) learns of queueing after a window of slow answers; vLLM
says it at once on /metrics (backends/vllm_metrics.py): requests waiting for a slot, and
how full its KV cache is. vLLM never answers 429, so without this the only sign of "too
much" is latency. While a run goes, `watch_queues` reads every vLLM endpoint's gauges
each READ_EVERY seconds and hands the sum to `AdaptiveConcurrency.server_load`, which
brings the limit down by what waits; `stats.server_waiting` / `server_kv` show it.

An endpoint whose first reading says nothing (no route, no gauges) is not read again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .adaptive import AdaptiveConcurrency

READ_EVERY = 0.5


class Load(Protocol):
    waiting: float
    kv_usage: float | None


class HasServerLoad(Protocol):
    server_waiting: float | None
    server_kv: float | None


Reader = Callable[[], Awaitable[Load | None]]


async def watch_queues(readers: Sequence[Reader], adaptive: AdaptiveConcurrency | None,
                       stats: HasServerLoad | None = None, every: float = READ_EVERY) -> None:
    """Read the endpoints' queues until cancelled; returns at once if none has gauges."""
    live = list(readers)
    first = True
    while live:
        loads = await asyncio.gather(*(read() for read in live))
        if first:  # an endpoint that says nothing now has no gauges: stop asking it
            live = [r for r, load in zip(live, loads, strict=True) if load is not None]
            first = False
        known = [load for load in loads if load is not None]
        if known:
            waiting = sum(load.waiting for load in known)
            kvs = [load.kv_usage for load in known if load.kv_usage is not None]
            kv = max(kvs) if kvs else None
            if stats is not None:
                stats.server_waiting, stats.server_kv = waiting, kv
            if adaptive is not None:
                adaptive.server_load(waiting, kv)
        if not live:
            return
        await asyncio.sleep(every)
