"""AdaptiveConcurrency as a function of the samples it is fed (no teacher, no clock)."""

from __future__ import annotations

import heapq

import pytest

from synthgen.engine.adaptive import AdaptiveConcurrency
from synthgen.engine.limiter import ConcurrencyLimit
from synthgen.types import Stats


def feed(ctl: AdaptiveConcurrency, windows: int, latency_at, busy: bool = True) -> None:
    """`windows` windows of answers; latency_at(limit) models the teacher."""
    for _ in range(windows):
        ctl.sending = ctl.limit - 1 if busy else 0
        for _ in range(max(10, ctl.limit)):
            ctl.record(latency_at(ctl.limit))


def queue(capacity: int, service: float = 0.1):
    return lambda in_flight: service * max(1.0, in_flight / capacity)


def closed_loop(capacity: int, service: float, overhead: float, answers: int) -> list[int]:
    """The limit after each of `answers` answers, keeping `limit` attempts in flight against a
    FIFO teacher with `capacity` slots of `service` seconds (simulated time). `overhead` is
    latency outside the teacher's queue (network, client), as a real engine sees it. Unlike
    `feed`, answers sent at an old limit arrive after the limit changed."""
    ctl = AdaptiveConcurrency(ConcurrencyLimit(1), initial=16)
    slots = [0.0] * capacity  # when each slot is next free
    due: list[tuple[float, float]] = []  # (answered at, sent at)
    now, limits = 0.0, []

    def send() -> None:
        start = max(now, heapq.heappop(slots))
        heapq.heappush(slots, start + service)
        heapq.heappush(due, (start + service + overhead, now))

    while len(due) < ctl.limit:
        send()
    for _ in range(answers):
        now, sent = heapq.heappop(due)
        ctl.sending = len(due)
        ctl.record(now - sent)
        limits.append(ctl.limit)
        while len(due) < ctl.limit:
            send()
    return limits


@pytest.mark.parametrize("capacity", [48, 100, 200])
def test_slow_start_stops_within_a_doubling_of_the_capacity(capacity):
    # Right after a doubling half the answers were sent at the old limit and look flat;
    # counted, they hid the queue and slow start doubled once more (4x the capacity).
    limits = closed_loop(capacity, service=0.05, overhead=0.02, answers=30 * capacity)
    assert capacity <= max(limits) < 3 * capacity


def test_grows_while_latency_is_flat_and_settles_near_capacity():
    stats = Stats()
    ctl = AdaptiveConcurrency(ConcurrencyLimit(1), stats, initial=16)
    feed(ctl, 60, queue(200))
    assert 200 <= ctl.limit <= 2 * 200
    assert stats.limit == ctl.limit  # the progress line shows it


def test_shrinks_when_latency_climbs():
    ctl = AdaptiveConcurrency(ConcurrencyLimit(1), initial=16)
    feed(ctl, 40, queue(100))
    high = ctl.limit
    feed(ctl, 40, queue(25))  # the teacher got slower: the same limit now queues
    assert ctl.limit < high * 0.6


def test_does_not_grow_when_the_engine_cannot_fill_the_limit():
    ctl = AdaptiveConcurrency(ConcurrencyLimit(1), initial=16)
    feed(ctl, 20, queue(1000), busy=False)
    assert ctl.limit == 16


def test_overload_cuts_once_per_burst_then_again_if_it_goes_on():
    ctl = AdaptiveConcurrency(ConcurrencyLimit(1), initial=100)
    for _ in range(50):  # one overshoot, answered by a burst of 429s
        ctl.overload()
    assert ctl.limit == 70
    for _ in range(30):  # a window's worth in all (70), with no answer in between
        ctl.overload()
    assert ctl.limit == 49
