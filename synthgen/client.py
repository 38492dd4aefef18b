"""The teacher client: one POST to /chat/completions, its answer parsed, its faults classified.

The hot path is aiohttp: at 256 requests in flight httpx's pool and the openai SDK's
per-request work cost 10x the throughput (see bench/RESULTS.md). This module turns every
lower-level error into the most specific `TeacherFault` at the boundary, so retry policy
is decided by class (retry.py), never by reading messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import orjson

from .config import strip_credentials
from .errors import (
    AuthFault,
    ConnectionFault,
    InvalidResponse,
    RejectedFault,
    StatusFault,
    TeacherFault,
    TimeoutFault,
)
from .ratelimit import server_pause
from .retry import MAX_RETRY_AFTER

if TYPE_CHECKING:
    from .governor import Governor

# A 429 without Retry-After still pauses every request for this long.
DEFAULT_429_PAUSE = 1.0
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclass(slots=True)
class Answer:
    """One parsed chat completion (the first choice: every request asks for one sample)."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    logprobs: list[dict[str, Any]] | None
    endpoint: str
    headers: Any  # the response headers (rate-limit state is read from them)


class TeacherClient:
    """An aiohttp session shared by every request of a run, over one or more endpoints.

    With several base URLs each request goes to the endpoint with the fewest requests
    outstanding, so a slow replica naturally receives less work.
    """

    def __init__(self, base_urls: list[str], api_key: str | None, timeout: float):
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.urls, self.base_urls = [], []
        for url in base_urls:
            parts = urlsplit(url)
            if parts.username is not None and not api_key:  # http://user:pass@host: basic auth
                self._headers["Authorization"] = aiohttp.BasicAuth(
                    unquote(parts.username), unquote(parts.password or "")).encode()
            self.base_urls.append(strip_credentials(url))  # what answers record as endpoint
            host = parts.netloc.rpartition("@")[2]
            self.urls.append(urlunsplit(parts._replace(netloc=host)).rstrip("/") + "/chat/completions")
        self.outstanding = [0] * len(self.urls)
        # The server's word on quotas: while monotonic() < pause_until no request is sent.
        self.pause_until = 0.0
        self.governor: Governor | None = None  # quotas, adaptive limit, endpoint health
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TeacherClient:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, timeout=self._timeout,
            json_serialize=lambda o: orjson.dumps(o).decode(), auto_decompress=True,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def pick(self) -> int:
        """Index of the endpoint with the fewest requests outstanding."""
        out = self.outstanding
        return 0 if len(out) == 1 else min(range(len(out)), key=out.__getitem__)

    async def complete(self, body: bytes, endpoint: int | None = None) -> Answer:
        """POST one request body; return its Answer or raise the matching TeacherFault."""
        assert self._session is not None, "use `async with TeacherClient(...)`"
        if self.pause_until:  # a 429 or a spent quota holds every request back
            await self.sit_out_pause()
        if self.governor is not None:
            return await self.governor.send(self, body, endpoint)
        i = self.pick() if endpoint is None else endpoint
        self.outstanding[i] += 1
        try:
            answer = await self._post(self.urls[i], body, self.base_urls[i])
        except StatusFault as fault:
            self.note_fault(fault)
            raise
        finally:
            self.outstanding[i] -= 1
        self.heed(answer.headers)
        return answer

    @property
    def session(self) -> aiohttp.ClientSession | None:
        return self._session

    def probe_urls(self) -> list[str]:
        """Each endpoint's `GET .../models`, the cheap question that says it is alive."""
        return [u.removesuffix("/chat/completions") + "/models" for u in self.urls]

    def pause_for(self, seconds: float) -> None:
        """Hold every request back for `seconds` (a shared backoff, not one request's)."""
        until = time.monotonic() + seconds
        if until > self.pause_until:
            self.pause_until = until

    async def sit_out_pause(self) -> None:
        # Sleeps exactly until the pause ends; again only if it was extended meanwhile.
        while (wait := self.pause_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        self.pause_until = 0.0

    def note_fault(self, fault: TeacherFault) -> None:
        """A 429 slows the whole client down: every request waits out its Retry-After."""
        if fault.status_code == 429:  # capped as the request's own wait is (retry.py)
            after = DEFAULT_429_PAUSE if fault.retry_after is None else fault.retry_after
            self.pause_for(min(after, MAX_RETRY_AFTER))

    def heed(self, headers: Any) -> None:
        """Pause everything when the answer's rate-limit headers say a quota is spent."""
        pause = server_pause(headers)
        if pause:
            self.pause_for(pause)

    async def _post(self, url: str, body: bytes, base_url: str) -> Answer:
        try:
            async with self._session.post(url, data=body) as resp:  # type: ignore[union-attr]
                raw = await resp.read()
                status = resp.status
                headers = resp.headers
        except TimeoutError:
            raise TimeoutFault(f"no answer within {self._timeout.total:g}s") from None
        except aiohttp.ClientPayloadError as exc:
            raise InvalidResponse(f"truncated response body ({exc})") from None
        except aiohttp.ClientError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ConnectionFault(detail) from None
        except OSError as exc:
            raise ConnectionFault(f"{type(exc).__name__}: {exc}") from None
        if status != 200:
            raise _status_fault(status, raw, headers)
        return parse_answer(raw, base_url, headers)


def _status_fault(status: int, raw: bytes, headers: Any) -> Exception:
    message = f"HTTP {status}: {_error_text(raw)}"
    if status in RETRY_STATUSES:
        return StatusFault(message, status, parse_retry_after(headers))
    if status in (401, 403):
        return AuthFault(message, status)
    if 400 <= status < 500:
        return RejectedFault(message, status)
    return StatusFault(message, status, None)  # 1xx/3xx: odd, but worth another try


def _error_text(raw: bytes, limit: int = 300) -> str:
    """The server's own error message where it sent one (OpenAI's {"error": {"message"}})."""
    try:
        data = orjson.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (orjson.JSONDecodeError, AttributeError):
        text = raw.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def parse_answer(raw: bytes, endpoint: str, headers: Any = None) -> Answer:
    """Parse a chat completion body; anything unusable is an InvalidResponse (retryable)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidResponse(f"response is not valid JSON ({len(raw)} bytes)") from None
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content")
        if not isinstance(text, str | None):
            raise TypeError("content is not a string")
        usage = data.get("usage") or {}
        logprobs = _logprobs((choice.get("logprobs") or {}).get("content"))
        return Answer(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            model=data.get("model"),
            logprobs=logprobs,
            endpoint=endpoint,
            headers=headers if headers is not None else {},
        )
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise InvalidResponse(f"response is not a chat completion ({type(exc).__name__}: {exc})") from None


def _logprobs(content: Any) -> list[dict[str, Any]] | None:
    """OpenAI `logprobs.content` -> the store's typed list (token, id, logprob, top_logprobs)."""
    if not content:
        return None
    return [
        {
            "token": item.get("token"),
            "id": item.get("id"),
            "logprob": item.get("logprob"),
            "top_logprobs": [
                {"token": t.get("token"), "id": t.get("id"), "logprob": t.get("logprob")}
                for t in item.get("top_logprobs") or ()
            ],
        }
        for item in content
    ]
