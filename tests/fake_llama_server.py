#!/usr/bin/env python3
"""A stand-in for llama-server: its flags, /health, /v1/models and chat completions with logprobs.

Stdlib only, so it runs under any Python; tests point SYNTHGEN_LLAMA_SERVER at it to
exercise the whole local-teacher path (start, generate, stop) in a second, without
the model's compute. The answer echoes the prompt's first words.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
VALUED = ("--model", "--alias", "--host", "--port", "--parallel", "--ctx-size", "--threads",
          "--threads-batch")
for flag in VALUED:
    parser.add_argument(flag)
for flag in ("--cont-batching", "--jinja", "--no-webui", "--no-repack"):
    parser.add_argument(flag, action="store_true")
args = parser.parse_args()


class Handler(BaseHTTPRequestHandler):
    def _json(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json({"status": "ok"})
        elif self.path == "/v1/models":
            models = [{"id": args.alias, "object": "model", "owned_by": "fake"}]
            self._json({"object": "list", "data": models})
        else:
            self._json({"error": "not found"}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        words = body["messages"][-1]["content"].split()[:3]
        k = body.get("top_logprobs") or 0
        steps = [
            {"token": w, "id": i, "logprob": -0.5, "top_logprobs": [
                {"token": w, "id": i, "logprob": -0.5 - j} for j in range(k)]}
            for i, w in enumerate(words)
        ]  # fmt: skip
        choices = [
            {"index": n, "message": {"role": "assistant", "content": " ".join(words)},
             "finish_reason": "stop", "logprobs": {"content": steps} if body.get("logprobs") else None}
            for n in range(body.get("n") or 1)
        ]  # fmt: skip
        usage = {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}
        reply = {"id": "x", "object": "chat.completion", "model": args.alias, "choices": choices}
        self._json({**reply, "usage": usage})

    def log_message(self, *a: object) -> None:
        pass


ThreadingHTTPServer((args.host, int(args.port)), Handler).serve_forever()
