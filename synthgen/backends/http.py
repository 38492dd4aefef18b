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

from .. import coerce
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
from ..redact import Redactor
from ..types import Answer, Request
from ..urls import strip_credentials
from .response import error_text, parse_answer
from .structured import SCHEMA_KEY, dialect_for, schema_fields
from .think import DEFAULT as DEFAULT_THINK
from .think import ThinkTags

__all__ = ["HttpTransport", "chat_body", "error_text", "fault_for_status", "parse_answer",
           "parse_retry_after", "server_pause"]

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
                 timeout: float = 600.0, think: ThinkTags | None = DEFAULT_THINK):
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
        self.redact = Redactor.for_endpoint(base_url, api_key)  # every fault's message passes it
        self.url = urlunsplit((parts.scheme, host, path + "/chat/completions", parts.query, ""))
        self.models_url = urlunsplit((parts.scheme, host, path + "/models", parts.query, ""))
        self._model = orjson.dumps(model)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # How this server wants a response schema (structured.py); learned from GET /models
        self.dialect = "openai"
        self.think = think  # inline reasoning tags split out of the content (think.py)

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
        try:
            if status != 200:
                raise fault_for_status(status, raw, headers)
            answer = parse_answer(raw, self.endpoint, self.think)
        except TeacherFault as fault:  # an error body may echo our own headers
            raise self.redact.fault(fault) from None
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
                text = self.redact(error_text(raw))
                if _AUTH_WORDS.search(text):
                    raise AuthFault(f"HTTP {status}: {text}", status)
                if _SETUP_WORDS.search(text):
                    raise EndpointRefused(f"HTTP {status} to GET /models: {text}", status)
                if isinstance(fault, RejectedFault):
                    return None  # 404, 405, 422...: a proxy without the route; nothing to check
            raise self.redact.fault(fault)
        return self._model_ids(raw)

    def _model_ids(self, raw: bytes) -> list[str] | None:
        """The ids of a `GET /models` list (learning the server's dialect from `owned_by`);
        None when the body is not such a list (nothing to check the model against)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        models = data.get("data") if type(data) is dict else None
        if type(models) is not list or not all(type(m) is dict for m in models):
            return None
        ids = [self.redact(coerce.label(m.get("id")) or "") for m in models]
        owners = {coerce.label(m.get("owned_by")) for m in models}
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
            raise self.redact.fault(InvalidResponse(f"truncated response body ({exc})")) from None
        except aiohttp.ClientError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise self.redact.fault(ConnectionFault(detail)) from None
        except OSError as exc:
            raise ConnectionFault(f"{type(exc).__name__}: {exc}") from None


_SCHEMA_MARK = f'"{SCHEMA_KEY}":'
_LOGPROBS_MARK = '"logprobs":true'
_VLLM_TOKEN_IDS = b',"return_tokens_as_token_ids":true'


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
    # vLLM's logprobs carry token text only; this makes each token "token_id:N" (read back by
    # coerce.logprobs), so KD can line a vLLM corpus up with the student's vocabulary. It is
    # not a param: it changes how the answer is spelled, not what is asked.
    extra = _VLLM_TOKEN_IDS if dialect == "vllm" and _LOGPROBS_MARK in params else b""
    return b'{"model":%s,"messages":%s%s%s%s}' % (model_json, request.messages.encode(), sep,
                                                   inner.encode(), extra)


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
