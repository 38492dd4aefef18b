"""The control calls of a batch run (upload, create, poll, download): each retried by the
class of what went wrong, every wait cut short by a stop.

    Calls.call(fn, what)   retryable faults wait (Retry-After, else backoff up to the poll
                           maximum) and go again, CONTROL_ATTEMPTS times at most; a refused
                           key, a redirect or an endpoint that cannot serve stops the run
                           (Abort); any other refusal is the caller's to handle
    Calls.sleep(seconds)   a wait that a Ctrl-C ends at once (Stopped)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import AuthFault, EndpointRefused, Redirected, RetryableFault

log = logging.getLogger("synthgen")
T = TypeVar("T")

CONTROL_ATTEMPTS = 8  # tries of one control call


class Abort(Exception):
    """Stop the run: the store is consistent, the same command continues."""


class Stopped(Exception):
    """A signal asked the run to stop."""


class Calls:
    def __init__(self, poll_interval: float, poll_max: float, should_stop: Callable[[], bool]):
        self.poll_interval = poll_interval
        self.poll_max = poll_max
        self.should_stop = should_stop

    def check_stop(self) -> None:
        if self.should_stop():
            raise Stopped

    async def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_stop()
            await asyncio.sleep(min(left, 0.1))
        self.check_stop()

    async def call(self, fn: Callable[[], Awaitable[T]], what: str) -> T:
        for attempt in range(CONTROL_ATTEMPTS):
            self.check_stop()
            try:
                return await fn()
            except (AuthFault, Redirected, EndpointRefused) as exc:
                raise Abort(f"{what}: {exc.message}") from None
            except RetryableFault as exc:
                if attempt + 1 >= CONTROL_ATTEMPTS:
                    raise Abort(f"{what} failed {CONTROL_ATTEMPTS} times ({exc.message}); the "
                                "batches are recorded: the same command continues") from None
                log.debug("%s: %s; retrying", what, exc.message)
                await self.sleep(self.backoff(attempt, exc))
        raise AssertionError("unreachable")

    def backoff(self, attempt: int, fault: RetryableFault) -> float:
        if fault.retry_after is not None:
            return min(fault.retry_after, self.poll_max)
        return min(self.poll_interval * 2 ** attempt, self.poll_max)
