"""A chat completion body, typed: the one boundary between a teacher's JSON and an `Answer`.

Every field synthgen keeps from an answer is read here, by the online transport and for
every line of a Batch API or `vllm run-batch` output file alike, and each value passes
`synthgen.coerce` (a count that is "x" or 2**40, a finish_reason that is an object, a
logprob id past INTEGER: unknown, never a value that fails a later commit). What makes
the answer itself unusable (not JSON, no choices, content that is not text, nothing at
all) is an `InvalidResponse`: a retryable fault of that request, never an exception of
another class. `error_text` reads an error body of any shape.

Reasoning written inline in the content (`<think>...</think>answer`) is split into the
reasoning here (think.py), for every path an answer comes by; an answer max_tokens cut
while it was still reasoning is kept as one (content "", finish_reason 'length', the
reasoning stored): sending it again would be paid again for the same cut.
"""

from __future__ import annotations

from typing import Any

import orjson

from .. import coerce
from ..errors import InvalidResponse
from ..types import Answer
from . import think as inline
from .think import ThinkTags


def parse_answer(raw: bytes, endpoint: str, think: ThinkTags | None = inline.DEFAULT) -> Answer:
    """Parse a chat completion body; anything unusable is an InvalidResponse (retryable)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidResponse(f"response is not valid JSON ({len(raw)} bytes)") from None
    return answer_from(data, endpoint, think)


def answer_from(data: Any, endpoint: str, think: ThinkTags | None = inline.DEFAULT) -> Answer:
    """A parsed chat completion object -> Answer (what `parse_answer` and a batch output
    line's `response.body` share); anything unusable is an InvalidResponse. Reasoning
    inline between `think`'s tags is split out (None: the content is kept as sent)."""
    if type(data) is not dict:
        raise InvalidResponse(f"response is not a chat completion (a JSON {type(data).__name__})")
    choices = data.get("choices")
    if choices is None and "error" in data:
        raise InvalidResponse(f"the teacher answered 200 with an error: {error_message(data)}")
    if type(choices) is not list or not choices or type(choices[0]) is not dict:
        raise InvalidResponse("response is not a chat completion (no choices)")
    choice = choices[0]
    message = choice.get("message")
    if type(message) is not dict:
        raise InvalidResponse("response is not a chat completion (the choice has no message)")
    text = message.get("content")
    if text is not None and type(text) is not str:
        raise InvalidResponse(f"the answer's content is a JSON {type(text).__name__}, not text")
    reasoning = coerce.text(message.get("reasoning_content")) or coerce.text(message.get("reasoning"))
    tool_calls = message.get("tool_calls")
    tool_calls = tool_calls if type(tool_calls) is list and tool_calls else None
    refusal = coerce.text(message.get("refusal")) or None
    finish_reason = coerce.label(choice.get("finish_reason"))
    logprobs = choice.get("logprobs")
    logprobs = coerce.logprobs(logprobs.get("content")) if type(logprobs) is dict else None
    usage = data.get("usage")
    usage = usage if type(usage) is dict else {}
    prompt_details, completion_details = _details(usage, "prompt"), _details(usage, "completion")
    reasoning_tokens = coerce.count(completion_details.get("reasoning_tokens"))
    if think is not None and text is not None and not reasoning and (cut := inline.split(text, think)):
        reasoning, answer_at = cut[0], cut[2]
        text, (logprobs, counted) = cut[1], inline.answer_logprobs(logprobs, text, answer_at)
        if reasoning_tokens is None:  # the provider's count where it gives one, else the tokens seen
            reasoning_tokens = counted
    if text is None and reasoning and finish_reason == "length" and tool_calls is None:
        text = ""  # cut while reasoning: the trace is the answer there is (see the docstring)
    if text is None and tool_calls is None and refusal is None:
        raise InvalidResponse(
            f"the answer has no content, tool calls or refusal (finish_reason {finish_reason!r}"
            + (", reasoning only)" if reasoning else ")"))
    return Answer(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=coerce.count(usage.get("prompt_tokens")),
        completion_tokens=coerce.count(usage.get("completion_tokens")),
        model=coerce.label(data.get("model")),
        logprobs=logprobs,
        endpoint=endpoint,
        reasoning=reasoning,
        tool_calls=tool_calls,
        refusal=refusal,
        cached_tokens=coerce.count(prompt_details.get("cached_tokens")),
        reasoning_tokens=reasoning_tokens,
    )


def _details(usage: dict, kind: str) -> dict:
    """OpenAI's `prompt_tokens_details` / `completion_tokens_details`, if an object."""
    details = usage.get(f"{kind}_tokens_details")
    return details if type(details) is dict else {}


def error_message(data: Any, limit: int = 300) -> str:
    """The server's own words from a parsed error body (OpenAI's {"error": {"message"}},
    a bare {"message"}, a string, or anything else as JSON), as one line."""
    err = data.get("error", data) if type(data) is dict else data
    if type(err) is dict:
        said = err.get("message")
        if type(said) is str and said.strip():
            return coerce.message(said, limit)
    return coerce.message(err, limit)


def error_text(raw: bytes, limit: int = 300) -> str:
    """An error body's message (see `error_message`); a body that is not JSON as text."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return coerce.message(raw.decode("utf-8", "replace"), limit)
    return error_message(data, limit)
