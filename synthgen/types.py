"""The plain data that flows through a run, in one module that imports neither aiohttp nor
duckdb: a backend, the engine and the store each depend on these, never on each other.

    Request ──> Transport.send ──> Answer ──> sink (the store's writer)
                              └──> TeacherFault ──> Failure ──> sink
    Stats: live counters the engine writes and anyone may read (progress, summary), with
           a RateWindow of their recent history (rates and ETA that follow the run now)
    RunSummary: what a run did, its `Counts` taken from its Stats
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import InitVar, dataclass, field, fields
from typing import Any, NamedTuple

from .pricing import Prices

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
    # The parts of the usage a provider prices apart (None: not said): prompt tokens read
    # from its cache, prompt tokens written to it, and reasoning tokens (in the completion)
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(slots=True)
class Wasted:
    """An attempt the teacher answered, and the provider billed, that was not kept: a schema
    misfit, an answer max_tokens cut. Stored in `wasted_attempts` so the bill counts it.
    `key` names it uniquely (the run and attempt online; the batch for a Batch API line)."""

    request_id: str
    key: str
    error_type: str
    answer: Answer


@dataclass(slots=True)
class Failure:
    """A request that ended without an answer, with the last attempt's fault."""

    request_id: str
    messages: str
    error_type: str
    status_code: int | None
    message: str
    attempts: int


# Seconds of history behind the windowed rates and the ETA: long enough to smooth out the
# burst of a batch of answers, short enough that a stall shows within it.
RATE_WINDOW = 30.0


class RateWindow:
    """A run's counters sampled about once a second over the last `span` seconds.

    Rates from it follow what the run does now: the mean since the start said "ETA 3s" for
    a run that had been stalled for 55 s. `last_change` is when the settled count last
    moved, so a stall is told apart from a slow run.
    """

    FIELDS = ("settled", "answered", "sent", "prompt_tokens", "completion_tokens")

    def __init__(self, span: float = RATE_WINDOW):
        self.span = span
        self._samples: deque[tuple[float, tuple[int, ...]]] = deque()
        self.last_change: float | None = None

    def add(self, now: float, values: tuple[int, ...]) -> None:
        samples = self._samples
        if not samples or values[0] != samples[-1][1][0]:
            self.last_change = now
        samples.append((now, values))
        # Keep one sample at or before the window's start, so the window spans `span`.
        while len(samples) > 2 and samples[1][0] <= now - self.span:
            samples.popleft()

    def per_second(self, name: str) -> float | None:
        """`name`'s rate over the window; None until the window spans a second."""
        if len(self._samples) < 2:
            return None
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        if t1 - t0 < 1.0:
            return None
        i = self.FIELDS.index(name)
        return (last[i] - first[i]) / (t1 - t0)


@dataclass
class Counts:
    """What a run settled, by the counts that both its live `Stats` and its `RunSummary`
    report (declared once: the summary takes them from the stats with `take`)."""

    answered: int = 0
    failed: int = 0
    # Tokens of every attempt the teacher answered, as billed: the kept answers and the
    # wasted ones (misfits, cut answers), so a cost from them is the provider's bill.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wasted: int = 0  # attempts answered (and billed) but not kept
    no_usage: int = 0  # answers the teacher sent without token counts (priced at nothing)
    cached_tokens: int = 0  # prompt tokens read from the provider's cache (within prompt_tokens)
    cache_write_tokens: int = 0  # prompt tokens written to it (within prompt_tokens)
    errors: Counter = field(default_factory=Counter)  # every failed attempt, by kind
    failures: Counter = field(default_factory=Counter)  # every request filed as failed, by kind

    def count_usage(self, answer: Answer) -> None:
        """Add one billed attempt's tokens."""
        self.prompt_tokens += answer.prompt_tokens or 0
        self.completion_tokens += answer.completion_tokens or 0
        if answer.cached_tokens or answer.cache_write_tokens:
            self.cached_tokens += answer.cached_tokens or 0
            self.cache_write_tokens += answer.cache_write_tokens or 0

    def take(self, other: Counts) -> None:
        """These counts become `other`'s (copied: `other` may go on counting)."""
        for f in fields(Counts):
            value = getattr(other, f.name)
            setattr(self, f.name, Counter(value) if isinstance(value, Counter) else value)


