"""The retry policy, built from tenacity's parts.

Retry by class: every `RetryableFault` (connection errors, timeouts, 408/409/429/5xx,
truncated or invalid bodies) gets another attempt after exponential backoff with
jitter, or after exactly what the server asked for in Retry-After. A `RejectedFault`
(any other 4xx) never does.
"""

from __future__ import annotations

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from .errors import RetryableFault

MAX_RETRY_AFTER = 120.0


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
            return min(float(after), self.cap)
        return self.fallback(retry_state)


def retrying(max_attempts: int, initial: float = 0.5, maximum: float = 30.0, sleep=None) -> AsyncRetrying:
    """The policy for one request; `sleep` is injectable so tests need not wait."""
    kwargs = {"sleep": sleep} if sleep is not None else {}
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=wait_retry_after(wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)),
        retry=retry_if_exception_type(RetryableFault),
        reraise=True,
        **kwargs,
    )
