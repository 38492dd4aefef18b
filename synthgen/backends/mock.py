"""`MockTransport(handler)`: a teacher in-process, for engine tests that run in milliseconds.

    def handler(request: Request) -> Answer | str:
        if "flaky" in request.messages:
            raise ServerFault("HTTP 500: boom", 500)
        return "an answer"                      # a str becomes a plain Answer

    Engine(pending, MockTransport(handler), sink)

The handler may be a plain function or a coroutine function, and raises a `TeacherFault`
to play a failed attempt. The loopback HTTP teacher in tests/ remains the check of what a
mock cannot show (sockets, bodies, timeouts).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from ..types import Answer, Request

Handler = Callable[[Request], "Answer | str | Awaitable[Answer | str]"]


class MockTransport:
    def __init__(self, handler: Handler, endpoint: str = "mock://teacher"):
        self.handler = handler
        self.endpoint = endpoint
        self.calls: list[Request] = []  # every attempt, in the order it was sent

    async def send(self, request: Request) -> Answer:
        self.calls.append(request)
        result = self.handler(request)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, str):
            return Answer(text=result, finish_reason="stop", prompt_tokens=None,
                          completion_tokens=None, model="mock", logprobs=None, endpoint=self.endpoint)
        return result

    async def probe(self) -> bool:
        return True
