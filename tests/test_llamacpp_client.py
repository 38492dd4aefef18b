"""The measurement client against a server that closes kept-alive connections as llama-server
does: without a word, sometimes just as the next request arrives (student/llamacpp.py).

A raw-socket server on 127.0.0.1, so the test decides exactly when a connection dies."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from synthgen.errors import TeacherError
from synthgen.student import llamacpp
from synthgen.student.llamacpp import LlamaCppClient


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(4096)
    return head.split(b"\r\n")[0]


def _answer(path: bytes) -> bytes:
    if b"/chat/completions" in path:
        chunks = [{"choices": [{"delta": {"content": "hi"}, "finish_reason": None}]},
                  {"choices": [{"delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 1}}]
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        kind = b"text/event-stream"
    else:
        body, kind = json.dumps({"tokens": [1, 2]}).encode(), b"application/json"
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nKeep-Alive: timeout=5, max=100\r\n\r\n" + body)


class DroppingServer:
    """Answers requests on a kept-alive connection; the request numbers in `drop` (counted
    over the whole run, from 1) are read in full and then met with a closed socket, as a
    server closing an idle connection at that moment would."""

    def __init__(self, drop: set[int]):
        self.drop, self.requests, self.connections = drop, 0, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while (line := _read_request(conn)) is not None:
                    self.requests += 1
                    if self.requests in self.drop:
                        break
                    conn.sendall(_answer(line))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server():
    made: list[DroppingServer] = []

    def make(drop: set[int]) -> DroppingServer:
        made.append(DroppingServer(drop))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_a_request_met_by_a_closing_connection_goes_out_again_on_a_fresh_one(server) -> None:
    srv = server({2})
    with LlamaCppClient(srv.url) as client:
        assert client.tokenize("a") == [1, 2]
        assert client.tokenize("b") == [1, 2]  # dropped once, answered on a new connection
    assert (srv.requests, srv.connections) == (3, 2)


def test_a_streamed_chat_met_by_a_closing_connection_goes_out_again(server) -> None:
    srv = server({2})
    with LlamaCppClient(srv.url) as client:
        client.tokenize("warm the pool")
        answer = client.chat_stream([{"role": "user", "content": "x"}], 4)
    assert (answer.text, answer.finish_reason, answer.completion_tokens) == ("hi", "stop", 1)
    assert (srv.requests, srv.connections) == (3, 2)


def test_a_server_that_keeps_dropping_is_an_error_after_one_more_try(server) -> None:
    srv = server(set(range(1, 100)))
    with LlamaCppClient(srv.url) as client, pytest.raises(TeacherError, match=srv.url.split("/v1")[0]):
        client.tokenize("a")
    assert srv.requests == 2


def test_an_idle_connection_is_not_reused_past_the_keepalive(server, monkeypatch) -> None:
    monkeypatch.setattr(llamacpp, "KEEPALIVE_S", 0.2)
    srv = server(set())
    with LlamaCppClient(srv.url) as client:
        client.tokenize("a")
        client.tokenize("b")
        assert srv.connections == 1
        time.sleep(0.4)
        client.tokenize("c")
    assert srv.connections == 2


def test_the_keepalive_is_well_inside_llama_servers_five_seconds() -> None:
    # cpp-httplib's CPPHTTPLIB_KEEPALIVE_TIMEOUT_SECOND is 5; httpx's own default is also 5.
    assert llamacpp.KEEPALIVE_S <= 2.5