@dataclass
class Stats(Counts):
    """Live counters of one run: the engine writes them, progress and the summary read them.

    `sample()` (the progress task calls it about once a second) feeds `window`, the
    recent history behind the windowed rates and ETA; `pacing` is what paces sending
    now (the --rpm/--tpm limits, a pace learned from 429s, a shared pause), as the
    governor reports it; `prices`, where given, make `cost` (pricing.py).
    """

    total: int = 0
    already_done: int = 0
    sent: int = 0
    attempts: int = 0
    started: float = field(default_factory=time.monotonic)
    limit: int = 0
    in_flight: int = 0
    planning: bool = False  # True while the input is still being planned (total may grow)
    prices: Prices = field(default_factory=Prices)
    price_in: InitVar[float | None] = None  # shorthands for `prices` (per million tokens)
    price_out: InitVar[float | None] = None
    pacing: dict[str, float] = field(default_factory=dict)
    window: RateWindow = field(default_factory=RateWindow, repr=False, compare=False)
    # A vLLM teacher's own queue (its /metrics; --concurrency auto reads it): requests
    # waiting there for a slot, and its fullest KV cache (0..1). None: not read.
    server_waiting: float | None = None
    server_kv: float | None = None

    def __post_init__(self, price_in: float | None, price_out: float | None) -> None:
        if price_in is not None or price_out is not None:
            self.prices = Prices(price_in, price_out, self.prices.discount)

    @property
    def done(self) -> int:
        return self.already_done + self.answered + self.failed

    @property
    def cost(self) -> float | None:
        """Estimated cost so far; None when no price was given."""
        return self.prices.cost(self.prompt_tokens, self.completion_tokens, self.cached_tokens,
                                self.cache_write_tokens)

    def sample(self, now: float | None = None) -> None:
        """Add the counters as they are now to the window (its first sample: the start)."""
        now = time.monotonic() if now is None else now
        if self.window.last_change is None:
            self.window.add(self.started, (0, 0, 0, 0, 0))
        self.window.add(now, (self.answered + self.failed, self.answered, self.sent,
                              self.prompt_tokens, self.completion_tokens))


@dataclass
class RunSummary(Counts):
    """What a run did. `pending` > 0 means running the same command again resumes."""

    run_id: int = 0
    status: str = "failed"  # done | interrupted | aborted | failed | invalid_input | incomplete
    #                         | cancelled (a batch was cancelled) | planned (plan_only)
    total: int = 0
    already_done: int = 0
    pending: int = 0
    invalid: int = 0
    elapsed: float = 0.0
    plan_reused: bool = False
    model: str = ""
    message: str | None = None
    cost: float | None = None  # estimated, where prices were given (batch: discounted)
    batch: bool = False  # sent through a Batch API (generate --batch)
    batches_open: int = 0  # batch mode: batches still running at the API when the run ended
    batches_submitted: int = 0  # batch mode: batches this run created
    duplicates: int = 0  # input lines that repeat an earlier line's request (duplicate_inputs)

    @property
    def failed_by_kind(self) -> Counter:
        """This run's failures by kind (`failures`, under the name the CLI reads)."""
        return self.failures

    @property
    def all_failed_alike(self) -> bool:
        """Every request this run settled failed, and for the same reason: a setting (a
        model name, a parameter the server refuses), not the prompts."""
        return self.failed > 0 and self.answered == 0 and len(self.failures) == 1

    @property
    def requests_per_s(self) -> float:
        return (self.answered + self.failed) / self.elapsed if self.elapsed > 0 else 0.0
