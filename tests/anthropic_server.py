"""A fake Anthropic API on 127.0.0.1, written from Anthropic's public API reference: the
Messages API, the models list and Message Batches, with the shapes, headers and error
bodies the reference gives. Each answer is derived from its prompt (teacher_server.answer),
so a test checks that every stored answer is its own prompt's.

    POST /v1/messages                  x-api-key and anthropic-version required; max_tokens
                                       required; `system` apart; a `thinking` request gets a
                                       thinking block; a system prompt with cache_control is
                                       written to the cache once, read from it after
    GET  /v1/models
    POST /v1/messages/batches          the requests inline; in_progress, then ended after
                                       `polls_to_end` polls; counted in `batch_posts`
    GET  /v1/messages/batches[/{id}]   newest first, paged by after_id
    POST /v1/messages/batches/{id}/cancel
    GET  /v1/messages/batches/{id}/results   JSONL, one result per request

Scripted per prompt: "#fault=429,529,500" (one fault per attempt, then the answer; a 429
or 529 carries `retry-after`), "#batch=errored" (that request's batch result, every time)
or "#batch=expired" (the first batch it is in expires before running it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from teacher_server import answer

DIRECTIVE = re.compile(r"#fault=([\w,]+)")
BATCH_DIRECTIVE = re.compile(r"#batch=(\w+)")
ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          500: "api_error", 529: "overloaded_error"}


def error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": ERRORS.get(status, "api_error"),
                                                         "message": message}},
                             status=status, headers=headers or {})


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class AnthropicServer:
    def __init__(self, api_key: str = "sk-ant-test-key-0123456789",
                 models: tuple[str, ...] = ("claude-test",), retry_after: float = 0.05):
        self.api_key = api_key
        self.models = models
        self.retry_after = retry_after
        self.polls_to_end = 2
        self.received: Counter[str] = Counter()  # attempts per prompt (online)
        self.answered: Counter[str] = Counter()  # answers sent per prompt (online and batch)
        self.bodies: list[dict] = []
        self.batch_posts = 0
        self.batches: dict[str, dict[str, Any]] = {}
        self.cached: set[str] = set()  # system prompts written to the cache
        self.batch_runs: Counter[str] = Counter()  # batches each prompt was in
        self.polls = 0
        self._ids = itertools.count(1)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> AnthropicServer:
        threading.Thread(target=self._serve, daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Anthropic server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/v1/messages", self._message)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/messages/batches", self._create)
        app.router.add_get("/v1/messages/batches", self._list)
        app.router.add_get("/v1/messages/batches/{id}", self._get)
        app.router.add_post("/v1/messages/batches/{id}/cancel", self._cancel)
        app.router.add_get("/v1/messages/batches/{id}/results", self._results)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.headers.get("x-api-key") != self.api_key:
            return error(401, "invalid x-api-key")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return error(400, "anthropic-version: header is required")
        if "authorization" in request.headers:
            return error(400, "use x-api-key, not Authorization")
        return await handler(request)

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": _now()} for m in self.models]
        return web.json_response({"data": data, "has_more": False, "first_id": self.models[0],
                                  "last_id": self.models[-1]})

    def _check(self, body: Any) -> str | None:
        if not isinstance(body, dict) or body.get("model") not in self.models:
            return "model: not found"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
            return "messages: the first message must use the user role"
        if any(m.get("role") not in ("user", "assistant") for m in messages):
            return "messages: roles must be user or assistant"
        for extra in ("seed", "logprobs", "n", "response_schema", "stop"):
            if extra in body:
                return f"{extra}: Extra inputs are not permitted"
        return None

    def _prompt(self, body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, list):
            return "".join(b.get("text", "") or json.dumps(b.get("content")) for b in content)
        return content

    def _reply(self, body: dict) -> dict[str, Any]:
        prompt = self._prompt(body)
        self.answered[prompt] += 1
        content: list[dict[str, Any]] = []
        if isinstance(body.get("thinking"), dict):
            content.append({"type": "thinking", "thinking": f"THINK[{prompt}]", "signature": "sig"})
        content.append({"type": "text", "text": answer(prompt)})
        usage = {"input_tokens": len(prompt.split()), "output_tokens": len(answer(prompt).split()),
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        system = body.get("system")
        if isinstance(system, list) and any("cache_control" in b for b in system):
            text = "".join(b.get("text", "") for b in system)
            key = "cache_read_input_tokens" if text in self.cached else "cache_creation_input_tokens"
            usage[key] = len(text.split())
            self.cached.add(text)
        return {"id": f"msg_{next(self._ids):06d}", "type": "message", "role": "assistant",
                "model": body["model"], "content": content, "stop_reason": "end_turn",
                "stop_sequence": None, "usage": usage}

    async def _message(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = self._check(body)
        if problem:
            return error(400, problem)
        prompt = self._prompt(body)
        self.received[prompt] += 1
        self.bodies.append(body)
        m = DIRECTIVE.search(prompt)
        faults = m.group(1).split(",") if m else []
        attempt = self.received[prompt]
        if attempt <= len(faults):
            status = int(faults[attempt - 1])
            headers = {"retry-after": str(self.retry_after)} if status in (429, 529) else {}
            return error(status, f"scripted {status}", headers)
        return web.json_response(self._reply(body))

    # -- Message Batches ------------------------------------------------------------------

    def _public(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return error(400, "requests: Field required")
        ids = [r.get("custom_id") for r in requests]
        if len(set(ids)) != len(ids) or any(not isinstance(i, str) or len(i) > 64 for i in ids):
            return error(400, "custom_id values must be unique strings of at most 64 characters")
        for r in requests:
            if problem := self._check(r.get("params")):
                return error(400, f"requests.{r['custom_id']}.params.{problem}")
        self.batch_posts += 1
        batch_id = f"msgbatch_{next(self._ids):06d}"
        batch = {"id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                 "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                                    "canceled": 0, "expired": 0},
                 "ended_at": None, "created_at": _now(), "expires_at": _now(), "archived_at": None,
                 "cancel_initiated_at": None, "results_url": None, "_requests": requests, "_polls": 0}
        self.batches[batch_id] = batch
        return web.json_response(self._public(batch))

    async def _get(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return error(404, "batch not found")
        self.polls += 1
        batch["_polls"] += 1
        if batch["processing_status"] != "ended" and batch["_polls"] >= self.polls_to_end:
            self._end(batch)
        return web.json_response(self._public(batch))

    async def _list(self, request: web.Request) -> web.Response:
        items = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        after = request.query.get("after_id")
        if after:
            items = [b for b in items if b["id"] < after]
        limit = int(request.query.get("limit", 20))
        page = items[:limit]
        return web.json_response({"data": [self._public(b) for b in page],
                                  "has_more": len(items) > limit,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None})

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return error(404, "batch not found")
        if batch["processing_status"] == "in_progress":
            batch["processing_status"] = "canceling"
            batch["cancel_initiated_at"] = _now()
        return web.json_response(self._public(batch))

    def _end(self, batch: dict[str, Any]) -> None:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        results = []
        for r in batch["_requests"]:
            prompt = self._prompt(r["params"])
            self.batch_runs[prompt] += 1
            m = BATCH_DIRECTIVE.search(prompt)
            scripted = m.group(1) if m and (m.group(1) != "expired" or self.batch_runs[prompt] == 1) else None
            kind = "canceled" if batch["cancel_initiated_at"] else (scripted or "succeeded")
            if kind == "succeeded":
                result = {"type": "succeeded", "message": self._reply(r["params"])}
            elif kind == "errored":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "scripted error"}}}
            else:
                result = {"type": kind}
            counts[kind] += 1
            results.append({"custom_id": r["custom_id"], "result": result})
        batch["_results"] = results
        batch["request_counts"] = counts
        batch["processing_status"] = "ended"
        batch["ended_at"] = _now()
        batch["results_url"] = f"{self.base_url}/messages/batches/{batch['id']}/results"

    async def _results(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch["processing_status"] != "ended":
            return error(404, "results are not available yet")
        lines = [json.dumps(r) for r in reversed(batch["_results"])]  # any order, as the API says
        return web.Response(body=("\n".join(lines) + "\n").encode(), content_type="application/x-jsonl")
