"""What a teacher's JSON may hold, made into what the store can keep.

A teacher, a gateway in front of it, a Batch API output file or a recovery file written
by an older synthgen can put any JSON in any field: a token count of "x", 2**40 or 1e300,
a finish_reason that is an object, a logprob id past INTEGER. Stored as they came, such
values fail the commit of the whole batch, and the answers that were paid for sit in a
recovery file that fails the same way on every later run. So every value read from a
response passes one of these functions on its way into an `Answer`:

    count       token counts: a non-negative INTEGER (a numeric string is read), else None
    label       short names (finish_reason, model, endpoint): a string, else None
    token_id    a token id: a non-negative INTEGER, else None
    logprob     a finite number (or -inf, which some servers send for "impossible"), else None
    logprobs    OpenAI's `logprobs.content` as the store's typed list; entries that are
                not objects are dropped, their fields coerced one by one
    message     an error's message: whatever JSON it is, as one line of text

None of them raises: what cannot be used becomes None, which the store reads as unknown.
An answer's text itself is not coerced (backends/response.py refuses a non-string one:
another attempt may bring a usable answer).
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .types import Answer

INT32_MAX = 2**31 - 1
LABEL_CHARS = 200
TOKEN_CHARS = 1000
# vLLM with return_tokens_as_token_ids writes each token as "token_id:N" and no id field
_TOKEN_ID = re.compile(r"token_id:(\d{1,10})")


def count(value: Any) -> int | None:
    """A token count the store's INTEGER column holds, or None (unknown)."""
    if type(value) is int:
        return value if 0 <= value <= INT32_MAX else None
    if type(value) is float:
        return int(value) if value.is_integer() and 0 <= value <= INT32_MAX else None
    if type(value) is str and 0 < len(value) <= 10 and value.isascii() and value.isdigit():
        n = int(value)
        return n if n <= INT32_MAX else None
    return None


def token_id(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= INT32_MAX else None


def label(value: Any) -> str | None:
    """A short name: a string (cut to LABEL_CHARS), a number as text, else None."""
    if type(value) is str:
        return value[:LABEL_CHARS]
    if type(value) in (int, float):
        return str(value)[:LABEL_CHARS]
    return None


def text(value: Any) -> str | None:
    """A free-text field (reasoning, refusal): a string, else None."""
    return value if type(value) is str else None


def logprob(value: Any) -> float | None:
    if type(value) is float:
        return value if not math.isnan(value) and value != math.inf else None
    if type(value) is int:
        return float(max(value, -(2**53))) if value <= 0 else None
    return None


def status(value: Any) -> int | None:
    """An HTTP status code as a batch output line carries it, or None."""
    return value if type(value) is int and 100 <= value <= 599 else None


def _token(entry: dict) -> tuple[str | None, int | None]:
    token, tid = entry.get("token"), token_id(entry.get("id"))
    if type(token) is str and len(token) > TOKEN_CHARS:
        return None, tid  # no vocabulary has such a token: a garbled answer, kept out of memory
    if type(token) is str:
        if tid is None and (m := _TOKEN_ID.fullmatch(token)):
            tid = token_id(int(m.group(1)))
            return None, tid
        return token, tid
    return label(token), tid


def logprobs(content: Any) -> list[dict[str, Any]] | None:
    """OpenAI `logprobs.content` -> the store's typed list (token, id, logprob, top_logprobs)."""
    if not content or type(content) is not list:
        return None
    out = []
    for item in content:
        if type(item) is not dict:
            continue
        token, tid = _token(item)
        top = item.get("top_logprobs")
        alternatives = []
        for t in top if type(top) is list else ():
            if type(t) is dict:
                t_token, t_id = _token(t)
                alternatives.append({"token": t_token, "id": t_id, "logprob": logprob(t.get("logprob"))})
        out.append({"token": token, "id": tid, "logprob": logprob(item.get("logprob")),
                    "top_logprobs": alternatives})
    return out or None


def message(value: Any, limit: int = 300) -> str:
    """An error's message as one line of at most `limit` characters, whatever JSON it is."""
    if type(value) is not str:
        try:
            value = orjson.dumps(value).decode()
        except TypeError:
            value = repr(value)
    value = " ".join(value.split())
    return value[:limit] + ("..." if len(value) > limit else "")


def answer(a: Answer) -> Answer:
    """An Answer with every field coerced: for answers that did not come through a
    backend's parser (a recovery file of an older synthgen, a user's own transport)."""
    tool_calls = a.tool_calls if type(a.tool_calls) is list else None
    return Answer(
        text=a.text if type(a.text) is str else None,
        finish_reason=label(a.finish_reason), prompt_tokens=count(a.prompt_tokens),
        completion_tokens=count(a.completion_tokens), model=label(a.model),
        logprobs=logprobs(a.logprobs), endpoint=label(a.endpoint) or "",
        reasoning=text(a.reasoning), tool_calls=tool_calls, refusal=text(a.refusal),
        json=a.json, cached_tokens=count(a.cached_tokens), cache_write_tokens=count(a.cache_write_tokens),
        reasoning_tokens=count(a.reasoning_tokens))
