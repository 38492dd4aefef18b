"""The engine on its own: `Engine(pending, MockTransport(handler), sink)`, in-process, no
sockets, no DuckDB. Each test runs in milliseconds; the loopback-server tests in
test_engine_runs.py remain the check of what a mock cannot show."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from synthgen import Engine, MockTransport, Request
from synthgen.engine.core import ENDPOINT_FAULT_LIMIT, raise_if_aborted
from synthgen.engine.limiter import ConcurrencyLimit
from synthgen.errors import (
    AuthFault,
    ConnectionFault,
    Overloaded,
    RateLimited,
    RejectedFault,
    RunAborted,
    ServerFault,
)
from synthgen.types import Stats


class Sink:
    """Collects outcomes the way the store's writer would."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[str | None, int]] = {}
        self.failures: dict[str, tuple[str, int | None, int]] = {}
        self.error: BaseException | None = None

    def put_answer(self, request_id, sample_index, answer, latency_ms, attempts) -> None:
        assert request_id not in self.answers, "an answer stored twice"
        self.answers[request_id] = (answer.text, attempts)

    def put_failure(self, failure) -> None:
        self.failures[failure.request_id] = (failure.error_type, failure.status_code, failure.attempts)


def requests(n: int, text=lambda i: f"p{i}") -> list[Request]:
    return [Request(f"r{i}", json.dumps([{"role": "user", "content": text(i)}]), "{}", i + 1, 0)
            for i in range(n)]


def prompt(request: Request) -> str:
    return json.loads(request.messages)[0]["content"]


async def no_sleep(_: float) -> None:
    return None


def run(pending: list[Request], handler, batch: int = 7, **options) -> tuple[Engine, Sink]:
    sink = Sink()
    batches = iter([pending[i:i + batch] for i in range(0, len(pending), batch)])
    engine = Engine(batches, MockTransport(handler), sink, retry_sleep=no_sleep, **options)
    asyncio.run(engine.run())
    return engine, sink


def test_every_request_is_answered_once_with_its_own_answer():
    started = time.perf_counter()
    engine, sink = run(requests(500), lambda r: "A:" + prompt(r), limit=ConcurrencyLimit(16))
    assert time.perf_counter() - started < 1.0
    assert sink.answers == {f"r{i}": (f"A:p{i}", 1) for i in range(500)}
    assert engine.stats.answered == 500 and engine.stats.sent == 500 and not sink.failures


def test_faults_are_retried_by_class_and_the_hopeless_fail_fast():
    tries: dict[str, int] = {}

    def handler(r: Request) -> str:
        p = prompt(r)
        tries[p] = tries.get(p, 0) + 1
        if p == "flaky" and tries[p] < 3:
            raise ServerFault("HTTP 500: boom", 500)
        if p == "busy" and tries[p] < 2:
            raise RateLimited("HTTP 429: slow down", retry_after=0.0)
        if p == "overloaded" and tries[p] < 2:
            raise Overloaded("HTTP 503: full", 503)
        if p == "bad":
            raise RejectedFault("HTTP 400: no", 400)
        if p == "never":
            raise ServerFault("HTTP 502: down", 502)
        return "ok"

    names = ["flaky", "busy", "overloaded", "bad", "never", "fine"]
    engine, sink = run(requests(6, lambda i: names[i]), handler, max_attempts=4)
    assert {k: v[1] for k, v in sink.answers.items()} == {"r0": 3, "r1": 2, "r2": 2, "r5": 1}
    assert sink.failures == {"r3": ("http_400", 400, 1), "r4": ("http_502", 502, 4)}
    assert tries["bad"] == 1, "a rejected request is never retried"
    assert engine.stats.errors == {"http_500": 2, "rate_limit": 1, "http_503": 1, "http_400": 1,
                                   "http_502": 4}


def test_a_bug_in_a_backend_is_not_retried_and_stops_the_run():
    calls = []

    def handler(r: Request) -> str:
        calls.append(r)
        raise KeyError("a bug, not a teacher fault")

    engine, sink = run(requests(50), handler, limit=ConcurrencyLimit(1))
    assert len(calls) == 1 and isinstance(engine.crash, KeyError)
    with pytest.raises(KeyError):
        raise_if_aborted(engine)
    assert not sink.failures, "a crash files nothing under failures"


def test_endpoint_faults_in_a_row_stop_early_and_file_nothing():
    engine, sink = run(requests(200), lambda r: (_ for _ in ()).throw(AuthFault("HTTP 401", 401)),
                       limit=ConcurrencyLimit(2))
    assert engine.stats.sent < ENDPOINT_FAULT_LIMIT + 5
    assert not sink.failures and not sink.answers
    with pytest.raises(RunAborted, match="check the API key"):
        raise_if_aborted(engine)


def test_a_connection_fault_becomes_a_failure_once_the_endpoint_answers_again():
    def handler(r: Request) -> str:
        if prompt(r) == "p0":
            raise ConnectionFault("reset")
        return "ok"

    engine, sink = run(requests(30), handler, limit=ConcurrencyLimit(1), max_attempts=2)
    assert sink.failures == {"r0": ("connection", None, 2)}
    assert len(sink.answers) == 29 and engine.stop_reason is None


def test_stop_ends_the_run_and_leaves_the_rest_unsent():
    async def scenario() -> tuple[Engine, Sink, int]:
        sink = Sink()
        transport = MockTransport(slow)
        engine = Engine(iter([requests(1000)]), transport, sink, limit=ConcurrencyLimit(4), grace=1.0)
        task = asyncio.ensure_future(engine.run())
        while engine.stats.answered < 10:
            await asyncio.sleep(0.001)
        engine.request_stop()
        await task
        return engine, sink, len(transport.calls)

    async def slow(r: Request) -> str:
        await asyncio.sleep(0.001)
        return "ok"

    started = time.perf_counter()
    engine, sink, sent = asyncio.run(scenario())
    assert time.perf_counter() - started < 1.0
    assert engine.stop_reason == "interrupted"
    assert len(sink.answers) == sent < 1000, "every request sent before the stop was stored"


def test_the_sink_failing_stops_sending():
    class Broken(Sink):
        def put_answer(self, *args) -> None:
            super().put_answer(*args)
            self.error = OSError(28, "No space left on device")

    sink = Broken()
    transport = MockTransport(lambda r: "ok")
    engine = Engine(iter([requests(100)]), transport, sink, limit=ConcurrencyLimit(1), stats=Stats())
    with pytest.raises(OSError):
        asyncio.run(engine.run())
    assert len(transport.calls) < 5
