"""A fake OpenAI Batch API on 127.0.0.1: files and batches endpoints the tests start and
steer, answering each request from its own prompt (`teacher_server.answer`).

    POST /v1/files                 multipart upload (purpose "batch"); 413 above `max_upload`
    GET  /v1/files/{id}/content    an input, output or error file
    POST /v1/batches               checks the file line by line as the API does; counted
                                   in `batch_posts`
    GET  /v1/batches/{id}          each poll moves validating -> in_progress -> finalizing
                                   -> completed (unless `hold`); `poll_latency` slows it
    GET  /v1/batches               newest first, paged (limit, after, has_more)
    POST /v1/batches/{id}/cancel   cancelling, then cancelled at the next poll
    GET  /v1/models

Scripted per prompt, as in teacher_server: "#batch=500,429" gives the prompt's first run
HTTP 500 and its second 429 (error-file lines), then an answer; "#batchalways=400" always
400. Per batch: `expire_next = k` makes the next batch to finish expire after k lines
(`expire_all = k`: every batch),
`fail_next = [errors]` fails the next batch in validation, `hang_create` creates the next
batch and never answers, `drop_create` creates it and drops the connection, `flaky_polls
= n` answers the next n polls with 500. `submitted` counts how many batches carried each
prompt, `uploads` the (bytes, lines) of every accepted file.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web
from teacher_server import answer

DIRECTIVE = re.compile(r"#(batch|batchalways)=([\w,]+)")
STEPS = ("validating", "in_progress", "finalizing", "completed")


class BatchAPIServer:
    def __init__(self, max_upload: int | None = None, poll_latency: float = 0.0,
                 models: tuple[str, ...] = ("m",), api_key: str | None = None):
        self.max_upload = max_upload
        self.poll_latency = poll_latency
        self.models = models
        self.api_key = api_key
        self.hold = False  # batches stay in_progress until this is False again
        self.expire_next: int | None = None
        self.expire_all: int | None = None  # every batch expires after this many lines
        self.expire_writes_lines = True  # expired requests get batch_expired lines
        self.fail_next: list[dict] | None = None
        self.hang_create = False
        self.drop_create = False
        self.flaky_polls = 0
        self.cancel_keeps = 0.5  # share of a cancelled batch's lines that ran before the cancel
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_posts = 0
        self.polls = 0
        self.uploads: list[tuple[int, int]] = []
        self.refused_uploads: list[int] = []
        self.submitted: Counter[str] = Counter()  # batches that carried each prompt
        self.runs: Counter[str] = Counter()  # times each prompt was run
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self._ids = itertools.count(1)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> BatchAPIServer:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("batch API server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> BatchAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=1 << 30, middlewares=[self._auth])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._get)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        loop.close()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        self.headers.append(dict(request.headers))
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        return await handler(request)

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    # -- files ----------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        if self.max_upload is not None and (request.content_length or 0) > self.max_upload:
            self.refused_uploads.append(request.content_length or 0)
            return _error(413, "File too large")
        form = await request.post()
        if form.get("purpose") != "batch":
            return _error(400, "purpose must be 'batch'")
        field = form.get("file")
        if field is None or not hasattr(field, "file"):
            return _error(400, "no file")
        content = field.file.read()
        file_id = self._id("file")
        self.files[file_id] = content
        self.uploads.append((len(content), content.count(b"\n")))
        return web.json_response({"id": file_id, "object": "file", "bytes": len(content),
                                  "created_at": int(time.time()), "filename": field.filename,
                                  "purpose": "batch"})

    async def _content(self, request: web.Request) -> web.Response:
        content = self.files.get(request.match_info["id"])
        if content is None:
            return _error(404, "No such file")
        return web.Response(body=content, content_type="application/octet-stream")

    # -- batches --------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.batch_posts += 1
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/chat/completions, completion_window 24h")
        content = self.files.get(body.get("input_file_id"))
        if content is None:
            return _error(404, "No such file")
        lines, errors = _check(content)
        batch_id = self._id("batch")
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": "24h",
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata") or {},
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "_lines": lines, "_errors": errors,
                 "_expire": self.expire_next if self.expire_next is not None else self.expire_all,
                 "_fail": self.fail_next}
        self.expire_next = self.fail_next = None
        for line in lines:
            self.submitted[_prompt(line)] += 1
        self.batches[batch_id] = batch
        if self.hang_create:
            self.hang_create = False
            await asyncio.sleep(3600)
        if self.drop_create:
            self.drop_create = False
            request.transport.close()
            raise asyncio.CancelledError
        return web.json_response(_public(batch))

    async def _list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", 20))
        after = request.query.get("after")
        items = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        if after:
            items = [b for b in items if b["id"] < after]
        page = items[:limit]
        return web.json_response({"object": "list", "data": [_public(b) for b in page],
                                  "has_more": len(items) > limit})

    async def _get(self, request: web.Request) -> web.Response:
        self.polls += 1
        if self.poll_latency:
            await asyncio.sleep(self.poll_latency)
        if self.flaky_polls > 0:
            self.flaky_polls -= 1
            return _error(500, "The server had an error while processing your request")
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such batch")
        self._advance(batch)
        return web.json_response(_public(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such batch")
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return _error(400, f"Cannot cancel a batch with status {batch['status']}")
        batch["status"] = "cancelling"
        return web.json_response(_public(batch))

    def _advance(self, batch: dict[str, Any]) -> None:
        status = batch["status"]
        if status == "cancelling":
            keep = int(len(batch["_lines"]) * self.cancel_keeps)
            self._finish(batch, "cancelled", keep, "batch_cancelled")
        elif status == "validating":
            if batch["_errors"] or batch["_fail"]:
                batch["status"] = "failed"
                batch["errors"] = {"object": "list", "data": batch["_errors"] or batch["_fail"]}
            else:
                batch["status"] = "in_progress"
        elif status == "in_progress" and not self.hold:
            if batch["_expire"] is not None:
                self._finish(batch, "expired", batch["_expire"], "batch_expired")
            else:
                batch["status"] = "finalizing"
        elif status == "finalizing":
            self._finish(batch, "completed", len(batch["_lines"]), None)

    def _finish(self, batch: dict[str, Any], status: str, ran: int, unrun_code: str | None) -> None:
        out, err = [], []
        for i, line in enumerate(batch["_lines"]):
            if i >= ran:
                if unrun_code and (unrun_code != "batch_expired" or self.expire_writes_lines):
                    err.append({"id": self._id("batch_req"), "custom_id": line["custom_id"], "response": None,
                                "error": {"code": unrun_code, "message": "not run"}})
                continue
            prompt = _prompt(line)
            self.runs[prompt] += 1
            self.bodies.append(line["body"])
            code = self._scripted(prompt)
            if code is None:
                out.append({"id": self._id("batch_req"), "custom_id": line["custom_id"],
                            "response": {"status_code": 200, "request_id": self._id("req"),
                                         "body": _completion(line["body"], prompt)}, "error": None})
            else:
                err.append({"id": self._id("batch_req"), "custom_id": line["custom_id"],
                            "response": {"status_code": code, "request_id": self._id("req"),
                                         "body": {"error": {"message": f"scripted {code}",
                                                            "type": "server_error"}}},
                            "error": None})
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = self._id("file")
                self.files[file_id] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                batch[name] = file_id
        batch["status"] = status
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": len(out),
                                   "failed": len([r for r in err if r["response"]])}

    def _scripted(self, prompt: str) -> int | None:
        m = DIRECTIVE.search(prompt)
        if not m:
            return None
        codes = [int(c) for c in m.group(2).split(",")]
        if m.group(1) == "batchalways":
            return codes[0]
        run = self.runs[prompt]
        return codes[run - 1] if run <= len(codes) else None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _prompt(line: dict) -> str:
    return line["body"]["messages"][-1]["content"]


def _check(content: bytes) -> tuple[list[dict], list[dict]]:
    """The input file as the API validates it: every line a request to the chat endpoint,
    custom_ids unique, one model."""
    lines, errors, ids, models = [], [], set(), set()
    for n, raw in enumerate(content.splitlines(), 1):
        try:
            line = json.loads(raw)
            assert isinstance(line["custom_id"], str) and line["custom_id"] not in ids, "custom_id"
            assert line["method"] == "POST" and line["url"] == "/v1/chat/completions", "method/url"
            assert isinstance(line["body"]["messages"], list) and line["body"]["model"], "body"
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            errors.append({"code": "invalid_request", "message": f"bad line ({exc})", "line": n})
            continue
        ids.add(line["custom_id"])
        models.add(line["body"]["model"])
        lines.append(line)
    if len(models) > 1:
        errors.append({"code": "mixed_models", "message": "one model per batch", "line": None})
    return lines, errors


def _completion(body: dict, prompt: str) -> dict:
    text = answer(prompt, body.get("seed"))
    return {"id": "chatcmpl-batch", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())}}
