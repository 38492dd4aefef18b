"""Many teachers: take a failing endpoint out, probe it, put it back when it answers.

With several `--base-url`s each attempt goes to the endpoint with the fewest requests
outstanding among those that are up. A dead endpoint fails fast, so it would otherwise
always look the least busy and draw every attempt. An endpoint goes down on a connection
error (refused, reset: unambiguous) or after FAULT_STREAK 5xx/timeouts in a row; a
background probe (GET {base_url}/models) puts it back as soon as the server answers at all.
Because every retry re-picks, the requests that failed on it go elsewhere: none is lost.
If every endpoint is down, attempts are spread over all of them (the engine's abort on
endpoint faults then decides).
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from .errors import ConnectionFault, StatusFault, TeacherFault, TimeoutFault

FAULT_STREAK = 3
PROBE_FIRST = 0.25
PROBE_MAX = 5.0
PROBE_TIMEOUT = 5.0


class EndpointHealth:
    """Which of the client's endpoints are up; `pick` chooses among them."""

    def __init__(self, probe_urls: list[str], outstanding: list[int]):
        self.probe_urls = list(probe_urls)  # each endpoint's GET .../models
        self.outstanding = outstanding  # the client's own list, updated by the client
        self.up = list(range(len(probe_urls)))
        self.streak = [0] * len(probe_urls)
        self.taken_out = 0  # how many times an endpoint went down (for tests and logs)
        self._session: aiohttp.ClientSession | None = None
        self._probes: dict[int, asyncio.Task] = {}

    def bind(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def pick(self) -> int:
        up = self.up or range(len(self.probe_urls))
        return min(up, key=self.outstanding.__getitem__)

    def answered(self, i: int) -> None:
        if self.streak[i]:
            self.streak[i] = 0

    def failed(self, i: int, fault: TeacherFault) -> None:
        if isinstance(fault, ConnectionFault):
            self._take_out(i)
        elif isinstance(fault, TimeoutFault) or (
                isinstance(fault, StatusFault) and fault.status_code >= 500):
            self.streak[i] += 1
            if self.streak[i] >= FAULT_STREAK:
                self._take_out(i)

    def _take_out(self, i: int) -> None:
        if i not in self.up:
            return
        self.up.remove(i)
        self.taken_out += 1
        if self._session is not None and i not in self._probes:
            self._probes[i] = asyncio.get_running_loop().create_task(self._probe(i))

    async def _probe(self, i: int) -> None:
        """Wait, ask, and double the wait while the endpoint stays silent."""
        delay = PROBE_FIRST
        url = self.probe_urls[i]
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    async with self._session.get(url, timeout=timeout) as resp:  # type: ignore[union-attr]
                        alive = resp.status < 500
                except (aiohttp.ClientError, OSError, TimeoutError):
                    alive = False
                if alive:
                    self.streak[i] = 0
                    self.up.append(i)
                    self.up.sort()
                    return
                delay = min(delay * 2, PROBE_MAX)
        finally:
            self._probes.pop(i, None)

    async def aclose(self) -> None:
        probes = list(self._probes.values())
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError):
                await task
