"""Seeded generators of what a careless or hostile world sends synthgen: teacher responses
of any shape and type, and input lines of any shape and bytes (issue 24's fuzz).

`HostileTeacher` is the loopback teacher (teacher_server.py) with a `respond` hook that,
for a share of attempts, answers with one of the mutations below instead of the clean
completion. Every mutation is drawn from a `random.Random` seeded by (seed, prompt,
attempt), so a failing case is replayed by its seed. A mutated 200 answer keeps the
answer's text exactly `answer(prompt)` where it has text at all: whatever else a teacher
garbles, an answer stored must be its own prompt's, which the tests check row by row.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from teacher_server import TeacherServer

# Values of every JSON type, and the edges of the store's INTEGER and DOUBLE columns.
ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, -2**40, 2**31, 2**40, 2**63 - 1, 1e300, -1e300,
                         "", "x", "12", "-3", "1e3", " 7 ", "\u0000", "\ud7ff\ue000", "token_id:99",
                         "token_id:99999999999", [], [1, "a"], {}, {"a": {"b": [None]}}, "x" * 5000]
# Statuses that are a fault of one request (a 401/403 or a redirect stops a run early by
# design: the targeted tests cover those, here they would only end the fuzz early).
STATUSES = [400, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 200, 201, 299]
RETRY_AFTER = ["1e12", "inf", "-inf", "nan", "-5", "0", "0.01", "soon", "Wed, 21 Oct 2099 07:28:00 GMT",
               "Thu, 01 Jan 1970 00:00:00 GMT", "", "1" * 400]


def rng_for(seed: int, *parts: object) -> random.Random:
    key = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(key, "big"))


def odd(rng: random.Random) -> Any:
    return rng.choice(ODD_VALUES)


def _usage(rng: random.Random, c: dict) -> dict:
    choice = rng.randrange(4)
    if choice == 0:
        c["usage"] = odd(rng)
    elif choice == 1:
        c.pop("usage", None)
    else:
        c["usage"] = {k: odd(rng) if rng.random() < 0.7 else v for k, v in c["usage"].items()}
    return c


def _names(rng: random.Random, c: dict) -> dict:
    target = rng.choice(["finish_reason", "model", "id", "object", "index"])
    if target == "finish_reason":
        c["choices"][0]["finish_reason"] = odd(rng)
    elif target == "index":
        c["choices"][0]["index"] = odd(rng)
    else:
        c[target] = odd(rng)
    return c


def _logprobs(rng: random.Random, c: dict) -> dict:
    choice = c["choices"][0]
    kind = rng.randrange(5)
    if kind == 0:
        choice["logprobs"] = odd(rng)
    elif kind == 1:
        choice["logprobs"] = {"content": odd(rng)}
    else:
        one = {"token": "t", "id": 1, "logprob": -0.5}
        content = (choice.get("logprobs") or {}).get("content") or [{**one, "top_logprobs": [one]}]
        for entry in content:
            for field in ("token", "id", "logprob", "top_logprobs", "bytes"):
                if rng.random() < 0.3:
                    entry[field] = odd(rng)
            tops = entry.get("top_logprobs")
            if isinstance(tops, list):
                for i, top in enumerate(tops):
                    if rng.random() < 0.3:
                        tops[i] = odd(rng) if rng.random() < 0.3 else {**top, rng.choice(
                            ["token", "id", "logprob"]): odd(rng)} if isinstance(top, dict) else top
        if rng.random() < 0.3:
            content.append(odd(rng))
        choice["logprobs"] = {"content": content}
    return c


def _message(rng: random.Random, c: dict) -> dict:
    """Fields beside the text: reasoning, tool calls, refusal, extra keys, a second choice."""
    message = c["choices"][0]["message"]
    field = rng.choice(["reasoning_content", "reasoning", "tool_calls", "refusal", "role", "extra",
                        "choices2"])
    if field == "extra":
        message[rng.choice(["audio", "annotations", "function_call"])] = odd(rng)
    elif field == "choices2":
        c["choices"].append(odd(rng))
    else:
        message[field] = odd(rng)
    return c


def _unusable(rng: random.Random, c: dict) -> Any:
    """A 200 that is no answer at all: retried, never stored."""
    kind = rng.randrange(9)
    if kind == 0:
        return odd(rng)  # the whole body a scalar, a list, an empty object
    if kind == 1:
        c["choices"] = odd(rng)
    elif kind == 2:
        c["choices"] = [odd(rng)]
    elif kind == 3:
        c["choices"][0]["message"] = odd(rng)
    elif kind == 4:
        content = odd(rng)
        c["choices"][0]["message"]["content"] = content if not isinstance(content, str) else None
    elif kind == 5:
        return {"error": odd(rng)}
    elif kind == 6:
        return {"error": {"message": odd(rng), "code": odd(rng)}}
    elif kind == 7:
        c["choices"] = []
    else:
        c["choices"][0]["message"] = {"role": "assistant", "content": None}
    return c


def _bytes(rng: random.Random, c: dict) -> bytes:
    raw = json.dumps(c).encode()
    kind = rng.randrange(7)
    if kind == 0:
        return raw[: rng.randrange(len(raw))]  # cut short
    if kind == 1:
        return raw[:10] + b"\xff\xfe\x80" + raw[10:]  # not UTF-8
    if kind == 2:
        return b""
    if kind == 3:
        return b"[" * 5000 + b"]" * 5000  # deeper than any parser recurses
    if kind == 4:
        return raw.replace(b'"usage"', b'"usage": NaN, "u"', 1)  # not JSON
    if kind == 5:
        return raw.replace(b'"model"', b'"model": "\\ud800", "m"', 1)  # a lone surrogate
    return b"\x00" * rng.randrange(1, 64)


def _error(rng: random.Random) -> tuple[int, Any, dict]:
    status = rng.choice(STATUSES[:11])
    body = rng.choice([{"error": {"message": odd(rng)}}, {"error": odd(rng)}, odd(rng),
                       {"error": {"message": "slow down", "type": odd(rng), "code": odd(rng)}}])
    headers = {}
    if rng.random() < 0.6:
        headers["Retry-After"] = rng.choice(RETRY_AFTER)
    if rng.random() < 0.2:
        headers["retry-after-ms"] = rng.choice(RETRY_AFTER)
    return status, body, headers


def _quota_headers(rng: random.Random) -> dict:
    return {"x-ratelimit-remaining-requests": rng.choice(["0", "-1", "nan", "x", ""]),
            "x-ratelimit-reset-requests": rng.choice([*RETRY_AFTER, "6m0s", "1h2m3.5s", "20ms"]),
            "x-ratelimit-limit-requests": rng.choice(["0", "100", "inf", "x"])}


MUTATIONS = ("usage", "names", "logprobs", "message", "unusable", "bytes", "error", "status", "quota")


def hostile(seed: int, prompt: str, attempt: int, completion: dict, clean_share: float
            ) -> tuple[int, Any, dict] | None:
    """What the teacher sends for this attempt: None (the clean answer), or a mutation."""
    rng = rng_for(seed, prompt, attempt)
    if rng.random() < clean_share:
        return None
    c = json.loads(json.dumps(completion))
    kind = rng.choice(MUTATIONS)
    headers: dict = {}
    if kind == "usage":
        c = _usage(rng, c)
    elif kind == "names":
        c = _names(rng, c)
    elif kind == "logprobs":
        c = _logprobs(rng, c)
    elif kind == "message":
        c = _message(rng, c)
    elif kind == "unusable":
        c = _unusable(rng, c)
    elif kind == "bytes":
        return 200, _bytes(rng, c), {}
    elif kind == "error":
        return _error(rng)
    elif kind == "status":
        return rng.choice(STATUSES[11:]), c, {}
    else:
        headers = _quota_headers(rng)
    if type(c) is dict and type(c.get("usage")) is dict and rng.random() < 0.3:
        c = _usage(rng, c)  # two faults at once
    return 200, c, headers


class HostileTeacher(TeacherServer):
    """The loopback teacher, hostile on `1 - clean_share` of its attempts."""

    def __init__(self, seed: int, clean_share: float = 0.4, **kwargs: Any):
        super().__init__(**kwargs)
        self.seed = seed
        self.served = 0
        self.keep_bodies = False

        def respond(prompt, attempt, completion, request):
            self.served += 1
            return hostile(self.seed, prompt, attempt, completion, clean_share)

        self.respond = respond


# Input lines: what a user's file may hold, valid or not (the reader must name each bad one).
def input_line(rng: random.Random, i: int) -> bytes:
    """One line of a JSONL input file: a valid row about half the time (always unique)."""
    prompt = f"fuzz {i}: what is {i} squared?"
    kind = rng.randrange(20)
    if kind < 8:
        row: Any = {"prompt": prompt, **{f"m{k}": odd(rng) for k in range(rng.randrange(3))}}
    elif kind < 10:
        row = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]}
    elif kind == 10:
        row = {"prompt": odd(rng)}
    elif kind == 11:
        row = {"messages": odd(rng)}
    elif kind == 12:
        row = {"messages": [{"role": odd(rng), "content": prompt}]}
    elif kind == 13:
        row = {"messages": [{"role": "user", "content": odd(rng)}]}
    elif kind == 14:
        row = {rng.choice(["request_id", "model", "response", "finish_reason"]): "x", "prompt": prompt}
    elif kind == 15:
        row = odd(rng)
    elif kind == 16:
        return json.dumps({"prompt": prompt}).encode()[: rng.randrange(1, 20)]
    elif kind == 17:
        return b'{"prompt": "' + bytes(rng.randrange(256) for _ in range(8)) + b'"}'
    elif kind == 18:
        row = {"prompt": prompt, "messages": [{"role": "user", "content": prompt}]}
    else:
        row = {"messages": [{"role": "user", "content": prompt}, {"role": rng.choice(
            ["assistant", "system", "tool", "user"]), "content": rng.choice(["ok", "", None])}]}
    return json.dumps(row).encode()


def input_file(seed: int, lines: int) -> bytes:
    rng = random.Random(seed)
    out = [input_line(rng, i) for i in range(lines)]
    for _ in range(lines // 100):  # blank lines and a stray BOM on the way
        out.insert(rng.randrange(len(out)), rng.choice([b"", b"   ", b"\xef\xbb\xbf{}"]))
    return b"\n".join(out) + b"\n"
