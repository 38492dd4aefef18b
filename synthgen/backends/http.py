"""The OpenAI-compatible chat endpoint over aiohttp: one POST, its answer parsed.

This is the one place that reads HTTP: status codes, bodies and headers become an
`Answer` or the most specific `TeacherFault` here (`fault_for_status`), and everything
else in synthgen decides by class. The hot path is aiohttp: at 256 requests in flight
httpx's pool and the openai SDK's per-request work cost 10x the throughput (bench/).

One `HttpTransport` per endpoint: its credentials (the key, or `user:pass@` in its URL)
and its query string go to that endpoint only, and a redirect is never followed (an
answer from somewhere else would be stored as the teacher's).
"""

from __future__ import annotations

import email.utils
import functools
import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import orjson

from ..errors import (
    AuthFault,
    ConnectionFault,
    EndpointRefused,
    InvalidResponse,
    Overloaded,
    RateLimited,
    Redirected,
    RejectedFault,
    ServerFault,
    StatusFault,
    TeacherFault,
    TimeoutFault,
    TooLarge,
)
from ..types import Answer, Request
from ..urls import strip_credentials
from .structured import SCHEMA_KEY, dialect_for, schema_fields

# What a gateway's refusal of GET /models is about, when it says so in words.
_AUTH_WORDS = re.compile(r"api[ _-]?key|unauthori[sz]ed|authenticat|\bauth\b|credential|"
                         r"token|permission|forbidden", re.IGNORECASE)
_SETUP_WORDS = re.compile(r"database|\bdb\b|not configured|misconfigur|no such table", re.IGNORECASE)
PROBE_TIMEOUT = 5.0
MAX_SERVER_PAUSE = 60.0
SPENT_UNKNOWN_RESET = 1.0


