"""Teacher scoring over HTTP: the teacher's log-probabilities of given token ids.

A scoring request carries token ids, never text (re-tokenizing an answer can split it
differently from the tokens the student sampled): the prompt as the chat template renders
it, then the answer. Two stock forms of an OpenAI-compatible `/v1/completions` answer it:

    prompt_logprobs   vLLM: {"prompt": ids, "prompt_logprobs": K, "max_tokens": 1}; each
                      position holds its own token and the top K, ranked, with ids
    echo              {"prompt": ids, "echo": true, "logprobs": K, "max_tokens": 1}: the
                      legacy completions form, for servers that implement it; vLLM spells
                      tokens "token_id:N" when asked (`return_tokens_as_token_ids`), others
                      give text, which the scorer maps back through the shared tokenizer

Either way only the answer's span is kept, one entry per answer token in the store's
logprobs layout: the token, its id, its logprob, the top-K alternatives. Hosted chat APIs
(OpenAI, Anthropic) return log-probabilities only for tokens they generate themselves, so
they cannot score a student's answer: `ScoringUnsupported` says so and names what to do.

The engine sees an ordinary transport (`send(Request) -> Answer`), so retries, rate
limits, concurrency and failover are the engine's. `score_request` packs the ids into a
`Request`; the answer's `logprobs` are the scores.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from .. import coerce
from ..errors import InvalidResponse, RejectedFault, ScoringError, TeacherFault
from ..types import Answer, Request
from .http import HttpTransport, error_text, fault_for_status

FORMS = ("prompt_logprobs", "echo")
# Hosts whose APIs return logprobs only for their own generations (no prompt logprobs,
# no echo with logprobs): refused before anything is sent or paid.
NO_SCORING_HOSTS = {"api.openai.com": "OpenAI", "api.anthropic.com": "Anthropic",
                    "generativelanguage.googleapis.com": "Google Gemini"}


class ScoringUnsupported(ScoringError):
    """The teacher's API cannot return log-probabilities of given text."""


def alternatives(who: str) -> str:
    """What to do instead when `who` cannot score a student's tokens."""
    return (f"{who} returns log-probabilities only for tokens it generates itself, so it cannot "
            "score given tokens (no prompt_logprobs, no echo with logprobs). Instead: distil "
            "off-policy from the top-20 logprobs it returns while generating (`synthgen generate "
            "--logprobs 20`, then `synthgen train --kd`); or score with an open proxy teacher "
            "that shares the student's tokenizer, served by vLLM (`synthgen score --teacher "
            "http://HOST:8000/v1`) or in-process (`--teacher local --teacher-model DIR`)")


def refuse_hosted(base_url: str) -> None:
    """Raise ScoringUnsupported for an API known not to score given text."""
    host = (urlsplit(base_url).hostname or "").lower()
    who = NO_SCORING_HOSTS.get(host)
    if who is not None:
        raise ScoringUnsupported(f"--teacher {base_url}: {alternatives(who)}")


def score_request(score_id: str, prompt_ids: list[int], answer_ids: list[int], k: int) -> Request:
    """A scoring job as the engine's Request: the ids ride in `messages`, K in `params`."""
    body = orjson.dumps({"prompt": prompt_ids, "answer": answer_ids}).decode()
    return Request(score_id, body, orjson.dumps({"k": k}).decode(), 0, 0)


def unpack(request: Request) -> tuple[list[int], list[int], int]:
    ids = orjson.loads(request.messages)
    return ids["prompt"], ids["answer"], int(orjson.loads(request.params)["k"])


class ScoringTransport(HttpTransport):
    """POSTs scoring requests to one OpenAI-compatible `/v1/completions` endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout: float = 600.0, form: str = "prompt_logprobs"):
        super().__init__(base_url, model, api_key, timeout)
        if form not in FORMS:
            raise ValueError(f"unknown scoring form {form!r}: expected one of {', '.join(FORMS)}")
        self.form = form
        parts = urlsplit(self.url)
        path = parts.path.removesuffix("/chat/completions")
        self.url = urlunsplit((parts.scheme, parts.netloc, path + "/completions", parts.query, ""))
        root = path.removesuffix("/v1")
        self.tokenize_url = urlunsplit((parts.scheme, parts.netloc, root + "/tokenize", parts.query, ""))
        self.model_name = model

    def score_body(self, prompt_ids: list[int], answer_ids: list[int], k: int) -> bytes:
        body: dict[str, Any] = {"model": self.model_name, "prompt": prompt_ids + answer_ids,
                                "max_tokens": 1, "temperature": 0}
        if self.form == "prompt_logprobs":
            body["prompt_logprobs"] = k
        else:
            body.update(echo=True, logprobs=k, return_tokens_as_token_ids=True)
        return orjson.dumps(body)

    async def send(self, request: Request) -> Answer:
        prompt_ids, answer_ids, k = unpack(request)
        body = self.score_body(prompt_ids, answer_ids, k)
        status, raw, headers = await self._exchange("POST", self.url, body)
        try:
            if status != 200:
                raise fault_for_status(status, raw, headers)
            entries = parse_scores(raw, self.form, len(prompt_ids), answer_ids, k)
        except TeacherFault as fault:
            raise self.redact.fault(fault) from None
        return Answer(text=None, finish_reason="scored", prompt_tokens=len(prompt_ids) + len(answer_ids),
                      completion_tokens=0, model=self.model_name, logprobs=entries, endpoint=self.endpoint)

    async def tokenize_chat(self, messages: list[dict[str, Any]]) -> list[int] | None:
        """The server's own token ids of `messages` rendered for a reply (vLLM's /tokenize);
        None where the server has no such route."""
        body = orjson.dumps({"model": self.model_name, "messages": messages, "add_generation_prompt": True})
        status, raw, headers = await self._exchange("POST", self.tokenize_url, body)
        if status != 200:
            if isinstance(fault_for_status(status, raw, headers), RejectedFault):
                return None
            raise self.redact.fault(fault_for_status(status, raw, headers))
        tokens = orjson.loads(raw).get("tokens")
        return [int(t) for t in tokens] if isinstance(tokens, list) else None

    async def can_score(self, prompt_ids: list[int], answer_ids: list[int], k: int) -> str | None:
        """Try one scoring request in this transport's form: None if it works, else the
        server's reason (a refusal of the form, not a fault of the connection)."""
        try:
            await self.send(score_request("probe", prompt_ids, answer_ids, k))
        except (RejectedFault, InvalidResponse) as fault:
            return fault.message
        return None


