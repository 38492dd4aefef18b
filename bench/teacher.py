"""A fast OpenAI-compatible teacher for benchmarks: a raw asyncio HTTP/1.1 server.

    python bench/teacher.py --port 0 --latency-ms 100 --core 1

Prints `PORT <n>` on stdout once it listens. Every POST (any path) gets the same short
chat completion with usage after `--latency-ms`; keep-alive, pipelined requests and
Content-Length bodies are handled; nothing is parsed beyond the headers, so one core
serves far more requests per second than any client under test sends.

`GET /stats` returns {"count", "first", "last"} (server-side monotonic clock of the
first and last request received); `POST /reset` (no body) zeroes them. The bench reads
its request rate from these, so every client is measured by the same clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time

BODY = json.dumps({
    "id": "cmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 42."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}, separators=(",", ":")).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n" % len(BODY)) + BODY


class Stats:
    count = 0
    first = 0.0
    last = 0.0


def _plain(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n" % len(body)) + body


class Http(asyncio.Protocol):
    latency = 0.0

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end]
            length = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15: j if j >= 0 else None])
            end = head_end + 4 + length
            if len(self.buf) < end:
                return
            self.buf = self.buf[end:]
            if head.startswith(b"POST"):
                if head.startswith(b"POST /reset"):
                    Stats.count, Stats.first, Stats.last = 0, 0.0, 0.0
                    self.transport.write(_plain(b"200 OK", b"{}"))
                    continue
                now = time.monotonic()
                if Stats.count == 0:
                    Stats.first = now
                Stats.count += 1
                Stats.last = now
                if self.latency:
                    self.loop.call_later(self.latency, self._send, RESPONSE)
                else:
                    self.transport.write(RESPONSE)
            elif head.startswith(b"GET /stats"):
                body = json.dumps({"count": Stats.count, "first": Stats.first, "last": Stats.last}).encode()
                self.transport.write(_plain(b"200 OK", body))
            elif head.startswith(b"GET"):  # /v1/models and anything else
                self.transport.write(_plain(b"200 OK", b'{"object":"list","data":[{"id":"bench","object":"model"}]}'))
            else:
                self.transport.write(_plain(b"405 Method Not Allowed", b"{}"))

    def _send(self, data):
        if not self.transport.is_closing():
            self.transport.write(data)


async def serve(port: int, latency: float) -> None:
    Http.latency = latency
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--core", type=int, default=None, help="pin to this CPU core")
    ap.add_argument("--uvloop", action="store_true", help="use uvloop if installed")
    args = ap.parse_args()
    if args.core is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.core})
        except OSError as exc:
            print(f"cannot pin to core {args.core}: {exc}", file=sys.stderr)
    if args.uvloop:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
