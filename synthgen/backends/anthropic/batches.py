"""Anthropic's Message Batches (`generate --api anthropic --batch`): the same batch runner
as OpenAI's Batch API (synthgen/batch/), through this client, at half the price.

    create    POST {base}/messages/batches with the requests themselves (no file upload:
              `uploads` is False), each `{custom_id: request id, params: <Messages body>}`;
              at most 100,000 requests or 256 MB a batch
    get       GET {base}/messages/batches/{id}: in_progress, canceling, ended
    cancel    POST {base}/messages/batches/{id}/cancel
    find      the batch a run killed between create and recording it made: Message
              Batches carry no metadata, so it is the newest batch created since the
              record with as many requests (the runner records before it creates)
    results   the `results_url` of an ended batch, JSONL in any order: each line's
              custom_id and its result, succeeded (a message) / errored (an error by
              type) / canceled / expired (never ran: sent again in a later batch)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ... import coerce
from ...errors import InvalidResponse, NotRun, TeacherFault
from ...redact import Redactor
from ...types import Answer
from ..openai_batch import BadLine, BatchClient, BatchInfo
from .messages import VERSION, answer_of, fault_for

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 2**20
LIST_PAGES = 20
FOUND_SLACK_S = 300.0  # clocks differ: a batch made this long before our record still counts
# An errored result's error type -> the HTTP status the online API gives it (its fault class)
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
                "api_error": 500, "overloaded_error": 529}


class MessageBatches(BatchClient):
    """Anthropic's Message Batches, driven by the batch runner as any `base.BatchAPI`."""

    uploads = False
    fault_for = staticmethod(fault_for)

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0):
        super().__init__(base_url, None, timeout)
        self._headers.pop("Authorization", None)
        if api_key:
            self._headers["x-api-key"] = api_key
        self._headers["anthropic-version"] = VERSION
        self._redact = Redactor.for_endpoint(base_url, api_key)

    def request_line(self, request_id: str, body: bytes) -> bytes:
        return b'{"custom_id":"%s","params":%s}\n' % (request_id.encode(), body)

    def outcome(self, raw: bytes, endpoint: str) -> tuple[str, Answer | TeacherFault]:
        return outcome(raw, endpoint)

    async def upload(self, path: Path, name: str) -> str:
        raise NotImplementedError("Message Batches take their requests with the create")

    async def create(self, input_file_id: str | None, key: str, path: Path | None = None) -> BatchInfo:
        assert path is not None, "Message Batches are created from the batch file's lines"
        requests = b",".join(line.rstrip(b"\n") for line in path.read_bytes().splitlines() if line.strip())
        return info_of(await self._json("POST", self.url("/messages/batches"),
                                        data=b'{"requests":[%s]}' % requests,
                                        headers={"Content-Type": "application/json"}))

    async def get(self, batch_id: str) -> BatchInfo:
        return info_of(await self._json("GET", self.url(f"/messages/batches/{batch_id}")))

    async def cancel(self, batch_id: str) -> BatchInfo:
        return info_of(await self._json("POST", self.url(f"/messages/batches/{batch_id}/cancel")))

    async def find(self, input_file_id: str | None, key: str, since: float | None = None,
                   requests: int | None = None) -> BatchInfo | None:
        if since is None or requests is None:
            return None
        after = None
        for _ in range(LIST_PAGES):
            query = "limit=100" + (f"&after_id={after}" if after else "")
            page = await self._json("GET", self.url("/messages/batches", query))
            items = page.get("data") if isinstance(page, dict) else None
            if not isinstance(items, list) or not items:
                return None
            for item in items:
                info = info_of(item)
                made = info.created_at or 0.0
                if made >= since - FOUND_SLACK_S and info.total == requests:
                    return info
                if made < since - FOUND_SLACK_S:
                    return None  # newest first: older ones cannot be ours
            if not page.get("has_more"):
                return None
            after = page.get("last_id") or items[-1].get("id")
        return None

    def content_url(self, file_id: str) -> str:
        return file_id  # an ended batch's results_url


def info_of(data: Any) -> BatchInfo:
    """A Message Batch object as the runner reads any batch: its status, counts and the
    file (here: the results URL) to ingest when it has ended."""
    if type(data) is not dict or type(data.get("id")) is not str:
        raise InvalidResponse("the Message Batches API answered without a batch object")
    counts = data.get("request_counts") if type(data.get("request_counts")) is dict else {}
    n = {k: coerce.count(counts.get(k)) or 0 for k in ("processing", "succeeded", "errored",
                                                        "canceled", "expired")}
    state = coerce.label(data.get("processing_status")) or "unknown"
    status = {"in_progress": "in_progress", "canceling": "cancelling"}.get(state, state)
    if state == "ended":
        status = "cancelled" if data.get("cancel_initiated_at") else "completed"
    results = data.get("results_url")
    return BatchInfo(id=data["id"], status=status,
                     output_file_id=results if type(results) is str and state == "ended" else None,
                     completed=n["succeeded"], failed=n["errored"], total=sum(n.values()),
                     created_at=_timestamp(data.get("created_at")))


def _timestamp(value: Any) -> float | None:
    if type(value) is not str:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def outcome(raw: bytes, endpoint: str) -> tuple[str, Answer | TeacherFault]:
    """One results line -> (custom_id, its Answer or the fault it reports)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadLine(f"not JSON ({len(raw)} bytes)") from None
    if type(data) is not dict or type(data.get("custom_id")) is not str:
        raise BadLine("no custom_id")
    custom_id, result = data["custom_id"], data.get("result")
    kind = result.get("type") if type(result) is dict else None
    if kind == "succeeded":
        try:
            return custom_id, answer_of(result.get("message"), endpoint)
        except InvalidResponse as exc:
            return custom_id, exc
    if kind in ("canceled", "expired"):
        return custom_id, NotRun(f"batch_{kind}: the batch ended before this request ran")
    if kind == "errored":
        error = result.get("error")
        inner = error.get("error") if type(error) is dict and type(error.get("error")) is dict else error
        etype = coerce.label(inner.get("type")) if type(inner) is dict else None
        status = ERROR_STATUS.get(etype or "", 500)
        return custom_id, fault_for(status, orjson.dumps(error if error is not None else {}), {})
    raise BadLine(f"a result of type {kind!r}")
