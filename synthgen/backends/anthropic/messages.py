"""Anthropic's Messages API (`--api anthropic`), as one backend: the request written the way
the API wants it, the answer read back, the API's faults by class.

    request   POST {base}/messages, `x-api-key` and `anthropic-version` headers; the system
              and developer messages go to `system` (with `cache_control` when asked:
              `--cache-prompt`), tool results become `tool_result` blocks, the assistant's
              tool calls `tool_use` blocks; `max_tokens` is required (1024 unless given),
              `stop` is `stop_sequences`; a seed is not sent (the API has none), nor top_p
              beside a temperature (newer models refuse both)
    answer    text blocks -> text, `thinking` blocks -> reasoning, `tool_use` -> tool calls
              (in OpenAI's shape, so exports stay one format); usage with the prompt tokens
              read from and written to the cache; stop_reason -> finish_reason
    faults    429 rate_limit_error -> RateLimited (retry-after), 529 overloaded_error and
              503/504 -> Overloaded (adaptive concurrency backs off), 5xx -> ServerFault,
              401/403 -> AuthFault, 413 -> TooLarge, other 4xx -> RejectedFault; an
              `anthropic-ratelimit-*-remaining` of 0 pauses every request until its reset

Message Batches, at half the price, are batches.py beside it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson

from ... import coerce
from ...errors import (
    AuthFault,
    InvalidResponse,
    Overloaded,
    RateLimited,
    RejectedFault,
    ServerFault,
    StatusFault,
    TeacherFault,
    TooLarge,
)
from ...redact import Redactor
from ...types import SCHEMA_KEY, Answer, Request
from ..http import HttpTransport, parse_retry_after
from ..response import error_message

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
MAX_SERVER_PAUSE = 60.0
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls", "refusal": "content_filter", "pause_turn": "pause_turn"}
_RATE_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")


class AnthropicTransport(HttpTransport):
    """An HttpTransport (its connections, timeouts and connection faults) that speaks the
    Messages API instead of chat completions."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 600.0,
                 cache_prompt: bool = False):
        super().__init__(base_url, model, None, timeout)
        self.headers.pop("Authorization", None)
        if api_key:
            self.headers["x-api-key"] = api_key
        self.headers["anthropic-version"] = VERSION
        self.redact = Redactor.for_endpoint(base_url, api_key)
        self.url = self.models_url.rsplit("/models", 1)[0] + "/messages"
        self._model_name = model
        self.cache_prompt = cache_prompt
        self.dialect = "anthropic"

    def body(self, request: Request) -> bytes:
        return orjson.dumps(message_body(self._model_name, request, self.cache_prompt))

    async def send(self, request: Request) -> Answer:
        status, raw, headers = await self._exchange("POST", self.url, self.body(request))
        try:
            if status != 200:
                raise fault_for(status, raw, headers)
            answer = parse_message(raw, self.endpoint)
        except TeacherFault as fault:  # an error body may echo our own headers
            raise self.redact.fault(fault) from None
        answer.quota_pause = server_pause(headers)
        return answer

    async def list_models(self, timeout: float | None = None) -> list[str] | None:
        status, raw, headers = await self._exchange("GET", self.models_url, None, timeout=timeout)
        if status != 200:
            fault = fault_for(status, raw, headers)
            if isinstance(fault, RejectedFault) and not isinstance(fault, AuthFault):
                return None  # a proxy without the route: nothing to check against
            raise self.redact.fault(fault)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        models = data.get("data") if type(data) is dict else None
        if type(models) is not list:
            return None
        return [coerce.label(m.get("id")) or "" for m in models if type(m) is dict]


