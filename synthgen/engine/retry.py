"""The attempt loop of one request, and its retry policy built from tenacity's parts.

Retry by class: every `RetryableFault` (connection errors, timeouts, 408/409/429/5xx,
truncated or invalid bodies) gets another attempt after exponential backoff with
jitter, or after exactly what the server asked for in Retry-After. A `RejectedFault`
(any other 4xx) never does. A `RateLimited` attempt does not count against
`max_attempts`: a 429 says "later", not "never", so it is waited out for up to
`rate_limit_wait` seconds (and the governor slows the whole client meanwhile). An answer
max_tokens cut (`LengthCut`) is retried at most `length_retries` times: a sample may come
out shorter, but each try is paid (and at temperature 0 it is not retried at all: fit.py).

Every attempt the teacher answered but that was not kept (a misfit, a cut) is returned
with the outcome as a `Wasted`: it was billed, and the bill must count it.

This is the whole loop: the engine calls `Attempts.run` and gets an answer or `GaveUp`;
what each fault does to the rest of the client (the shared pause, the learned rate,
endpoint health, the adaptive limit) is the governor's, also by class.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ..errors import LengthCut, RateLimited, RetryableFault, TeacherFault
from ..types import Answer, Request, Wasted

MAX_RETRY_AFTER = 120.0
RATE_LIMIT_WAIT = 1800.0  # how long one request waits out 429s before it fails
LENGTH_RETRIES = 1  # retries of an answer max_tokens cut, at temperature > 0

Send = Callable[[Request], Awaitable[Answer]]


def retry_after_cap(rate_limit_wait: float) -> float:
    """The longest a server's Retry-After is obeyed: MAX_RETRY_AFTER, or less where the user
    gave a request less time to wait out its 429s (--rate-limit-wait)."""
    return min(MAX_RETRY_AFTER, max(0.0, rate_limit_wait))


class wait_retry_after(wait_base):
    """Wait what the server's Retry-After said, else fall back to `fallback`."""

    def __init__(self, fallback: wait_base, cap: float = MAX_RETRY_AFTER):
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            after = float(after)
            return self.cap if after != after else min(max(after, 0.0), self.cap)  # NaN: the cap
        return self.fallback(retry_state)


class stop_by_fault(stop_base):
    """Stop after `max_attempts` failed attempts that were not rate limits, or once 429s
    have been waited out for `rate_limit_wait` seconds. One per request: it counts."""

    def __init__(self, max_attempts: int, rate_limit_wait: float = RATE_LIMIT_WAIT,
                 clock: Callable[[], float] = time.monotonic, length_retries: int = LENGTH_RETRIES):
        self.max_attempts = max_attempts
        self.rate_limit_wait = rate_limit_wait
        self.clock = clock
        self.length_retries = length_retries
        self.others = 0
        self.cuts = 0
        self.limited_since: float | None = None

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimited):
            now = self.clock()
            if self.limited_since is None:
                self.limited_since = now
            return now - self.limited_since >= self.rate_limit_wait
        self.others += 1
        if isinstance(exc, LengthCut):
            self.cuts += 1
            if self.cuts > self.length_retries:
                return True
        return self.others >= self.max_attempts


def retrying(max_attempts: int, initial: float = 0.5, maximum: float = 30.0, sleep=None,
             rate_limit_wait: float = RATE_LIMIT_WAIT, length_retries: int = LENGTH_RETRIES) -> AsyncRetrying:
    """The policy for one request; `sleep` is injectable so tests need not wait."""
    kwargs = {"sleep": sleep} if sleep is not None else {}
    return AsyncRetrying(
        stop=stop_by_fault(max_attempts, rate_limit_wait, length_retries=length_retries),
        wait=wait_retry_after(wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
                              cap=retry_after_cap(rate_limit_wait)),
        retry=retry_if_exception_type(RetryableFault),
        reraise=True,
        **kwargs,
    )


class GaveUp(Exception):
    """A request ended without an answer: its last fault, how many attempts it took, and
    the attempts the teacher answered that were paid for (the last one among them)."""

    def __init__(self, fault: TeacherFault, attempts: int, wasted: list[Wasted]):
        super().__init__(fault.message)
        self.fault = fault
        self.attempts = attempts
        self.wasted = wasted


class Attempts:
    """Every attempt at one request, through `send` (a transport or the governor).

    `errors` counts each failed attempt by its fault's kind (the progress line shows it).
    `key` prefixes each wasted attempt's key (the run's id): unique across runs.
    """

    def __init__(self, send: Send, max_attempts: int, errors: Counter, sleep=None,
                 rate_limit_wait: float = RATE_LIMIT_WAIT, length_retries: int = LENGTH_RETRIES,
                 key: str = ""):
        self.send = send
        self.max_attempts = max_attempts
        self.errors = errors
        self.sleep = sleep
        self.rate_limit_wait = rate_limit_wait
        self.length_retries = length_retries
        self.key = key

    async def run(self, request: Request) -> tuple[Answer, int, list[Wasted]]:
        """(answer, attempts, wasted), or raise GaveUp. Anything that is not a TeacherFault
        is a bug, not a teacher's fault: it propagates at once and is never retried."""
        # The first attempt goes straight to `send`: building tenacity's retrying state and
        # iterating it cost ~15% of the event loop at full speed. Only a request that failed
        # enters the policy, which replays that failure as its attempt 1, so waits, stops and
        # re-raising are tenacity's, exactly as if it had run the first attempt too.
        try:
            return await self.send(request), 1, []
        except TeacherFault as fault:
            self.errors[fault.kind] += 1
            first: TeacherFault | None = fault
        wasted: list[Wasted] = []
        self._paid(request, first, 1, wasted)
        attempts = 1
        answer: Answer | None = None
        try:
            async for attempt in retrying(self.max_attempts, sleep=self.sleep,
                                          rate_limit_wait=self.rate_limit_wait,
                                          length_retries=self.length_retries):
                with attempt:
                    if first is not None:
                        replay, first = first, None
                        raise replay
                    attempts += 1
                    try:
                        answer = await self.send(request)
                    except TeacherFault as fault:
                        self.errors[fault.kind] += 1
                        self._paid(request, fault, attempts, wasted)
                        raise
        except TeacherFault as fault:
            raise GaveUp(fault, attempts, wasted) from None
        assert answer is not None
        return answer, attempts, wasted

    def _paid(self, request: Request, fault: TeacherFault, attempt: int, wasted: list[Wasted]) -> None:
        if fault.paid is not None:
            wasted.append(Wasted(request.request_id, f"{self.key}/{request.request_id}/{attempt}",
                                 fault.kind, fault.paid))