def parse_scores(raw: bytes, form: str, prompt_len: int, answer_ids: list[int],
                 k: int) -> list[dict[str, Any]]:
    """The answer span of a completions response, one store entry per answer token."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidResponse(f"scoring response is not valid JSON ({len(raw)} bytes)") from None
    choices = data.get("choices") if type(data) is dict else None
    if type(choices) is not list or not choices or type(choices[0]) is not dict:
        said = error_text(raw) if type(data) is dict and "error" in data else "no choices"
        raise InvalidResponse(f"scoring response is not a completion ({said})")
    choice = choices[0]
    if form == "prompt_logprobs":
        return _from_prompt_logprobs(choice.get("prompt_logprobs"), prompt_len, answer_ids, k)
    return _from_echo(choice.get("logprobs"), prompt_len, answer_ids, k)


def _from_prompt_logprobs(positions: Any, prompt_len: int, answer_ids: list[int],
                          k: int) -> list[dict[str, Any]]:
    if type(positions) is not list:
        raise RejectedFault("the server returned no prompt_logprobs (it does not support them)")
    if len(positions) < prompt_len + len(answer_ids):
        raise InvalidResponse(f"prompt_logprobs cover {len(positions)} positions, expected "
                              f"{prompt_len + len(answer_ids)} (prompt {prompt_len} + answer "
                              f"{len(answer_ids)})")
    out = []
    for j, tid in enumerate(answer_ids):
        scored = positions[prompt_len + j]
        if type(scored) is not dict or str(tid) not in scored:
            raise InvalidResponse(f"prompt_logprobs position {prompt_len + j} does not hold the "
                                  f"answer's token {tid}")
        ranked = []
        for key, value in scored.items():
            if type(value) is not dict:
                continue
            rank = coerce.count(value.get("rank"))
            tid_ = coerce.token_id(int(key)) if key.isdigit() else None
            ranked.append((rank if rank is not None else 1 << 30, tid_,
                           coerce.text(value.get("decoded_token")), coerce.logprob(value.get("logprob"))))
        ranked.sort(key=lambda r: r[0])
        own = scored[str(tid)]
        top = [{"token": t, "id": i, "logprob": lp} for rank, i, t, lp in ranked if rank <= k][:k]
        out.append({"token": coerce.text(own.get("decoded_token")), "id": tid,
                    "logprob": _required(own.get("logprob"), prompt_len + j), "top_logprobs": top})
    return out


def _from_echo(logprobs: Any, prompt_len: int, answer_ids: list[int], k: int) -> list[dict[str, Any]]:
    if type(logprobs) is not dict:
        raise RejectedFault("the server echoed no logprobs (it does not support echo with logprobs)")
    tokens, values, tops = (logprobs.get(f) for f in ("tokens", "token_logprobs", "top_logprobs"))
    end = prompt_len + len(answer_ids)
    if not all(type(x) is list and len(x) >= end for x in (tokens, values, tops)):
        raise InvalidResponse(f"echoed logprobs cover fewer than the {end} positions sent")
    out = []
    for j, tid in enumerate(answer_ids):
        at = prompt_len + j
        token, said = _echo_token(tokens[at])
        if said is not None and said != tid:
            raise InvalidResponse(f"echoed position {at} is token {said}, the answer's is {tid}")
        alts = tops[at] if type(tops[at]) is dict else {}
        top = []
        for key, lp in sorted(alts.items(), key=lambda kv: -(coerce.logprob(kv[1]) or -1e30))[:k]:
            t, i = _echo_token(key)
            top.append({"token": t, "id": i, "logprob": coerce.logprob(lp)})
        out.append({"token": token, "id": tid, "logprob": _required(values[at], at), "top_logprobs": top})
    return out


_TOKEN_ID = re.compile(r"token_id:(\d{1,10})")


def _echo_token(value: Any) -> tuple[str | None, int | None]:
    """"token_id:N" -> (None, N); plain text -> (text, None): the scorer maps it to an id."""
    if type(value) is not str:
        return None, None
    if m := _TOKEN_ID.fullmatch(value):
        return None, coerce.token_id(int(m.group(1)))
    return value, None


def _required(value: Any, position: int) -> float:
    lp = coerce.logprob(value)
    if lp is None:
        raise InvalidResponse(f"no logprob for the answer's token at position {position}")
    return lp
