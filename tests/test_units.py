"""Small pure pieces: ids, the retry policy, response parsing, the limiter, config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tenacity import RetryCallState

from synthgen.backends.http import parse_answer, parse_retry_after
from synthgen.config import GenerateConfig, strip_credentials
from synthgen.engine.limiter import ConcurrencyLimit
from synthgen.engine.retry import retrying, wait_retry_after
from synthgen.errors import (
    ConnectionFault,
    InvalidResponse,
    RejectedFault,
    StatusFault,
)
from synthgen.plan import canonical, request_id, sample_params


def test_request_id_depends_on_every_part_and_not_on_key_order():
    m1 = canonical([{"role": "user", "content": "hi"}])
    m2 = canonical([{"content": "hi", "role": "user"}])
    p = canonical({"temperature": 0.5})
    base = request_id("m", p, m1, 0)
    assert base == request_id("m", p, m2, 0)
    assert len({base, request_id("m2", p, m1, 0), request_id("m", canonical({"temperature": 0.6}), m1, 0),
                request_id("m", p, canonical([{"role": "user", "content": "hi!"}]), 0),
                request_id("m", p, m1, 1)}) == 5


def test_seed_moves_with_the_sample_index():
    cfg = GenerateConfig(input=Path("x.jsonl"), db=Path("x.duckdb"), n=3, seed=10, temperature=1.0)
    assert [canonical_seed(p) for p in sample_params(cfg)] == [10, 11, 12]


def canonical_seed(params: bytes) -> int:
    import orjson

    return orjson.loads(params)["seed"]


def _state(exc: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_retry_after_wins_over_backoff_and_is_capped():
    wait = wait_retry_after(lambda rs: 99.0, cap=30)
    assert wait(_state(StatusFault("slow down", 429, retry_after=2.5))) == 2.5
    assert wait(_state(StatusFault("slow down", 429, retry_after=500))) == 30
    assert wait(_state(ConnectionFault("reset"))) == 99.0


def test_retry_policy_retries_by_class_only():
    calls: list[str] = []

    async def run(fault: Exception) -> None:
        async def no_sleep(_: float) -> None:
            return None

        async for attempt in retrying(4, sleep=no_sleep):
            with attempt:
                calls.append(type(fault).__name__)
                raise fault

    with pytest.raises(RejectedFault):
        asyncio.run(run(RejectedFault("bad", 400)))
    assert calls == ["RejectedFault"]
    calls.clear()
    with pytest.raises(InvalidResponse):
        asyncio.run(run(InvalidResponse("cut")))
    assert len(calls) == 4
    calls.clear()
    with pytest.raises(ValueError):  # a bug is never retried like a network fault
        asyncio.run(run(ValueError("bug")))
    assert calls == ["ValueError"]


def test_retry_after_header_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_parse_answer_and_its_faults():
    body = (b'{"model": "t", "choices": [{"message": {"content": "hi"}, "finish_reason": "length",'
            b' "logprobs": {"content": [{"token": "hi", "logprob": -0.5, "top_logprobs": '
            b'[{"token": "hi", "logprob": -0.5}, {"token": "yo", "logprob": -1.5}]}]}}],'
            b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}')
    a = parse_answer(body, "http://x/v1")
    assert (a.text, a.finish_reason, a.prompt_tokens, a.completion_tokens) == ("hi", "length", 3, 1)
    assert a.logprobs == [{"token": "hi", "id": None, "logprob": -0.5, "top_logprobs": [
        {"token": "hi", "id": None, "logprob": -0.5}, {"token": "yo", "id": None, "logprob": -1.5}]}]
    for bad in (b'{"choices": [', b'{"choices": []}', b'{"error": "x"}', b'{"choices": [{"message": 3}]}'):
        with pytest.raises(InvalidResponse):
            parse_answer(bad, "http://x/v1")


def test_limiter_can_shrink_and_grow_while_in_use():
    async def scenario() -> list[int]:
        limit = ConcurrencyLimit(2)
        await limit.acquire()
        await limit.acquire()
        waiter = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        limit.set_limit(3)
        await asyncio.sleep(0)
        assert waiter.done()
        limit.set_limit(1)
        limit.release()
        limit.release()
        blocked = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        seen = [limit.in_flight, int(blocked.done())]
        limit.release()
        await asyncio.sleep(0)
        seen.append(int(blocked.done()))
        return seen

    assert asyncio.run(scenario()) == [1, 0, 1]


def test_credentials_never_survive_into_stored_urls():
    assert strip_credentials("https://u:sk-1@api.x.com:8443/v1?key=sk-2") == "https://api.x.com:8443/v1"
    cfg = GenerateConfig(input=Path("x"), db=Path("y"), model="m", base_urls=["http://k:s@h:1"])
    assert cfg.public_dict()["base_urls"] == ["http://h:1/v1"]
    assert "s@" not in str(cfg.public_dict())
