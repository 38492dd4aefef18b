"""Loopback teachers with the limits real ones have, on top of tests/teacher_server.py.

- `QuotaTeacher`: requests and/or tokens per minute, enforced the way API providers do it
  (a bucket that refills continuously, holding one second's worth): beyond it, 429 with
  Retry-After; every answer carries OpenAI-style `x-ratelimit-*` headers.
- `CapacityTeacher`: `capacity` slots, each request holds one for `latency` seconds, so
  latency grows once more than `capacity` are in flight (a vLLM replica's batch is full);
  `overload=(n, m, status)`: once it has answered n, the next m attempts get `status`.

Both record what they accepted, so a test measures rates where the server sees them.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from teacher_server import TeacherServer, answer


class ServerBucket:
    """The server's quota: `per_minute` units, refilled continuously, one second's worth held."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = self.rate
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        self.refill(now)
        if amount > self.level:
            return False
        self.level -= amount
        return True

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def reset(self) -> float:
        return (self.capacity - self.level) / self.rate


def usage_tokens(body: dict) -> int:
    """What TeacherServer reports as total_tokens for this body (words in + words out)."""
    prompt = body["messages"][-1]["content"]
    return len(prompt.split()) + len(answer(prompt, body.get("seed")).split())


class QuotaTeacher(TeacherServer):
    def __init__(self, rpm: float | None = None, tpm: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.keep_bodies = False
        self.requests = ServerBucket(rpm) if rpm else None
        self.tokens = ServerBucket(tpm) if tpm else None
        self.accepted: list[tuple[float, int]] = []  # (arrival, tokens) of each answered request
        self.limited = 0  # 429s sent

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        now = time.monotonic()
        cost = usage_tokens(body)
        req, tok = self.requests, self.tokens
        if req is not None:
            req.refill(now)
        if tok is not None:
            tok.refill(now)
        short = (req is not None and req.level < 1) or (tok is not None and tok.level < cost)
        if short:
            self.limited += 1
            wait = max(req.wait_for(1) if req else 0.0, tok.wait_for(cost) if tok else 0.0)
            return web.json_response({"error": {"message": "rate limit reached"}}, status=429,
                                     headers={"Retry-After": f"{wait:.3f}"})
        if req is not None:
            req.take(1, now)
        if tok is not None:
            tok.take(cost, now)
        self.accepted.append((now, cost))
        prompt = body["messages"][-1]["content"]
        self.received[prompt] += 1
        resp = web.json_response(self._completion(body, prompt))
        for kind, bucket in (("requests", req), ("tokens", tok)):
            if bucket is not None:
                resp.headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.rate * 60))
                resp.headers[f"x-ratelimit-remaining-{kind}"] = str(int(bucket.level))
                resp.headers[f"x-ratelimit-reset-{kind}"] = f"{bucket.reset() * 1000:.0f}ms"
        return resp

    def steady_rate(self, skip: float = 1.5) -> tuple[float, float]:
        """(requests/s, tokens/s) accepted after the first `skip` seconds (the first
        burst is a second's worth by design), up to the last acceptance."""
        if not self.accepted:
            return 0.0, 0.0
        start = self.accepted[0][0] + skip
        window = [(t, c) for t, c in self.accepted if t >= start]
        span = window[-1][0] - start if window else 0.0
        if span <= 0:
            return 0.0, 0.0
        return len(window) / span, sum(c for _, c in window) / span


class CapacityTeacher(TeacherServer):
    def __init__(self, capacity: int, latency: float,
                 overload: tuple[int, int, int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.keep_bodies = False
        self.capacity = capacity
        self.service_time = latency
        self.overload = overload
        self.refused = 0
        self.in_flight = 0
        self.peak = 0
        self.answered_at: list[float] = []
        self._slots: asyncio.Semaphore | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.received[prompt] += 1
        if (self.overload and len(self.answered_at) >= self.overload[0]
                and self.refused < self.overload[1]):
            self.refused += 1
            status = self.overload[2]
            return web.json_response({"error": {"message": "overloaded"}}, status=status,
                                     headers={"Retry-After": f"{self.retry_after}"})
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.capacity)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            async with self._slots:
                await asyncio.sleep(self.service_time)
        finally:
            self.in_flight -= 1
        self.answered_at.append(time.monotonic())
        return web.json_response(self._completion(body, prompt))

    def throughput(self, skip_fraction: float = 0.4) -> float:
        """Answers per second over the run after its first `skip_fraction` (the ramp)."""
        times = self.answered_at
        if len(times) < 10:
            return 0.0
        start = times[0] + (times[-1] - times[0]) * skip_fraction
        window = [t for t in times if t >= start]
        span = window[-1] - start
        return (len(window) - 1) / span if span > 0 else 0.0