def message_body(model: str, request: Request, cache_prompt: bool = False) -> dict[str, Any]:
    """The Messages API body of a request (its stored OpenAI-shaped messages and params)."""
    messages = orjson.loads(request.messages)
    params = orjson.loads(request.params)
    system = [m.get("content") for m in messages if m.get("role") in ("system", "developer")]
    body: dict[str, Any] = {"model": model, "messages": _turns(messages),
                            "max_tokens": params.pop("max_tokens", None) or DEFAULT_MAX_TOKENS}
    if system:
        text = "\n\n".join(_text(c) for c in system)
        body["system"] = ([{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
                          if cache_prompt else text)
    if "stop" in params:
        stop = params.pop("stop")
        body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    for dropped in ("seed", "logprobs", "top_logprobs", "n", SCHEMA_KEY):
        params.pop(dropped, None)
    if "temperature" in params:  # newer Claude models refuse both; the temperature is the one sent
        params.pop("top_p", None)
    body.update(params)  # temperature, top_p, top_k, thinking, tools, metadata: as they are
    return body


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> Anthropic turns: user and assistant alternate; a tool's
    result is a `tool_result` block in a user turn, an assistant's tool calls `tool_use`."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.get("tool_call_id") or "",
                     "content": _text(m.get("content"))}
            role, content = "user", [block]
        elif role == "assistant" and m.get("tool_calls"):
            content = ([{"type": "text", "text": m["content"]}] if m.get("content") else [])
            content += [{"type": "tool_use", "id": c.get("id"), "name": c["function"]["name"],
                         "input": _arguments(c["function"].get("arguments"))} for c in m["tool_calls"]]
        else:
            content = m.get("content") if m.get("content") is not None else ""
        if turns and turns[-1]["role"] == role:  # two in a row (a tool result, then the user)
            turns[-1]["content"] = _blocks(turns[-1]["content"]) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    return turns


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _blocks(content: Any) -> list[dict[str, Any]]:
    return content if isinstance(content, list) else [{"type": "text", "text": str(content)}]


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {"arguments": arguments}
    return arguments or {}


def parse_message(raw: bytes, endpoint: str) -> Answer:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidResponse(f"response is not valid JSON ({len(raw)} bytes)") from None
    return answer_of(data, endpoint)


def answer_of(data: Any, endpoint: str) -> Answer:
    """A Messages API message -> Answer (the online answer and a batch result's alike)."""
    if type(data) is not dict or data.get("type") == "error":
        raise InvalidResponse(f"the teacher answered 200 with no message: {error_message(data)}")
    content = data.get("content")
    if type(content) is not list:
        raise InvalidResponse("response is not a message (no content blocks)")
    blocks = [b for b in content if type(b) is dict]
    texts = [b["text"] for b in blocks if b.get("type") == "text" and type(b.get("text")) is str]
    thinking = [b["thinking"] for b in blocks
                if b.get("type") == "thinking" and type(b.get("thinking")) is str]
    tools = [{"id": coerce.label(b.get("id")), "type": "function",
              "function": {"name": coerce.label(b.get("name")) or "",
                           "arguments": orjson.dumps(b.get("input") or {}).decode()}}
             for b in blocks if b.get("type") == "tool_use"]
    stop = coerce.label(data.get("stop_reason"))
    text = "".join(texts) if texts else None
    refusal = (text or "refused") if stop == "refusal" else None
    if text is None and not tools and refusal is None:
        raise InvalidResponse(f"the message has no text or tool use (stop_reason {stop!r}"
                              + (", thinking only)" if thinking else ")"))
    usage = data.get("usage") if type(data.get("usage")) is dict else {}
    read, written = coerce.count(usage.get("cache_read_input_tokens")), coerce.count(
        usage.get("cache_creation_input_tokens"))
    fresh = coerce.count(usage.get("input_tokens"))
    return Answer(
        text=text, finish_reason=FINISH.get(stop or "", stop), model=coerce.label(data.get("model")),
        prompt_tokens=None if fresh is None else fresh + (read or 0) + (written or 0),
        completion_tokens=coerce.count(usage.get("output_tokens")), logprobs=None, endpoint=endpoint,
        reasoning="\n\n".join(thinking) if thinking else None, tool_calls=tools or None,
        refusal=refusal, cached_tokens=read, cache_write_tokens=written)


def fault_for(status: int, raw: bytes, headers: Any) -> TeacherFault:
    """The Messages API's map from a status (and its error type) to what it means."""
    message = f"HTTP {status}: {error_message(_json(raw))}"
    after = parse_retry_after(headers)
    if status == 429:
        return RateLimited(message, status, after)
    if status in (529, 503, 504):  # overloaded_error: the whole API is busy, back off
        return Overloaded(message, status, after)
    if status >= 500:
        return ServerFault(message, status, after)
    if status in (401, 403):
        return AuthFault(message, status)
    if status == 413:
        return TooLarge(message, status)
    if status in (408, 409):
        return StatusFault(message, status, after)
    if 400 <= status < 500:
        return RejectedFault(message, status)
    return StatusFault(message, status, after)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def server_pause(headers: Any) -> float:
    """Seconds every request should wait because an `anthropic-ratelimit-*` quota is spent
    (remaining 0), until its reset (an RFC 3339 time); else 0."""
    pause = 0.0
    for kind in _RATE_LIMITS:
        remaining = headers.get(f"anthropic-ratelimit-{kind}-remaining")
        if remaining is None or coerce.count(remaining.strip()) != 0:
            continue
        reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
        try:
            when = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp() if reset else None
        except ValueError:
            when = None
        pause = max(pause, 1.0 if when is None else when - time.time())
    return min(max(pause, 0.0), MAX_SERVER_PAUSE)
