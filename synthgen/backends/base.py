"""The door for a teacher's API: what the engine sends through, and what a backend is.

The engine hands a transport one `Request` at a time and gets back an `Answer`, or a
`TeacherFault` of the most specific class: what that fault means (retry, pause, take the
endpoint out) is decided from its class by the engine, so a backend never decides it, and
each backend maps its own API's statuses and error bodies to those classes.

    Transport   send(request) -> Answer; `endpoint` (recorded with each answer, no
                secret in it); `body(request)` (the bytes it would send, what a batch file
                line carries); optionally list_models() (the preflight) and probe()
                (endpoint health); an async context manager (its connections)
    BatchAPI    the same requests through a provider's batch endpoint, at its discount
                (synthgen/batch/ runs it: files, polls, ingestion by fault class)
    Backend     a name (`--api NAME`) and the factories of both, found in the registry
                (backends/registry.py), or in another package through the
                `synthgen.backends` entry point group
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from ..errors import TeacherFault
from ..types import Answer, Request


@runtime_checkable
class Transport(Protocol):
    """Send one request; return its Answer or raise a TeacherFault."""

    endpoint: str

    async def send(self, request: Request) -> Answer: ...


@runtime_checkable
class Probing(Protocol):
    """A transport that can say cheaply whether its endpoint answers at all (used to put
    an endpoint that failed back into service)."""

    async def probe(self) -> bool: ...


@runtime_checkable
class ListsModels(Protocol):
    """A transport that can say which models its endpoint serves (the preflight asks)."""

    endpoint: str

    async def list_models(self, timeout: float | None = None) -> list[str] | None: ...


@runtime_checkable
class Spelled(Protocol):
    """A transport that can say the exact body it sends for a request (batch files)."""

    def body(self, request: Request) -> bytes: ...


class BatchAPI(Protocol):
    """A provider's batch endpoint, as the batch runner drives it. Ids are the provider's;
    `info` objects are `openai_batch.BatchInfo` (the runner reads status, counts, files)."""

    endpoint: str
    uploads: bool  # files are uploaded first (OpenAI); False: requests go with the create

    def request_line(self, request_id: str, body: bytes) -> bytes: ...

    def outcome(self, raw: bytes, endpoint: str) -> tuple[str, Answer | TeacherFault]: ...

    async def upload(self, path: Path, name: str) -> str: ...

    async def create(self, input_file_id: str, key: str, path: Path | None = None) -> Any: ...

    async def get(self, batch_id: str) -> Any: ...

    async def cancel(self, batch_id: str) -> Any: ...

    async def find(self, input_file_id: str | None, key: str, since: float | None = None,
                   requests: int | None = None) -> Any: ...

    async def download(self, file_id: str, out: BinaryIO) -> int: ...


TransportFactory = Callable[[str, str, "str | None", float, "dict[str, Any]"], Any]
BatchFactory = Callable[[str, "str | None", float], Any]


@dataclass(frozen=True)
class Backend:
    """One teacher API. `transport(base_url, model, api_key, timeout, options)` makes an
    async context manager that is a Transport; `batch(base_url, api_key, timeout)` a
    BatchAPI (None: no batch endpoint). `check(config)` refuses, before anything is sent,
    what the API cannot do (logprobs where it gives none); returns warnings."""

    name: str
    transport: TransportFactory
    batch: BatchFactory | None = None
    api_key_env: str = "OPENAI_API_KEY"
    check: Callable[[Any], list[str]] | None = None
    describe: str = ""
    base_url: str | None = None  # where a run without --base-url goes (None: the bundled teacher)

