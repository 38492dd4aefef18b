"""llama.cpp's own server endpoints, beyond the OpenAI chat API: what measuring a served
model needs (`synthgen student export`'s check, `eval --served`, `compare`).

    apply_template   POST /apply-template: the GGUF's chat template, rendered by the server
    tokenize         POST /tokenize: the GGUF's tokenizer
    complete         POST /completion: from token ids, greedy, with the tokens back
    token_logprob    the model's log-probability of one given next token (below)
    chat_stream      a streamed chat completion: the answer, time to first token, timings

Why `token_logprob` forces the token with a logit bias: llama-server returns no
log-probabilities for prompt tokens (no `echo`), only for the tokens it generates, and
it reports them from the model's raw distribution, before any sampler (logit bias
included) runs. So a one-token completion of the prefix, biased to pick exactly the
token wanted, returns that token's raw log-probability; with the prompt cache the
prefix is not computed again, so scoring an answer costs one short request per token
(~14 ms each for the 135M teacher here).

Synchronous httpx, as the teacher launcher uses for its health checks: these are a few
hundred sequential requests, not the engine's hot path. Nothing here reacts to a status
code: any failure is a `TeacherError` naming the URL (a measurement is not retried).

The one exception is a request the server never read. llama-server (cpp-httplib) closes a
connection after 5 s idle without saying so (its FIN arrived 5.002 s after an answer here),
and httpx's pool keeps connections for 5 s too: a request sent at about 5 s of idle can go
out on a socket the server is closing, and fails with "Server disconnected without sending
a response" (it failed `synthgen compare` once in CI). So the pool here forgets a
connection after KEEPALIVE_S, well inside the server's window, and a request that still
meets a closed connection before any answer is sent once more on a fresh one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import TeacherError
from ..urls import strip_credentials

# A bias no logit of a real model comes near: the biased token is the greedy choice.
FORCE_BIAS = 1.0e4
# Seconds an idle pooled connection is reused: under llama-server's 5 s (see above).
KEEPALIVE_S = 2.0


@dataclass
class StreamedAnswer:
    """One streamed chat completion, as the client saw it and as the server timed it."""

    text: str
    ttft_s: float | None  # request sent -> first chunk carrying answer text
    total_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)  # llama.cpp's own, when it sends them


class LlamaCppClient:
    """One llama.cpp server, by its OpenAI base URL (`http://host:port/v1`) or its root."""

    def __init__(self, base_url: str, timeout: float = 300.0):
        root = base_url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.base_url = f"{self.root}/v1"
        self.shown = strip_credentials(self.base_url)
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)
        self.http = httpx.Client(timeout=timeout, trust_env=False, limits=limits)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LlamaCppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, reply: httpx.Response, what: str) -> Any:
        # Every failure is the same to a measurement (no retry, no fault class): say it,
        # and say what serves these endpoints, since a 404 here is the usual mistake.
        if not reply.is_success:
            raise TeacherError(
                f"{self.shown}: {what} answered HTTP {reply.status_code}: {reply.text[:300]} "
                "(this needs llama.cpp's server; synthgen teacher start --model FILE.gguf serves one)"
            )
        try:
            return reply.json()
        except ValueError as exc:
            raise TeacherError(f"{self.shown}: {what} answered with no JSON: {reply.text[:200]}") from exc

    def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        """Send it; once more on a fresh connection if the server closed the one it went out
        on before answering (the module's docstring says when). httpx drops the dead
        connection, so the second try opens a new one; a server that is really gone fails
        that one too."""
        try:
            return self.http.send(request, stream=stream)
        except httpx.RemoteProtocolError:
            return self.http.send(request, stream=stream)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            reply = self._send(self.http.build_request("POST", f"{self.root}{path}", json=body))
        except httpx.HTTPError as exc:
            raise TeacherError(f"{self.shown}: {path} failed: {type(exc).__name__}: {exc}") from exc
        return self._check(reply, path)

    def _get(self, path: str) -> Any:
        try:
            reply = self._send(self.http.build_request("GET", f"{self.root}{path}"))
        except httpx.HTTPError as exc:
            raise TeacherError(f"{self.shown} is unreachable: {type(exc).__name__}: {exc}") from exc
        return self._check(reply, path)

    def props(self) -> dict[str, Any]:
        """The server's properties: model_path, chat_template, bos/eos tokens, slots."""
        return self._get("/props")

    def model_id(self) -> str:
        """The name the server answers to (its --alias)."""
        data = self._get("/v1/models").get("data") or [{}]
        return str(data[0].get("id", ""))

    def apply_template(self, messages: list[dict[str, str]]) -> str:
        """The prompt text the server builds for a chat request (generation prompt included)."""
        return str(self._post("/apply-template", {"messages": messages})["prompt"])

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids as the server tokenizes a text prompt (`special`: BOS if the model
        wants one, and special tokens such as <|im_start|> parsed as such)."""
        body = {"content": text, "add_special": special, "parse_special": special}
        return [int(t) for t in self._post("/tokenize", body)["tokens"]]

    def complete(self, prompt: list[int] | str, n_predict: int) -> dict[str, Any]:
        """Greedy completion with the generated token ids (`tokens`) in the answer."""
        body = {
            "prompt": prompt, "n_predict": n_predict, "temperature": 0.0, "top_k": 1,
            "cache_prompt": False, "return_tokens": True,
        }  # fmt: skip
        return self._post("/completion", body)

    def token_logprob(self, prefix: list[int], token: int) -> float:
        """log p(token | prefix) under the served model (see the module's docstring)."""
        body = {
            "prompt": prefix, "n_predict": 1, "n_probs": 1, "temperature": 0.0,
            "cache_prompt": True, "logit_bias": [[token, FORCE_BIAS]],
        }  # fmt: skip
        reply = self._post("/completion", body)
        probs = reply.get("completion_probabilities") or []
        if not probs or int(probs[0].get("id", -1)) != token or probs[0].get("logprob") is None:
            raise TeacherError(
                f"{self.shown}: /completion did not return the forced token {token} with its "
                f"logprob (got {str(probs)[:200]}); this needs llama.cpp's server"
            )
        return float(probs[0]["logprob"])

    def chat_stream(self, messages: list[dict[str, str]], max_tokens: int) -> StreamedAnswer:
        """A greedy chat completion, streamed, with the prompt cache off (each prompt is
        computed in full, so prompt speed means the same for every request)."""
        body = {
            "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, "cache_prompt": False,
        }  # fmt: skip
        parts: list[str] = []
        first: float | None = None
        usage: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        finish = None
        request = self.http.build_request("POST", f"{self.base_url}/chat/completions", json=body)
        started = time.perf_counter()
        try:
            reply = self._send(request, stream=True)
            try:
                if not reply.is_success:
                    reply.read()
                    self._check(reply, "/v1/chat/completions")
                for line in reply.iter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            first = first if first is not None else time.perf_counter()
                            parts.append(text)
                        finish = choice.get("finish_reason") or finish
                    usage = chunk.get("usage") or usage
                    timings = chunk.get("timings") or timings
            finally:
                reply.close()
        except httpx.HTTPError as exc:
            raise TeacherError(f"{self.shown}: the chat request failed: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise TeacherError(f"{self.shown}: a streamed chunk was not JSON: {exc}") from exc
        ended = time.perf_counter()
        return StreamedAnswer(
            text="".join(parts),
            ttft_s=None if first is None else first - started,
            total_s=ended - started,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish,
            timings=timings,
        )
