"""A real OpenAI-compatible HTTP teacher on 127.0.0.1 that tests start and control.

Each answer is derived from its prompt (`answer(prompt, seed)`), so a test can check that
every stored answer belongs to its own prompt. Faults are scripted per prompt with a
directive inside the prompt text, one fault per attempt, then success:

    "... #fault=500,429,drop"   first attempt 500, second 429 (Retry-After), third a
                                dropped connection, fourth answered
    "... #always=400"           every attempt gets HTTP 400 (never healable)

Fault names: any HTTP status number, `drop` (connection closed before a response),
`trunc` (body cut short of its Content-Length), `badjson` (200 with a broken body),
`hang` (sleeps past any sane timeout), `errorbody` (200 whose body is an error object),
`nullcontent` (content null, nothing else), `toolcall` / `refusal` (content null with
tool calls / a refusal: real answers), `redirect` (307 to `redirect_to`). `#finish=length`
in a prompt answers it with finish_reason "length" (cut by max_tokens). `respond` sends any
body instead of the answer (a test's hostile teacher). `billed` is the teacher's own log
of what it answered: the usage of every answer sent, kept or not by the client. Global knobs:
`latency`, `status_all` (every request gets that status, e.g. 401), `down` (refuse with
503s... use `stop()` for a real outage). `received` counts requests per prompt, for resend
checks; `answered_at` holds the time each answer was sent.

Structured output: a request that carries a JSON schema (in any server's form) is answered
`{"answer": "ANSWER[...]", "words": N}`, unless the prompt scripts a misfit per attempt:
`#schema=notjson,wrongtype` (attempt 1 not JSON, attempt 2 `answer` a number, then a fit)
or `#schemaalways=wrongtype`. `reasoning_field` ("reasoning_content" or "reasoning", as
newer vLLM names it) adds `THINK[prompt]` to every answer under that name. `owned_by` is
what `GET /models` says the server is.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

DIRECTIVE = re.compile(r"#(fault|always)=([\w,]+)")
SCHEMA_DIRECTIVE = re.compile(r"#(schema|schemaalways)=([\w,]+)")


def think(prompt: str) -> str:
    return f"THINK[{prompt}]"


SEED_IN_PROMPT = re.compile(r"/seed=(\d+)")


def fitting(schema: dict, prompt: str) -> object:
    """An object that fits a simple schema, derived from the prompt: an integer is its
    minimum plus the last `/seed=K` in the prompt (a judged loopback answer carries one),
    so a judge's scores differ by sample, deterministically."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {k: fitting(v, prompt) for k, v in schema.get("properties", {}).items()}
    if kind == "integer":
        seeds = SEED_IN_PROMPT.findall(prompt)
        low, high = schema.get("minimum", 0), schema.get("maximum", 10**9)
        return min(high, low + (int(seeds[-1]) if seeds else 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    return f"because of {len(prompt)} characters"


def requested_schema(body: dict) -> dict | None:
    """The schema a request asks for, whichever server's form it is written in."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"]
    if "structured_outputs" in body:
        return body["structured_outputs"]["json"]
    return body.get("json_schema")


def answer(prompt: str, seed: Any = None) -> str:
    return f"ANSWER[{prompt}]" + (f"/seed={seed}" if seed is not None else "")


class TeacherServer:
    def __init__(self, latency: float = 0.0, retry_after: float = 0.05, models: tuple[str, ...] = ("m",)):
        self.models = models
        self.latency = latency
        self.retry_after = retry_after
        self.status_all: int | None = None
        self.faults = True  # False: ignore the directives (the teacher has healed)
        self.received: Counter[str] = Counter()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.keep_bodies = True
        self.answered_at: list[float] = []  # time.time() of every answer (not faults) sent
        self.billed: list[tuple[int, int]] = []  # (prompt, completion) tokens of every answer sent
        self.urls: list[str] = []  # path and query of every chat request
        self.redirect_to = ""
        self.reasoning_field: str | None = None
        self.owned_by: str | None = None
        # respond(prompt, attempt, completion, request) -> (status, body, headers) to send
        # instead of `completion` (a dict body is sent as JSON, bytes as they are); None: as is
        self.respond: Callable[..., tuple[int, Any, dict] | None] | None = None
        self.models_reply: tuple[int, Any] | None = None  # (status, JSON body) for GET /models
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> TeacherServer:
        self._thread = threading.Thread(target=self._serve, args=(port,), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("teacher server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._ready.clear()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, port: int) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _models(self, request: web.Request) -> web.Response:
        if self.models_reply is not None:
            status, payload = self.models_reply
            return web.json_response(payload, status=status)
        if self.status_all is not None:
            return web.json_response({"error": {"message": "refused"}}, status=self.status_all)
        data = [{"id": m, "object": "model", **({"owned_by": self.owned_by} if self.owned_by else {})}
                for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        if not isinstance(prompt, str):  # content parts: the answer is derived from their JSON
            prompt = json.dumps(prompt)
        self.received[prompt] += 1
        if self.keep_bodies:
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            self.urls.append(str(request.rel_url))
        attempt = self.received[prompt]
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.status_all is not None:
            return web.json_response({"error": {"message": "refused"}}, status=self.status_all)
        fault = None
        m = DIRECTIVE.search(prompt) if self.faults else None
        if m:
            kinds = m.group(2).split(",")
            if m.group(1) == "always":
                fault = kinds[0]
            elif attempt <= len(kinds):
                fault = kinds[attempt - 1]
        if fault is not None:
            return await self._fault(request, fault)
        completion = self._completion(body, prompt, attempt)
        if self.respond is not None and (sent := self.respond(prompt, attempt, completion, request)):
            status, payload, headers = sent
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            return web.Response(status=status, body=raw, headers=headers, content_type="application/json")
        response = web.json_response(completion)
        self.answered_at.append(time.time())
        self.billed.append((completion["usage"]["prompt_tokens"], completion["usage"]["completion_tokens"]))
        return response

    def _completion(self, body: dict, prompt: str, attempt: int = 1) -> dict:
        text = answer(prompt, body.get("seed"))
        schema = requested_schema(body)
        if schema is not None and set(schema.get("properties", {})) - {"answer", "words"}:
            text = json.dumps(fitting(schema, prompt))
        elif schema is not None:
            text = self._structured(prompt, text, attempt)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.reasoning_field:
            message[self.reasoning_field] = think(prompt)
        cut = "#finish=length" in prompt  # an answer cut by max_tokens
        choice: dict[str, Any] = {"index": 0, "message": message,
                                  "finish_reason": "length" if cut else "stop"}
        if body.get("logprobs"):
            k = body.get("top_logprobs") or 0
            choice["logprobs"] = {"content": [
                {"token": tok, "id": i, "logprob": -0.1 * (i + 1),
                 "top_logprobs": [{"token": f"{tok}~{j}", "id": i * 10 + j, "logprob": -0.1 * (i + j + 1)}
                                  for j in range(k)]}
                for i, tok in enumerate(text.split("[")[:3])
            ]}
        return {
            "id": "cmpl-test", "object": "chat.completion", "model": body.get("model", "test-teacher"),
            "choices": [choice],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        }

    def _structured(self, prompt: str, text: str, attempt: int) -> str:
        misfit = None
        m = SCHEMA_DIRECTIVE.search(prompt) if self.faults else None
        if m:
            kinds = m.group(2).split(",")
            if m.group(1) == "schemaalways":
                misfit = kinds[0]
            elif attempt <= len(kinds):
                misfit = kinds[attempt - 1]
        if misfit == "notjson":
            return "Sure! Here is the JSON: {"
        if misfit == "wrongtype":
            return json.dumps({"answer": 42, "words": "many"})
        return json.dumps({"answer": text, "words": len(prompt.split())})

    async def _fault(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault.isdigit():
            status = int(fault)
            headers = {"Retry-After": str(self.retry_after)} if status in (429, 503) else {}
            return web.json_response({"error": {"message": f"scripted {status}"}}, status=status,
                                     headers=headers)
        if fault == "drop":
            request.transport.close()
            raise asyncio.CancelledError
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault == "trunc":
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = 500
            await resp.prepare(request)
            await resp.write(b'{"id": "cmpl-test", "choices": [{"mess')
            request.transport.close()
            return resp
        if fault == "badjson":
            return web.Response(status=200, body=b'{"choices": [', content_type="application/json")
        if fault == "errorbody":
            return web.json_response({"error": {"message": "upstream model crashed: CUDA OOM"}})
        if fault in ("nullcontent", "toolcall", "refusal"):
            message: dict[str, Any] = {"role": "assistant", "content": None}
            if fault == "toolcall":
                message["tool_calls"] = [{"id": "call_1", "type": "function", "function": {
                    "name": "lookup", "arguments": '{"q": "weather"}'}}]
            if fault == "refusal":
                message["refusal"] = "I can't help with that."
            return web.json_response({"id": "c", "model": "m", "choices": [{
                "index": 0, "message": message,
                "finish_reason": "tool_calls" if fault == "toolcall" else "stop"}]})
        if fault == "redirect":
            raise web.HTTPTemporaryRedirect(self.redirect_to + "/chat/completions")
        raise ValueError(f"unknown fault {fault!r}")


def make_prompts(n: int, prefix: str = "prompt") -> list[str]:
    return [f"{prefix} {i}: what is {i} + {i}?" for i in range(n)]


def write_jsonl(path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
