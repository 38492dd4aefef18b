"""`--concurrency auto`: find how many requests the teacher takes in flight, and follow it.

A gradient limit in the manner of Netflix's concurrency-limits. Latency is measured per
attempt (send to answer). Every window of about one limit's worth of answers:

- `no_load` is the lowest window latency seen, the latency of a teacher that queues
  nothing. It drifts only with windows that show no queueing (a slow change of workload is
  adopted, a queue never becomes the norm), and every PROBE_EVERY windows one window runs
  at half the limit and its fastest answer becomes `no_load` (as Netflix's Gradient probes),
  so a lasting change in how long answers take cannot pin the limit low;
- gradient = clamp(TOLERANCE * no_load / window latency, 0.5, 1): 1 while latency is flat,
  below 1 once requests queue at the teacher;
- new limit = limit * gradient + sqrt(limit): grows while latency is flat, settles where
  the queue the teacher holds is about sqrt(limit), shrinks when latency climbs.

It starts by doubling each window (slow start) until the first sign of queueing, so a
replica that takes hundreds is found in a few round trips. The answers to attempts already
on the wire when the limit doubles were sent at the old limit; they are left out of the
next window, which would otherwise be half made of them and look flat when the new limit
already queues. A 429, 503 or timeout is the teacher saying "too much": the limit is cut
by BACKOFF at once, at most once per window.
After the refusals stop it doubles back up to 70% of where it was, then grows as before.
A window in which the engine could not fill the limit (input ran out, a rate quota binds)
is not evidence of capacity, so the limit does not grow then.

A server that reports its own queue (vLLM's /metrics, server_queue.py) says "too much"
before any latency window can: requests waiting there for a slot (more than
QUEUE_TOLERANCE of the limit) or a KV cache over KV_FULL bring the limit down by what
waits, by at most BACKOFF at once and once per window, and end slow start.
"""

from __future__ import annotations

import math
from typing import Protocol

from .limiter import ConcurrencyLimit

INITIAL = 16
MINIMUM = 1
MAXIMUM = 2048
TOLERANCE = 1.3
BACKOFF = 0.7
SMOOTHING = 0.5
MIN_WINDOW = 10
NO_LOAD_DRIFT = 0.05
PROBE_EVERY = 100
QUEUE_TOLERANCE = 0.1  # waiting requests, as a share of the limit, that are only arrivals
KV_FULL = 0.95  # a KV cache this full preempts (recomputes) running requests


class HasLimit(Protocol):
    limit: int


class AdaptiveConcurrency:
    """Drives `limit.set_limit` (and `stats.limit`, for the progress line) from samples."""

    def __init__(self, limit: ConcurrencyLimit, stats: HasLimit | None = None, *,
                 initial: int = INITIAL, minimum: int = MINIMUM, maximum: int = MAXIMUM):
        self.limiter = limit
        self.stats = stats
        self.minimum = minimum
        self.maximum = maximum
        self.estimate = float(min(max(initial, minimum), maximum))
        self.no_load: float | None = None
        self.slow_start = True
        self.recover_to = 0.0  # after an overload: double back up to this while latency is flat
        self.sending = 0  # attempts on the wire now (not waiting in a quota)
        self._stale = 0  # answers still due from before the last doubling: not evidence of it
        self._count = 0
        self._total = 0.0
        self._busiest = 0
        self._overloaded = False
        self._signals = 0
        self._fastest = float("inf")
        self._windows = 0
        self._probing = False
        self._queue_cut = False  # the server's queue already cut the limit this window
        self.queue_cuts = 0
        self._apply()

    @property
    def limit(self) -> int:
        return self.limiter.limit

    def record(self, latency: float) -> None:
        """One answered attempt, `latency` seconds from send to answer."""
        if self._stale:
            self._stale -= 1
            return
        self._count += 1
        self._total += latency
        if latency < self._fastest:
            self._fastest = latency
        if self.sending + 1 > self._busiest:
            self._busiest = self.sending + 1
        if self._count >= max(MIN_WINDOW, self.limiter.limit):
            self._update()

    def overload(self) -> None:
        """The teacher said "too much" (429, 503, a timeout): back off now.

        One cut per window: the burst of 429s that one overshoot brings is one signal;
        a window's worth of them with no answer in between is another."""
        self._signals += 1
        if self._overloaded and self._signals < max(MIN_WINDOW, self.limiter.limit):
            return
        if not self._overloaded:  # a new episode: come back to 70% of here quickly after
            self.recover_to = self.estimate * BACKOFF
        self._signals = 0
        self._overloaded = True
        self.slow_start = False
        self.estimate = max(self.minimum, self.estimate * BACKOFF)
        self._apply()

    def server_load(self, waiting: float, kv_usage: float | None = None) -> None:
        """The servers' own word on their queue: `waiting` requests not running yet, the
        fullest KV cache at `kv_usage` (0..1). Requests that wait there add latency and no
        throughput: the limit comes down by what waits (at most by BACKOFF), once a window."""
        full = kv_usage is not None and kv_usage >= KV_FULL
        if self._queue_cut or not (full or waiting > max(1.0, QUEUE_TOLERANCE * self.estimate)):
            return
        self._queue_cut = True
        self.queue_cuts += 1
        self.slow_start = False
        self._stale = self.sending  # answers already on their way were sent at the old limit
        target = self.estimate * BACKOFF if full else max(self.estimate * BACKOFF, self.estimate - waiting)
        self.estimate = max(self.minimum, target)
        self._apply()

    def _update(self) -> None:
        latency, fastest = self._total / self._count, self._fastest
        busy = self._busiest >= self.estimate / 2
        self._count, self._total, self._busiest, self._fastest = 0, 0.0, 0, float("inf")
        self._windows += 1
        if self._queue_cut:  # this window's latencies straddle a cut: start afresh
            self._queue_cut = False
            return
        if self._overloaded:  # this window's latencies straddle the cut: start afresh
            self._overloaded = False
            return
        if self._probing:  # a window at half the limit: what does an empty queue take now?
            self._probing = False
            self.no_load = fastest
            self._apply()
            return
        if self._windows % PROBE_EVERY == 0 and not self.slow_start:
            self._probing = True
            self.limiter.set_limit(round(self.estimate / 2))
            return
        if self.no_load is None or latency < self.no_load:
            self.no_load = latency
        elif latency <= TOLERANCE * self.no_load:
            self.no_load += (latency - self.no_load) * NO_LOAD_DRIFT
        gradient = max(0.5, min(1.0, TOLERANCE * self.no_load / latency))
        if gradient < 1.0:
            self.slow_start = False
        elif not busy:
            return  # flat latency at low load says nothing about capacity
        if self.slow_start or (gradient == 1.0 and self.estimate < self.recover_to):
            target = self.estimate * 2 if self.slow_start else min(self.estimate * 2, self.recover_to)
            self._stale = self.sending
        else:
            target = self.estimate * gradient + math.sqrt(self.estimate)
            target = self.estimate * (1 - SMOOTHING) + target * SMOOTHING
        self.estimate = max(self.minimum, min(self.maximum, target))
        self._apply()

    def _apply(self) -> None:
        self.limiter.set_limit(round(self.estimate))
        if self.stats is not None:
            self.stats.limit = self.limiter.limit
