"""How many requests may be in flight: a semaphore whose limit can change while it runs.

`asyncio.Semaphore` cannot shrink or grow; adaptive concurrency needs both. Only the
engine's feeder awaits `acquire`, so a single waiter queue is enough.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ConcurrencyLimit:
    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        while self.in_flight >= self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1
