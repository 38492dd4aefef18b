"""One attempt under every client-side rule: quotas, adaptive concurrency, endpoint health.

`TeacherClient.complete` hands an attempt here only when a run asked for one of them
(`--rpm`, `--tpm`, `--concurrency auto`, several `--base-url`s); a plain run never pays
for this module. The shared pause on a 429 and the server's rate-limit headers are the
client's own (every run honours them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .adaptive import AdaptiveConcurrency, HasLimit
from .endpoints import EndpointHealth
from .errors import ConnectionFault, StatusFault, TeacherFault, TimeoutFault
from .limiter import ConcurrencyLimit
from .ratelimit import Throttle

if TYPE_CHECKING:
    from .client import Answer, TeacherClient
    from .config import GenerateConfig

OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})


class Governor:
    def __init__(self, throttle: Throttle | None = None, adaptive: AdaptiveConcurrency | None = None,
                 health: EndpointHealth | None = None):
        self.throttle = throttle
        self.adaptive = adaptive
        self.health = health

    async def send(self, client: TeacherClient, body: bytes, endpoint: int | None) -> Answer:
        throttle, watch, health = self.throttle, self.adaptive, self.health
        cost = await throttle.acquire(body) if throttle is not None else 0.0
        if client.pause_until:  # a pause began while this attempt waited for its quota
            await client.sit_out_pause()
        pick = health.pick if health is not None else client.pick
        i = pick() if endpoint is None else endpoint
        client.outstanding[i] += 1
        if watch is not None:
            watch.sending += 1
        started = time.perf_counter()
        try:
            answer = await client._post(client.urls[i], body, client.base_urls[i])
        except TeacherFault as fault:
            self._fault(client, i, fault, cost)
            raise
        finally:
            client.outstanding[i] -= 1
            if watch is not None:
                watch.sending -= 1
        if watch is not None:
            watch.record(time.perf_counter() - started)
        if throttle is not None:
            throttle.settle(cost, answer.prompt_tokens, answer.completion_tokens)
        if health is not None:
            health.answered(i)
        client.heed(answer.headers)
        return answer

    def _fault(self, client: TeacherClient, i: int, fault: TeacherFault, cost: float) -> None:
        client.note_fault(fault)
        status = fault.status_code
        if self.throttle is not None and (isinstance(fault, ConnectionFault) or status is not None):
            self.throttle.refund(cost)  # the teacher did no work for it
            if status == 429 and client.pause_until:  # resume paced, not with a burst
                self.throttle.hold(client.pause_until - time.monotonic())
        if self.adaptive is not None and (
                isinstance(fault, TimeoutFault)
                or (isinstance(fault, StatusFault) and status in OVERLOAD_STATUSES)):
            self.adaptive.overload()
        if self.health is not None:
            self.health.failed(i, fault)

    async def aclose(self) -> None:
        if self.health is not None:
            await self.health.aclose()


def build_governor(cfg: GenerateConfig, client: TeacherClient, limit: ConcurrencyLimit,
                   stats: HasLimit | None = None) -> Governor | None:
    """The governor a run's config asks for, or None when it asks for none of it."""
    throttle = adaptive = health = None
    if cfg.rpm or cfg.tpm:
        throttle = Throttle(cfg.rpm, cfg.tpm, model=cfg.model, max_tokens=_completion_budget(cfg))
    if cfg.concurrency == "auto":
        adaptive = AdaptiveConcurrency(limit, stats)
    if len(client.urls) > 1:
        health = EndpointHealth(client.probe_urls(), client.outstanding)
        health.bind(client.session)
    if throttle is None and adaptive is None and health is None:
        return None
    return Governor(throttle, adaptive, health)


def _completion_budget(cfg: GenerateConfig) -> int | None:
    budget = cfg.max_tokens or cfg.extra_body.get("max_completion_tokens")
    return budget if isinstance(budget, int) else None
