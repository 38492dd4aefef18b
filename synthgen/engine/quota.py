"""Client-side quotas (`--rpm`, `--tpm`): token buckets that pace every attempt.

Both quotas are a `TokenBucket` holding at most one second's worth, so the pace is smooth
(no minute's worth of burst). Tokens need what aiolimiter's leaky bucket lacks (it was the
first choice): a request's cost is only *estimated* before it is sent (prompt tokens plus
the completion budget) and known from its usage after the answer, so the bucket must take
back a refund or a debt; one request may cost more than a second's worth (aiolimiter
refuses those); and the bucket must not start full (see `TokenBucket`). Requests per minute
use the same bucket rather than a second implementation of the same idea.

What the server says of its own quotas (429s, `x-ratelimit-*` headers) is read by the
backend and acted on by the governor's shared pause; this module is the client's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from ..types import Request

# Without max_tokens the completion's size is unknown until answers come back: start from a
# cautious guess (a first burst that underestimates would trip a server's quota at once),
# then follow the mean of the completions seen.
DEFAULT_COMPLETION_GUESS = 256


class TokenBucket:
    """`rate` units per second; at most `burst` seconds of credit; debt allowed.

    A waiter queue (FIFO) with one timer, set for the moment the bucket holds what the
    first waiter needs: no polling, and a refund wakes waiters at once. A request larger
    than the bucket goes when the bucket is full and leaves it in debt.

    The bucket starts with credit for one request only. A bucket that starts full lets a
    second's worth out at once; over fresh connections that burst reaches the server
    bunched with the paced requests behind it and trips a quota enforced the same way.
    """

    def __init__(self, rate: float, burst: float = 1.0):
        self.rate = rate
        self.capacity = rate * burst
        self.level: float | None = None  # credit now; negative while in debt
        self._stamp = 0.0
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def _refill(self, now: float) -> float:
        if self.level is None:
            self.level = 0.0
        else:
            self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now
        return self.level

    async def acquire(self, amount: float) -> None:
        if self.level is None:  # the first request goes at once
            self._refill(time.monotonic())
            self.level = -amount
            return
        if not self._waiters and self._refill(time.monotonic()) >= min(amount, self.capacity):
            self.level -= amount
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((amount, fut))
        if len(self._waiters) == 1:
            self._wake()
        await fut

    def adjust(self, amount: float) -> None:
        """Settle a request's estimate: positive is a debt, negative a refund."""
        if self.level is not None:
            level = self._refill(time.monotonic())
            self.level = min(self.capacity, level - amount)  # never more than a second's worth
            if self._waiters and amount < 0:
                self._wake()

    def hold(self, seconds: float) -> None:
        """Earn no credit for `seconds` (a shared pause): after it the pace resumes evenly
        instead of with the second's worth the bucket would have filled up meanwhile."""
        if self.level is not None:
            level = self._refill(time.monotonic())
            self.level = min(level, 0.0) - seconds * self.rate

    def _wake(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters = self._waiters
        level = self._refill(time.monotonic())
        while waiters:
            amount, fut = waiters[0]
            if fut.done():  # cancelled while waiting
                waiters.popleft()
                continue
            need = min(amount, self.capacity) - level
            if need > 0:
                self._timer = asyncio.get_running_loop().call_later(need / self.rate, self._wake)
                return
            waiters.popleft()
            level = self.level = level - amount
            fut.set_result(None)


class Throttle:
    """The client-side quotas one attempt passes before it is sent.

    `acquire(request)` returns the token estimate reserved (0 without --tpm); `settle`
    corrects it from the answer's usage once it is known, `refund` gives it back when
    nothing was used.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *,
                 model: str | None = None, max_tokens: int | None = None):
        self.requests = TokenBucket(rpm / 60.0, burst=max(1.0, 60.0 / rpm)) if rpm else None
        self.tokens = TokenBucket(tpm / 60.0) if tpm else None
        self.max_tokens = max_tokens
        self.completion_guess = float(max_tokens or DEFAULT_COMPLETION_GUESS)
        self._encode: Callable[[str], list[int]] | None = None
        if self.tokens is not None and model:
            load_tokenizer_in_background(model, self)

    async def acquire(self, request: Request) -> float:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is None:
            return 0.0
        cost = self.prompt_tokens(request) + self.completion_guess
        await self.tokens.acquire(cost)
        return cost

    def prompt_tokens(self, request: Request) -> float:
        """tiktoken's count of the messages where it knows the model, else bytes / 4 of
        what the request carries (messages and sampling parameters)."""
        encode = self._encode
        if encode is None:
            return (len(request.messages) + len(request.params)) / 4
        parsed = orjson.loads(request.messages) or ()
        return sum(4 + len(encode(_content_text(m.get("content")))) for m in parsed) + 3

    def settle(self, cost: float, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        if self.tokens is None or prompt_tokens is None or completion_tokens is None:
            return
        self.tokens.adjust(prompt_tokens + completion_tokens - cost)
        if self.max_tokens is None:  # follow the completions actually seen
            self.completion_guess += (completion_tokens - self.completion_guess) * 0.05

    def hold(self, seconds: float) -> None:
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.hold(seconds)

    def refund(self, cost: float) -> None:
        if self.tokens is not None and cost:
            self.tokens.adjust(-cost)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: count the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def load_tokenizer_in_background(model: str, throttle: Throttle) -> None:
    """Give `throttle` tiktoken's encoder for `model` once it has loaded.

    tiktoken downloads its tables on first use with no timeout, so it is loaded on a daemon
    thread and the bytes/4 estimate serves until (or unless) it is ready. Models tiktoken
    does not know, or a missing tiktoken, keep the estimate.
    """
    try:
        import tiktoken
    except ImportError:
        return
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return

    def load() -> None:
        # Offline, or a broken cache: the bytes/4 estimate stays.
        with contextlib.suppress(Exception):
            throttle._encode = tiktoken.get_encoding(name).encode_ordinary

    threading.Thread(target=load, name="synthgen-tiktoken", daemon=True).start()


class LearnedRate:
    """A requests-per-second pace learned from the server's 429s, for runs without --rpm.

    A gateway (LiteLLM, a provider) that enforces a quota says only "429, come back in
    60 s". Waiting that out and then sending everything again makes a burst that is
    refused again. So once 429s are a real share of the recent attempts (at least
    LIMITED_SHARE of them, and MIN_LIMITED in WINDOW seconds: a stray 429 is not a quota),
    the client paces itself at 90% of the rate answers got through at over that window,
    cuts again at most once per window while 429s go on, and grows the pace by GROWTH per
    window without a 429: it settles just under the quota (additive increase,
    multiplicative decrease, as TCP does).
    """

    WINDOW = 10.0
    GROWTH = 1.1
    LIMITED_SHARE = 0.25
    MIN_LIMITED = 3
    MINIMUM = 0.05  # one request every 20 s

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.bucket: TokenBucket | None = None  # None until 429s bind: no pacing
        self._seen: deque[tuple[float, bool]] = deque()  # (when, was it a 429)
        self._last_change = clock()
        self._started = clock()
        self.cuts = 0

    @property
    def rate(self) -> float | None:
        return self.bucket.rate if self.bucket is not None else None

    async def acquire(self) -> None:
        if self.bucket is not None:
            await self.bucket.acquire(1)

    def answered(self) -> None:
        now = self._note(False)
        if self.bucket is not None and now - self._last_change >= self.WINDOW:
            self._last_change = now
            self._set(self.bucket.rate * self.GROWTH)

    def limited(self) -> None:
        """A 429: cut the pace when 429s are a share of the window, once per window."""
        now = self._note(True)
        limited = sum(1 for _, was in self._seen if was)
        if limited < self.MIN_LIMITED or limited < self.LIMITED_SHARE * len(self._seen):
            return
        if self.bucket is not None and now - self._last_change < self.WINDOW:
            return
        span = min(self.WINDOW, max(now - self._started, 1.0))
        answers = (len(self._seen) - limited) / span
        current = self.bucket.rate if self.bucket is not None else None
        rate = 0.9 * answers if answers > 0 else (0.5 * current if current else 1.0)
        if current is not None:
            rate = min(rate, current)
        self._last_change = now
        self.cuts += 1
        self._set(rate)

    def _note(self, limited: bool) -> float:
        now = self.clock()
        self._seen.append((now, limited))
        while self._seen and self._seen[0][0] < now - self.WINDOW:
            self._seen.popleft()
        return now

    def _set(self, rate: float) -> None:
        rate = max(self.MINIMUM, rate)
        if self.bucket is None:
            self.bucket = TokenBucket(rate, burst=max(1.0, 1.0 / rate))
        else:
            self.bucket.rate = rate
            self.bucket.capacity = rate * max(1.0, 1.0 / rate)
