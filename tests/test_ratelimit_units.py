"""The pieces of the quota logic as functions: the bucket's pacing and settling, token
estimates, the server's rate-limit headers, the shared pause and the cost figure."""

from __future__ import annotations

import asyncio
import io
import time

import duckdb
from conftest import synthgen
from limited_teacher import QuotaTeacher
from teacher_server import make_prompts, write_jsonl

from synthgen.backends.http import HttpTransport, parse_duration, server_pause
from synthgen.engine.governor import Governor
from synthgen.engine.quota import Throttle, TokenBucket
from synthgen.errors import StatusFault
from synthgen.run import estimate_cost, generate
from synthgen.store.status import status
from synthgen.types import Request


def test_bucket_paces_evenly_after_the_first_request_and_takes_refunds():
    async def scenario() -> list[float]:
        bucket = TokenBucket(rate=100.0)  # 100 units/s, one second's worth of credit at most
        start = time.monotonic()
        times = []
        for _ in range(21):
            await bucket.acquire(1)
            times.append(time.monotonic() - start)
        return times

    times = asyncio.run(scenario())
    assert times[0] < 0.005  # the first goes at once
    assert 0.19 <= times[-1] < 0.3  # then 100/s: no burst at the start

    bucket = TokenBucket(rate=10.0)
    asyncio.run(bucket.acquire(1))  # the first request: the bucket is now empty
    bucket.adjust(25)  # a debt: the answer cost more than estimated
    assert -26.1 < bucket.level < -25.9
    bucket.adjust(-30)
    assert 3.9 < bucket.level < 4.5  # a refund
    bucket.adjust(-100)
    assert bucket.level == 10  # but never more than a second's worth of credit


def test_a_held_bucket_resumes_paced_after_the_pause():
    async def scenario() -> float:
        bucket = TokenBucket(rate=100.0)
        await bucket.acquire(1)
        await asyncio.sleep(0.3)  # idle: credit builds up (at most a second's worth)
        bucket.hold(0.2)  # a 429 pauses everything for 0.2 s: no credit, none earned
        start = time.monotonic()
        for _ in range(10):
            await bucket.acquire(1)
        return time.monotonic() - start

    assert 0.28 <= asyncio.run(scenario()) < 0.45  # 0.2 s of pause, then 10 at 100/s


def test_a_request_larger_than_a_second_is_paced_by_debt_not_refused():
    async def scenario() -> float:
        bucket = TokenBucket(rate=1000.0)
        await bucket.acquire(1500)  # 1.5 s worth: goes, leaves a debt
        start = time.monotonic()
        await bucket.acquire(100)  # waits until the debt is paid and 100 are back
        return time.monotonic() - start

    assert 1.5 <= asyncio.run(scenario()) + 0.01 < 1.8


def test_token_estimate_is_prompt_plus_completion_budget_and_settles_from_usage():
    throttle = Throttle(tpm=60_000, model="not-an-openai-model", max_tokens=100)
    request = Request("r", '[{"role":"user","content":"' + "x" * 400 + '"}]', '{"max_tokens":100}', 1, 0)
    cost = asyncio.run(throttle.acquire(request))
    assert cost == (len(request.messages) + len(request.params)) / 4 + 100
    level = throttle.tokens.level
    throttle.settle(cost, prompt_tokens=100, completion_tokens=20)
    assert throttle.tokens.level > level  # refunded what the estimate overshot
    guessing = Throttle(tpm=60_000)
    for _ in range(200):
        guessing.settle(0.0, 10, 40)
    assert abs(guessing.completion_guess - 40) < 5  # without max_tokens: follows the answers


def test_server_headers_pause_only_when_a_quota_is_spent():
    assert parse_duration("6m0s") == 360
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("20ms") == 0.02
    assert parse_duration("1.5") == 1.5
    assert parse_duration("soon") is None
    assert server_pause({}) == 0
    assert server_pause({"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "1s"}) == 0
    # spent: one request comes back after reset / (limit - remaining)
    assert server_pause({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
                         "x-ratelimit-limit-requests": "100"}) == 0.02
    assert server_pause({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.5s"}) == 1.5


def test_a_429_pauses_every_request_for_its_retry_after():
    async def scenario(teacher: QuotaTeacher) -> tuple[int, float, float]:
        request = Request("r1", '[{"role":"user","content":"hi"}]', "{}", 1, 0)
        async with HttpTransport(teacher.base_url, "m", None, 5.0) as transport:
            client = Governor([transport])
            await client.send(request)  # spends the one request the quota holds
            refused = 0
            try:
                await client.send(request)
            except StatusFault as fault:
                refused += fault.status_code == 429
            paused = client.pause_until - time.monotonic()
            start = time.monotonic()
            await client.send(request)  # a different request, yet it waits the pause out
            return refused, time.monotonic() - start, paused

    with QuotaTeacher(rpm=60) as teacher:  # one per second
        refused, waited, paused = asyncio.run(scenario(teacher))
    assert refused == 1 and paused > 0.5
    assert waited >= paused - 0.05


def test_cost_is_in_the_summary_and_in_status(tmp_path):
    assert estimate_cost(2_000_000, 1_000_000, 0.15, 0.6) == 0.9
    assert estimate_cost(10, 10, None, None) is None
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(20)])
    with QuotaTeacher(rpm=100_000) as teacher:
        summary = generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m",
                           base_urls=[teacher.base_url], price_in=1.0, price_out=2.0,
                           progress=io.StringIO())
    expected = (summary.prompt_tokens * 1.0 + summary.completion_tokens * 2.0) / 1e6
    assert summary.prompt_tokens > 0 and summary.cost == expected
    assert status(tmp_path / "c.duckdb")[-1]["cost"] == expected
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM corpus").fetchone()[0] == 20
    con.close()


def test_cli_flags_reach_the_run_and_the_summary_shows_the_cost(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(30)])
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "m", "--base-url", teacher.base_url, "--base-url", teacher.base_url,
                      "--concurrency", "auto", "--rpm", "6000", "--tpm", "600000",
                      "--price-in", "1", "--price-out", "2")
    assert result.returncode == 0, result.stderr
    assert "estimated cost: $0.0" in result.stderr
    assert sum(teacher.received.values()) == 30


def test_a_known_tokenizer_counts_the_message_text_not_the_json():
    throttle = Throttle(tpm=60_000, max_tokens=10)
    throttle._encode = str.split  # stands in for tiktoken's encoder (no download in tests)
    messages = '[{"role":"system","content":"be brief"},' \
               '{"role":"user","content":[{"type":"text","text":"one two three"}]}]'
    # 4 per message of framing + its words, + 3 to prime the reply (OpenAI's cookbook count)
    assert throttle.prompt_tokens(Request("r", messages, "{}", 1, 0)) == (4 + 2) + (4 + 3) + 3
