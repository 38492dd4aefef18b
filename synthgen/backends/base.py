"""The one interface between the engine and a teacher (as httpx's transports are).

The engine hands a backend one `Request` at a time and gets back an `Answer`, or a
`TeacherFault` of the most specific class: what that fault means (retry, pause, take the
endpoint out) is decided from its class by the engine, so a backend never decides it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..types import Answer, Request


@runtime_checkable
class Transport(Protocol):
    """Send one request; return its Answer or raise a TeacherFault."""

    async def send(self, request: Request) -> Answer: ...


@runtime_checkable
class Probing(Protocol):
    """A transport that can say cheaply whether its endpoint answers at all (used to put
    an endpoint that failed back into service)."""

    async def probe(self) -> bool: ...
