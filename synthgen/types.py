"""The plain data that flows through a run, in one module that imports neither aiohttp nor
duckdb: a backend, the engine and the store each depend on these, never on each other.

    Request ──> Transport.send ──> Answer ──> sink (the store's writer)
                              └──> TeacherFault ──> Failure ──> sink
    Stats: live counters the engine writes and anyone may read (progress, summary)
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# The key under which a request's canonical params carry its response schema (JSON Schema):
# the planner puts it there (so it is part of the request id), the backend writes it the
# way its server wants it (backends/structured.py).
SCHEMA_KEY = "response_schema"


class Request(NamedTuple):
    """One pending request, as the planner stored it.

    `messages` and `params` are canonical JSON text (what the request id hashes), so a
    backend can splice them into its own body format without parsing them again. The field
    order is the column order of the store's pending query: a row becomes a Request as is.
    """

    request_id: str
    messages: str
    params: str
    line: int
    sample_index: int


@dataclass(slots=True)
class Answer:
    """One parsed chat completion (the first choice: every request asks for one sample).

    `text` is None only when the answer is tool calls or a refusal. `quota_pause` is the
    server's own word, read from its rate-limit headers by the backend, that a quota is
    spent: seconds every request should wait (0: none); it is not stored.
    """

    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    logprobs: list[dict[str, Any]] | None
    endpoint: str
    quota_pause: float = 0.0
    reasoning: str | None = None  # the teacher's reasoning trace (reasoning_content)
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    json: Any = None  # the parsed object of a schema-checked answer


@dataclass(slots=True)
class Failure:
    """A request that ended without an answer, with the last attempt's fault."""

    request_id: str
    messages: str
    error_type: str
    status_code: int | None
    message: str
    attempts: int


@dataclass
class Stats:
    """Live counters of one run: the engine writes them, progress and the summary read them."""

    total: int = 0
    already_done: int = 0
    sent: int = 0
    answered: int = 0
    failed: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)  # every failed attempt, by kind
    failures: Counter = field(default_factory=Counter)  # every request filed as failed, by kind
    started: float = field(default_factory=time.monotonic)
    limit: int = 0
    in_flight: int = 0
    planning: bool = False  # True while the input is still being planned (total may grow)

    @property
    def done(self) -> int:
        return self.already_done + self.answered + self.failed
