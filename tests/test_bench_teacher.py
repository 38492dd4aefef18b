"""The benchmark teacher (bench/teacher.py) speaks enough HTTP/1.1 for every client measured."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

TEACHER = Path(__file__).resolve().parent.parent / "bench" / "teacher.py"


@pytest.fixture
def bench_teacher():
    proc = subprocess.Popen([sys.executable, str(TEACHER), "--latency-ms", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT"), line
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


def _post(port: int, path: str, body: bytes) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def test_answers_a_chat_completion_with_usage_and_counts_it(bench_teacher):
    port = bench_teacher
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()
    data = _post(port, "/v1/chat/completions", body)
    assert data["choices"][0]["message"]["content"]
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] > 0
    assert _get(port, "/v1/models")["data"][0]["id"] == "bench"
    stats = _get(port, "/stats")
    assert stats["count"] == 1 and stats["last"] >= stats["first"] > 0
    _post(port, "/reset", b"")
    assert _get(port, "/stats")["count"] == 0


def test_keep_alive_and_pipelined_requests_on_one_connection(bench_teacher):
    body = b'{"model":"bench","messages":[]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    with socket.create_connection(("127.0.0.1", bench_teacher), timeout=10) as sock:
        sock.sendall(request * 3)  # three requests in one write, the last split below
        sock.sendall(request[:20])
        sock.sendall(request[20:])
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 4 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 4
    assert received.count(b'"usage"') == 4
