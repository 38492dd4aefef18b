"""Many teachers: take a failing endpoint out, probe it, put it back when it answers.

With several `--base-url`s each attempt goes to the endpoint with the fewest requests
outstanding among those that are up. A dead endpoint fails fast, so it would otherwise
always look the least busy and draw every attempt. An endpoint goes down on a connection
error (refused, reset: unambiguous) or after FAULT_STREAK 5xx/timeouts in a row; a
background probe (the transport's own, e.g. GET {base_url}/models) puts it back as soon as
the server answers at all.
Because every retry re-picks, the requests that failed on it go elsewhere: none is lost.
If every endpoint is down, attempts are spread over all of them (the engine's abort on
endpoint faults then decides).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from ..errors import ConnectionFault, ServerFault, TeacherFault, TimeoutFault

Probe = Callable[[], Awaitable[bool]]

FAULT_STREAK = 3
PROBE_FIRST = 0.25
PROBE_MAX = 5.0


class EndpointHealth:
    """Which of the client's endpoints are up; `pick` chooses among them."""

    def __init__(self, probes: list[Probe | None], outstanding: list[int]):
        self.probes = list(probes)  # each endpoint's "do you answer at all?"
        self.outstanding = outstanding  # the governor's own list, updated by the governor
        self.up = list(range(len(probes)))
        self.streak = [0] * len(probes)
        self.taken_out = 0  # how many times an endpoint went down (for tests and logs)
        self._probes: dict[int, asyncio.Task] = {}

    def pick(self) -> int:
        up = self.up or range(len(self.probes))
        return min(up, key=self.outstanding.__getitem__)

    def answered(self, i: int) -> None:
        if self.streak[i]:
            self.streak[i] = 0

    def failed(self, i: int, fault: TeacherFault) -> None:
        if isinstance(fault, ConnectionFault):
            self._take_out(i)
        elif isinstance(fault, TimeoutFault | ServerFault):
            self.streak[i] += 1
            if self.streak[i] >= FAULT_STREAK:
                self._take_out(i)

    def _take_out(self, i: int) -> None:
        if i not in self.up:
            return
        self.up.remove(i)
        self.taken_out += 1
        if self.probes[i] is not None and i not in self._probes:
            self._probes[i] = asyncio.get_running_loop().create_task(self._probe(i))

    async def _probe(self, i: int) -> None:
        """Wait, ask, and double the wait while the endpoint stays silent."""
        delay = PROBE_FIRST
        probe = self.probes[i]
        assert probe is not None
        try:
            while True:
                await asyncio.sleep(delay)
                if await probe():
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
