"""The OpenAI Batch API over aiohttp: files up and down, batches created, read, listed and
cancelled, and every line of an output or error file turned into an Answer or a fault.

    upload(path)        POST /files (purpose "batch"), multipart, streamed from disk
    create(file, key)   POST /batches (window 24h; our key in its metadata)
    get(id) / cancel    GET /batches/{id}, POST /batches/{id}/cancel
    find(file, key)     GET /batches, paged: the batch a killed run created but never recorded
    download(file, fh)  GET /files/{id}/content, streamed to disk

Like `http.py`, this is a room that reads HTTP: a status is turned into a fault class here,
with the same map (`fault_for_status`), so the orchestration in `synthgen.batch` decides
by class. The same file format is what `vllm run-batch` reads and writes, so
`request_line` and `outcome` also serve files that never meet this client.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import orjson

from .. import coerce
from ..errors import (
    BatchFailed,
    ConnectionFault,
    InvalidResponse,
    NotRun,
    RejectedFault,
    TeacherFault,
    TimeoutFault,
)
from ..redact import Redactor
from ..types import Answer
from ..urls import strip_credentials
from .http import fault_for_status
from .response import answer_from, error_message
from .think import DEFAULT as DEFAULT_THINK
from .think import ThinkTags

CHAT_URL = "/v1/chat/completions"
WINDOW = "24h"
KEY_FIELD = "synthgen_batch"  # the metadata field that carries our key for a batch

# The API's statuses: in progress (poll again) and finished (download, ingest).
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
LIST_PAGES = 20  # pages of 100 batches searched for one a killed run created


def request_line(request_id: str, body: bytes) -> bytes:
    """One line of a batch input file: the body is exactly what the online transport POSTs
    (`http.chat_body`), and `custom_id` is the request id (hex, so no escaping)."""
    return b'{"custom_id":"%s","method":"POST","url":"%s","body":%s}\n' % (
        request_id.encode(), CHAT_URL.encode(), body)


class BadLine(ValueError):
    """A line that is not a batch output line at all (no JSON object, no custom_id)."""


_ANY_CREDENTIAL = Redactor()  # output files come without our keys: the generic patterns


def outcome(raw: bytes, endpoint: str,
            think: ThinkTags | None = DEFAULT_THINK) -> tuple[str, Answer | TeacherFault]:
    """An output or error file line -> (custom_id, its Answer or the fault it reports).

    OpenAI and `vllm run-batch` write the same shape: `response` carries the HTTP status
    and body the request got, `error` a failure that had no HTTP answer (OpenAI's
    batch_expired / batch_cancelled: the request never ran)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadLine(f"not JSON ({len(raw)} bytes)") from None
    if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
        raise BadLine("no custom_id")
    custom_id = data["custom_id"]
    response, error = data.get("response"), data.get("error")
    if type(response) is dict:
        code = response.get("status_code", 200)
        body = response.get("body")
        if coerce.status(code) is None:
            return custom_id, InvalidResponse(f"status_code {coerce.message(code, 40)} is not an HTTP status")
        if 200 <= code < 300 and body is not None and not error:
            try:
                return custom_id, answer_from(body, endpoint, think)
            except InvalidResponse as exc:
                return custom_id, _ANY_CREDENTIAL.fault(exc)
        detail = body if body is not None else {"error": error if error else "no body"}
        return custom_id, _ANY_CREDENTIAL.fault(fault_for_status(code, orjson.dumps(detail), {}))
    if type(error) is dict and error.get("code") in ("batch_expired", "batch_cancelled"):
        return custom_id, NotRun(f"{error['code']}: {coerce.message(error.get('message') or '')}".strip())
    if error:
        return custom_id, _ANY_CREDENTIAL.fault(InvalidResponse(
            f"the batch reports an error without a response: {error_message({'error': error})}"))
    raise BadLine("neither a response nor an error (an input file?)")


