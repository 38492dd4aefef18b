"""The governor: one attempt under every client-side rule, wrapped around the transports.

    engine ──> Governor.send ──> pick an endpoint ──> Transport.send
                 │  shared pause (429s, spent quotas)      │
                 │  --rpm/--tpm buckets (quota.Throttle)   │
                 └─ reacts to each fault by class <────────┘
                    (the pause, endpoint health, the adaptive limit)

It is itself a transport (`send(request) -> Answer`), so the engine cannot tell one
endpoint from many. Every run has a governor: the shared pause on a 429 and the server's
word that a quota is spent hold for every run. The optional parts (quotas, adaptive
concurrency, endpoint health) cost nothing when a run did not ask for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import (
    ConnectionFault,
    Overloaded,
    RateLimited,
    RejectedFault,
    StatusFault,
    TeacherFault,
    TimeoutFault,
)
from ..types import Answer, Request
from .adaptive import AdaptiveConcurrency, HasLimit
from .endpoints import EndpointHealth
from .limiter import ConcurrencyLimit
from .limits import Limits
from .quota import LearnedRate, Throttle
from .retry import MAX_RETRY_AFTER, retry_after_cap

if TYPE_CHECKING:
    from ..backends.base import Transport

# A 429 without Retry-After still pauses every request for this long.
DEFAULT_429_PAUSE = 1.0


class Governor:
    def __init__(self, transports: Sequence[Transport], throttle: Throttle | None = None,
                 adaptive: AdaptiveConcurrency | None = None, health: EndpointHealth | None = None,
                 learned: LearnedRate | None = None, max_pause: float = MAX_RETRY_AFTER):
        self.transports = list(transports)
        self.outstanding = [0] * len(self.transports)  # requests on the wire, per endpoint
        self.throttle = throttle
        self.adaptive = adaptive
        self.health = health
        self.learned = learned  # a pace learned from 429s (runs without --rpm)
        # The server's word on quotas: while monotonic() < pause_until no request is sent.
        self.pause_until = 0.0
        # The longest shared pause one answer may ask for: a Retry-After of 1e12 or a date
        # next year still waits no longer than a request would wait out its 429s.
        self.max_pause = max_pause

    @classmethod
    def with_health(cls, transports: Sequence[Transport], **parts) -> Governor:
        """A governor whose endpoint health probes each transport (several endpoints)."""
        gov = cls(transports, **parts)
        probes = [getattr(t, "probe", None) for t in gov.transports]
        gov.health = EndpointHealth(probes, gov.outstanding)
        return gov

    def pick(self) -> int:
        """The endpoint for the next attempt: the least busy (of those up, with health)."""
        if self.health is not None:
            return self.health.pick()
        out = self.outstanding
        return 0 if len(out) == 1 else min(range(len(out)), key=out.__getitem__)

    async def send(self, request: Request) -> Answer:
        if self.pause_until:  # a 429 or a spent quota holds every request back
            await self.sit_out_pause()
        throttle, watch, learned = self.throttle, self.adaptive, self.learned
        if learned is not None and learned.bucket is not None:
            await learned.acquire()
        cost = await throttle.acquire(request) if throttle is not None else 0.0
        if (throttle is not None or learned is not None) and self.pause_until:
            await self.sit_out_pause()  # a pause began while it waited for its turn
        i = self.pick()
        self.outstanding[i] += 1
        if watch is not None:
            watch.sending += 1
        started = time.perf_counter()
        try:
            answer = await self.transports[i].send(request)
        except TeacherFault as fault:
            self._react(i, fault, cost)
            raise
        finally:
            self.outstanding[i] -= 1
            if watch is not None:
                watch.sending -= 1
        if watch is not None:
            watch.record(time.perf_counter() - started)
        if throttle is not None:
            throttle.settle(cost, answer.prompt_tokens, answer.completion_tokens)
        if self.health is not None:
            self.health.answered(i)
        if learned is not None:
            learned.answered()
        if answer.quota_pause:
            self.pause_for(min(answer.quota_pause, self.max_pause))
        return answer

    def _react(self, i: int, fault: TeacherFault, cost: float) -> None:
        """What one failed attempt means for every other request, decided by its class."""
        if isinstance(fault, RateLimited):  # capped as the request's own wait is (retry.py)
            after = DEFAULT_429_PAUSE if fault.retry_after is None else fault.retry_after
            self.pause_for(min(after, self.max_pause))
            if self.learned is not None:
                self.learned.limited()
        if self.throttle is not None and isinstance(fault, ConnectionFault | StatusFault | RejectedFault):
            self.throttle.refund(cost)  # the server answered without doing the work
            if isinstance(fault, RateLimited) and self.pause_until:  # resume paced, not in a burst
                self.throttle.hold(self.pause_until - time.monotonic())
        if self.adaptive is not None and isinstance(fault, TimeoutFault | RateLimited | Overloaded):
            self.adaptive.overload()
        if self.health is not None:
            self.health.failed(i, fault)

    def pause_for(self, seconds: float) -> None:
        """Hold every request back for `seconds` (a shared backoff, not one request's)."""
        until = time.monotonic() + seconds
        if until > self.pause_until:
            self.pause_until = until

    async def sit_out_pause(self) -> None:
        # Sleeps exactly until the pause ends; again only if it was extended meanwhile.
        while (wait := self.pause_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        self.pause_until = 0.0

    def pacing(self) -> dict[str, float]:
        """What paces sending now, for the progress display: the --rpm/--tpm limits (per
        minute), a pace learned from 429s (per second), and a shared pause still to run."""
        out: dict[str, float] = {}
        if self.throttle is not None:
            if self.throttle.requests is not None:
                out["rpm_limit"] = self.throttle.requests.rate * 60
            if self.throttle.tokens is not None:
                out["tpm_limit"] = self.throttle.tokens.rate * 60
        if self.learned is not None and self.learned.rate is not None:
            out["learned_rps"] = self.learned.rate
        if (left := self.pause_until - time.monotonic()) > 0:
            out["paused_s"] = left
        return out

    async def aclose(self) -> None:
        if self.health is not None:
            await self.health.aclose()


def build_governor(limits: Limits, transports: Sequence[Transport], limit: ConcurrencyLimit,
                   stats: HasLimit | None = None) -> Governor:
    """The governor a run's limits ask for: quotas, adaptive limit, endpoint health."""
    throttle = adaptive = None
    if limits.rpm or limits.tpm:
        throttle = Throttle(limits.rpm, limits.tpm, model=limits.model, max_tokens=limits.completion_budget)
    if limits.concurrency == "auto":
        adaptive = AdaptiveConcurrency(limit, stats)
    learned = None if limits.rpm else LearnedRate()  # --rpm given: the user's pace is the pace
    parts = {"throttle": throttle, "adaptive": adaptive, "learned": learned,
             "max_pause": retry_after_cap(limits.rate_limit_wait)}
    if len(transports) > 1:
        return Governor.with_health(transports, **parts)
    return Governor(transports, **parts)