class HttpTransport:
    """POSTs chat completions to one endpoint; `async with` it, then `send`."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout: float = 600.0):
        parts = urlsplit(base_url)
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        elif parts.username is not None:  # http://user:pass@host: basic auth, this host only
            self.headers["Authorization"] = aiohttp.BasicAuth(
                unquote(parts.username), unquote(parts.password or "")).encode()
        host = parts.netloc.rpartition("@")[2]
        path = parts.path.rstrip("/")
        self.endpoint = strip_credentials(base_url)  # what answers record; no secret in it
        self.url = urlunsplit((parts.scheme, host, path + "/chat/completions", parts.query, ""))
        self.models_url = urlunsplit((parts.scheme, host, path + "/models", parts.query, ""))
        self._model = orjson.dumps(model)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # How this server wants a response schema (structured.py); learned from GET /models
        self.dialect = "openai"

    async def __aenter__(self) -> HttpTransport:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self.headers, timeout=self._timeout, auto_decompress=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def body(self, request: Request) -> bytes:
        """What is POSTed for `request` (see `chat_body`), a response schema written the
        way this server wants it."""
        return chat_body(self._model, request, self.dialect)

    async def send(self, request: Request) -> Answer:
        status, raw, headers = await self._exchange("POST", self.url, self.body(request))
        if status != 200:
            raise fault_for_status(status, raw, headers)
        answer = parse_answer(raw, self.endpoint)
        answer.quota_pause = server_pause(headers)
        return answer

    async def list_models(self, timeout: float | None = None) -> list[str] | None:
        """The model ids the endpoint serves; None when it has no /models route.

        A refusal whose message is about a key, auth or a missing database (gateways answer
        400 or 500 for those) is that refusal, not a missing route."""
        status, raw, headers = await self._exchange("GET", self.models_url, None, timeout=timeout)
        if status != 200:
            fault = fault_for_status(status, raw, headers)
            plain = not isinstance(fault, AuthFault | Redirected)
            if plain and isinstance(fault, RejectedFault | ServerFault):
                text = error_text(raw)
                if _AUTH_WORDS.search(text):
                    raise AuthFault(f"HTTP {status}: {text}", status)
                if _SETUP_WORDS.search(text):
                    raise EndpointRefused(f"HTTP {status} to GET /models: {text}", status)
                if isinstance(fault, RejectedFault):
                    return None  # 404, 405, 422...: a proxy without the route; nothing to check
            raise fault
        try:
            data = orjson.loads(raw)
            models = data.get("data", [])
            ids = [str(m["id"]) for m in models]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return None
        owners = {m.get("owned_by") for m in models if isinstance(m, dict)}
        if len(owners) == 1:
            self.dialect = dialect_for(owners.pop())
        return ids

    async def probe(self) -> bool:
        """Does the endpoint answer at all? (Any status below 500 counts as alive.)"""
        try:
            status, _, _ = await self._exchange("GET", self.models_url, None, timeout=PROBE_TIMEOUT)
        except TeacherFault:
            return False
        return status < 500

    async def _exchange(self, method: str, url: str, body: bytes | None,
                        timeout: float | None = None) -> tuple[int, bytes, Any]:
        assert self._session is not None, "use `async with HttpTransport(...)`"
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session.request(method, url, data=body, **kwargs) as resp:
                return resp.status, await resp.read(), resp.headers
        except TimeoutError:
            limit = timeout if timeout is not None else self._timeout.total
            raise TimeoutFault(f"no answer within {limit:g}s") from None
        except aiohttp.ClientPayloadError as exc:
            raise InvalidResponse(f"truncated response body ({exc})") from None
        except aiohttp.ClientError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ConnectionFault(detail) from None
        except OSError as exc:
            raise ConnectionFault(f"{type(exc).__name__}: {exc}") from None


_SCHEMA_MARK = f'"{SCHEMA_KEY}":'


@functools.lru_cache(maxsize=256)
def _params_with_schema(params: str, dialect: str) -> str:
    """The params with the canonical `response_schema` replaced by `dialect`'s own fields
    (cached: every request of a run carries the same schema)."""
    data = orjson.loads(params)
    schema = data.pop(SCHEMA_KEY, None) if isinstance(data, dict) else None
    if schema is None:
        return params  # the mark was inside some other value
    if isinstance(schema, str):  # stored as text, in the schema's own key order
        schema = orjson.loads(schema)
    data.update(schema_fields(schema, dialect))
    return orjson.dumps(data).decode()


def chat_body(model_json: bytes, request: Request, dialect: str = "openai") -> bytes:
    """The chat completion body of a request: the stored canonical JSON spliced in as is
    (no parse and re-dump per request; a request with a response schema has it written in
    `dialect`, see structured.py). `model_json` is the model name as JSON. The one body
    format: a Batch API file line carries exactly this body (OpenAI's form of a schema)."""
    params = request.params
    if _SCHEMA_MARK in params:
        params = _params_with_schema(params, dialect)
    inner = params[1:-1]
    sep = b"," if inner else b""
    return b'{"model":%s,"messages":%s%s%s}' % (model_json, request.messages.encode(), sep,
                                                 inner.encode())


def fault_for_status(status: int, raw: bytes, headers: Any) -> TeacherFault:
    """The one map from an HTTP status to what it means."""
    message = f"HTTP {status}: {error_text(raw)}"
    if status == 429:
        return RateLimited(message, status, parse_retry_after(headers))
    if status in (502, 503, 504):
        return Overloaded(message, status, parse_retry_after(headers))
    if status >= 500:
        return ServerFault(message, status, parse_retry_after(headers))
    if status in (408, 409):
        return StatusFault(message, status, parse_retry_after(headers))
    if 300 <= status < 400:
        where = strip_credentials(headers.get("location", "") or "") or "elsewhere"
        return Redirected(f"HTTP {status}: the endpoint redirects to {where}; synthgen does "
                          "not follow redirects (an answer from elsewhere is not the teacher's): "
                          "pass the final URL as --base-url", status)
    if status in (401, 403):
        return AuthFault(message, status)
    if status == 413:
        return TooLarge(message, status)
    if 400 <= status < 500:
        return RejectedFault(message, status)
    return StatusFault(message, status, None)  # 1xx, other 2xx: odd, but worth another try


def error_text(raw: bytes, limit: int = 300) -> str:
    """The server's own error message where it sent one (OpenAI's {"error": {"message"}})."""
    try:
        data = orjson.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (orjson.JSONDecodeError, AttributeError):
        text = raw.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


# Gateways that say it their own way: LiteLLM sends only `llm_provider-retry-after`.
VENDOR_RETRY_AFTER = ("llm_provider-retry-after", "x-retry-after")


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms`, `Retry-After` (seconds or an HTTP date), a
    gateway's own header, or the reset time of a spent `x-ratelimit-*` quota."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after") or next(
        (headers.get(h) for h in VENDOR_RETRY_AFTER if headers.get(h)), None)
    if not value:
        resets = [parse_duration(headers.get(reset)) for remaining, reset, _ in _QUOTAS
                  if _number(headers.get(remaining)) == 0]
        resets = [r for r in resets if r is not None]
        return max(resets) if resets else None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def parse_answer(raw: bytes, endpoint: str) -> Answer:
    """Parse a chat completion body; anything unusable is an InvalidResponse (retryable)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidResponse(f"response is not valid JSON ({len(raw)} bytes)") from None
    return answer_from(data, endpoint)


def answer_from(data: Any, endpoint: str) -> Answer:
    """A parsed chat completion object -> Answer (what `parse_answer` and a batch output
    line's `response.body` share); anything unusable is an InvalidResponse."""
    if isinstance(data, dict) and "choices" not in data and "error" in data:
        raise InvalidResponse(f"the teacher answered 200 with an error: {error_text(orjson.dumps(data))}")
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content")
        if not isinstance(text, str | None):
            raise TypeError("content is not a string")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        tool_calls = message.get("tool_calls") or None
        refusal = message.get("refusal") or None
        if text is None and tool_calls is None and refusal is None:
            raise InvalidResponse(
                f"the answer has no content, tool calls or refusal (finish_reason "
                f"{choice.get('finish_reason')!r}" + (", reasoning only)" if reasoning else ")"))
        usage = data.get("usage") or {}
        return Answer(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            model=data.get("model"),
            logprobs=_logprobs((choice.get("logprobs") or {}).get("content")),
            endpoint=endpoint,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            tool_calls=tool_calls if isinstance(tool_calls, list) else None,
            refusal=refusal if isinstance(refusal, str) else None,
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


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """`x-ratelimit-reset-*` values: "20ms", "1s", "6m0s", "1h2m3.5s" or bare seconds."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_QUOTAS = tuple(
    (f"x-ratelimit-remaining-{k}", f"x-ratelimit-reset-{k}", f"x-ratelimit-limit-{k}")
    for k in ("requests", "tokens"))
_REMAINING_REQUESTS, _REMAINING_TOKENS = _QUOTAS[0][0], _QUOTAS[1][0]


def server_pause(headers: Any) -> float:
    """Seconds every request should wait because the server says a quota is spent, else 0.

    With `remaining` at 0 the wait is the time for one unit to come back, assuming the
    quota refills evenly over its reset time ((limit - remaining) units over `reset`); a
    server whose window resets all at once answers 429 with Retry-After, which wins then.
    """
    if _REMAINING_REQUESTS not in headers and _REMAINING_TOKENS not in headers:
        return 0.0  # the common case (vLLM, llama.cpp): two lookups per answer
    pause = 0.0
    for remaining_key, reset_key, limit_key in _QUOTAS:
        remaining = _number(headers.get(remaining_key))
        if remaining is None or remaining > 0:
            continue
        reset = parse_duration(headers.get(reset_key))
        if reset is None:  # spent, and no word on when it comes back (LiteLLM): a short pause
            pause = max(pause, SPENT_UNKNOWN_RESET)
            continue
        limit = _number(headers.get(limit_key))
        wait = reset / (limit - remaining) if limit and limit > remaining else reset
        pause = max(pause, wait)
    return min(pause, MAX_SERVER_PAUSE)
