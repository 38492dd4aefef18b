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


def test_a_servers_queue_cuts_the_limit_by_what_waits_once_a_window():
    """vLLM's /metrics (engine/server_queue.py): requests waiting there are "too much" before
    any latency shows it; arrivals waiting for the next step are not."""
    ctl = AdaptiveConcurrency(ConcurrencyLimit(1), initial=16)
    ctl.server_load(1.0, 0.2)  # one arrival between steps: nothing to do
    assert ctl.limit == 16 and ctl.slow_start and ctl.queue_cuts == 0
    ctl.server_load(8.0, 0.3)  # 16 in flight, 8 run: 8 wait
    assert ctl.limit == 11 and not ctl.slow_start  # by what waits, at most BACKOFF at once
    ctl.server_load(8.0, 0.3)  # the same window: the same queue, seen again
    assert ctl.limit == 11 and ctl.queue_cuts == 1
    feed(ctl, 1, lambda _limit: 0.1)  # a window of answers after the cut: a new window
    ctl.sending = 0
    ctl.server_load(2.0, 0.4)  # 2 still wait: down to what runs
    assert ctl.limit == 9 and ctl.queue_cuts == 2
    feed(ctl, 1, lambda _limit: 0.1)
    ctl.sending = 0
    ctl.server_load(0.0, 0.97)  # nothing waits, but the KV cache is full: preemption is next
    assert ctl.limit == 6 and ctl.queue_cuts == 3

def test_server_load_is_read_from_vllm_metrics_text():
    from synthgen.backends.vllm_metrics import metrics_url, parse_metrics

    text = (
        '# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n'
        '# TYPE vllm:num_requests_waiting gauge\n'
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 2.0\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 8.0\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5\n'
    )
    load = parse_metrics(text)
    assert load is not None and (load.waiting, load.running, load.kv_usage) == (5.0, 8.0, 0.5)
    assert parse_metrics("# llama.cpp\nllamacpp:requests_processing 2\n") is None
    assert metrics_url("http://u:p@host:8000/v1/?k=1") == "http://host:8000/metrics"