@dataclass
class BatchInfo:
    """What the API says about one batch."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    total: int = 0
    created_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, data: Any) -> BatchInfo:
        """What the API said, each field typed (a count that is not one reads as 0)."""
        if type(data) is not dict or type(data.get("id")) is not str:
            raise InvalidResponse("the Batch API answered without a batch object")
        counts = data.get("request_counts")
        counts = counts if type(counts) is dict else {}
        errors = data.get("errors") or {}
        errors = errors.get("data") if type(errors) is dict else errors
        created = data.get("created_at")
        metadata = data.get("metadata")
        return cls(id=data["id"], status=coerce.label(data.get("status")) or "unknown",
                   input_file_id=_file_id(data.get("input_file_id")),
                   output_file_id=_file_id(data.get("output_file_id")),
                   error_file_id=_file_id(data.get("error_file_id")),
                   completed=coerce.count(counts.get("completed")) or 0,
                   failed=coerce.count(counts.get("failed")) or 0,
                   total=coerce.count(counts.get("total")) or 0,
                   created_at=float(created) if type(created) in (int, float) else None,
                   metadata=metadata if type(metadata) is dict else {},
                   errors=[e for e in errors if type(e) is dict] if type(errors) is list else [])

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def message(self) -> str | None:
        """The batch-level errors in one line (a failed batch says why here)."""
        if not self.errors:
            return None
        shown = "; ".join(
            f"{coerce.label(e.get('code')) or 'error'}: {coerce.message(e.get('message') or '')}".strip()
            + (f" (line {e['line']})" if e.get("line") is not None else "") for e in self.errors[:3])
        more = len(self.errors) - 3
        return shown + (f"; and {more} more" if more > 0 else "")

    def line_faults(self) -> dict[int, TeacherFault]:
        """Validation errors that name a line (1-based, as the API counts): that request is
        wrong, the others never ran."""
        out: dict[int, TeacherFault] = {}
        for e in self.errors:
            line = e.get("line")
            if type(line) is int:
                code = coerce.label(e.get("code")) or "invalid"
                text = f"{code}: {coerce.message(e.get('message') or '')}".strip()
                fault = RejectedFault(f"the Batch API refused this line: {text}", 400)
                fault.kind = "batch_invalid"
                out[line] = fault
        return out

    def failure(self) -> TeacherFault:
        """What a failed batch means for each request no line error names."""
        return BatchFailed(f"the Batch API failed the batch: {self.message() or 'no reason given'}")


class BatchClient:
    """One Batch API endpoint; `async with` it. The key goes to this endpoint only and is
    never logged; redirects are never followed (as for chat requests). A `base.BatchAPI`:
    files are uploaded first (`uploads`), then a batch is made of one."""

    uploads = True
    fault_for = staticmethod(fault_for_status)  # this API's statuses, by class

    def request_line(self, request_id: str, body: bytes) -> bytes:
        return request_line(request_id, body)

    def outcome(self, raw: bytes, endpoint: str) -> tuple[str, Answer | TeacherFault]:
        return outcome(raw, endpoint, self.think)

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0,
                 think: ThinkTags | None = DEFAULT_THINK):
        self.think = think  # the inline reasoning split, as online answers get it (think.py)
        parts = urlsplit(base_url)
        self._headers: dict[str, str] = {}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        elif parts.username is not None:
            self._headers["Authorization"] = aiohttp.BasicAuth(
                unquote(parts.username), unquote(parts.password or "")).encode()
        self._root = (parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"))
        self._query = parts.query
        self.endpoint = strip_credentials(base_url)
        self._redact = Redactor.for_endpoint(base_url, api_key)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def url(self, path: str, query: str = "") -> str:
        scheme, host, root = self._root
        q = "&".join(p for p in (self._query, query) if p)
        return urlunsplit((scheme, host, root + path, q, ""))

    async def __aenter__(self) -> BatchClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def upload(self, path: Path, name: str) -> str:
        """Upload a batch input file; its file id."""
        with open(path, "rb") as fh:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", fh, filename=name, content_type="application/jsonl")
            data = await self._json("POST", self.url("/files"), data=form)
        file_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(file_id, str):
            raise InvalidResponse("POST /files answered without a file id")
        return file_id

    async def create(self, input_file_id: str, key: str, path: Path | None = None) -> BatchInfo:
        body = {"input_file_id": input_file_id, "endpoint": CHAT_URL, "completion_window": WINDOW,
                "metadata": {KEY_FIELD: key}}
        return BatchInfo.of(await self._json("POST", self.url("/batches"), json=body))

    async def get(self, batch_id: str) -> BatchInfo:
        return BatchInfo.of(await self._json("GET", self.url(f"/batches/{batch_id}")))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return BatchInfo.of(await self._json("POST", self.url(f"/batches/{batch_id}/cancel")))

    async def find(self, input_file_id: str | None, key: str, since: float | None = None,
                   requests: int | None = None) -> BatchInfo | None:
        """The batch made from `input_file_id` or carrying `key`, if the API has one: what
        a run killed between POST /batches and recording its answer left behind."""
        after = None
        for _ in range(LIST_PAGES):
            query = "limit=100" + (f"&after={after}" if after else "")
            page = await self._json("GET", self.url("/batches", query))
            items = page.get("data") if isinstance(page, dict) else None
            if not isinstance(items, list) or not items:
                return None
            for item in items:
                info = BatchInfo.of(item)
                if info.metadata.get(KEY_FIELD) == key or (
                        input_file_id is not None and info.input_file_id == input_file_id):
                    return info
            if not page.get("has_more"):
                return None
            after = items[-1].get("id")
        return None

    async def download(self, file_id: str, out: BinaryIO) -> int:
        """Stream a file's content into `out`; the number of bytes."""
        assert self._session is not None, "use `async with BatchClient(...)`"
        url = self.content_url(file_id)
        size = 0
        with _faults(url, self._timeout.total, self._redact):
            async with self._session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise self.fault_for(resp.status, await resp.read(), resp.headers)
                async for chunk in resp.content.iter_chunked(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
        return size

    def content_url(self, file_id: str) -> str:
        return self.url(f"/files/{file_id}/content")

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        assert self._session is not None, "use `async with BatchClient(...)`"
        with _faults(url, self._timeout.total, self._redact):
            async with self._session.request(method, url, allow_redirects=False, **kwargs) as resp:
                raw = await resp.read()
                if not 200 <= resp.status < 300:
                    raise self.fault_for(resp.status, raw, resp.headers)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidResponse(f"{method} {_path(url)} answered with invalid JSON") from None


def _file_id(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _path(url: str) -> str:
    return urlsplit(url).path


@contextlib.contextmanager
def _faults(url: str, timeout: float | None, redact: Redactor):
    """aiohttp's exceptions -> the fault classes the rest of synthgen reacts to; every
    fault's message redacted (an error body may echo our Authorization header)."""
    try:
        yield
    except TeacherFault as fault:
        raise redact.fault(fault) from None
    except TimeoutError:
        raise TimeoutFault(f"{_path(url)}: no answer within {timeout:g}s") from None
    except aiohttp.ClientPayloadError as exc:
        raise redact.fault(InvalidResponse(f"{_path(url)}: truncated response body ({exc})")) from None
    except aiohttp.ClientError as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise redact.fault(ConnectionFault(f"{_path(url)}: {detail}")) from None
    except OSError as exc:
        raise ConnectionFault(f"{_path(url)}: {type(exc).__name__}: {exc}") from None
