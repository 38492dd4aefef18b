"""`--budget USD`: a spend that is never crossed, even by what is in flight.

A transport wrapped around the run's sender. Before each attempt it reserves that
attempt's worst case (its prompt at most one token per two characters, and the whole
`max_tokens`, at the run's prices); the attempt is sent only if what was spent (this run's
and every earlier run's in the store: a resume, the stages of a recipe) plus every
reservation in flight plus this one stays within the budget. When the attempt ends its
reservation becomes its real cost: an answer's usage, or a misfit's (it was paid for), or
nothing for a fault the teacher did not answer. The first attempt that does not fit
raises `BudgetSpent`: that request stays pending, the engine stops feeding, and requests
in flight land (they fit). Rerun with a larger --budget and the run continues.

`--spend-per-window USD/MIN` is the same gate over a sliding window: at most USD spent
(or reserved) in any MIN minutes; an attempt that would cross it waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from ..errors import TeacherFault
from ..pricing import Prices
from ..types import Answer, Request

if TYPE_CHECKING:
    from ..backends.base import Transport

CHARS_PER_TOKEN_AT_LEAST = 2  # no tokenizer makes fewer tokens of prose: a safe worst case


def parse_window(text: str) -> tuple[float, float]:
    """--spend-per-window "USD/MIN" as (dollars, seconds); ValueError naming the form."""
    dollars, _, minutes = text.partition("/")
    try:
        window = (float(dollars.strip().lstrip("$")), float(minutes or "nan") * 60)
    except ValueError:
        window = (float("nan"), float("nan"))
    if not (window[0] > 0 and window[1] > 0):
        raise ValueError(f"{{spend_per_window}} is USD/MIN, e.g. 5/10 for at most $5 in any 10 minutes, "
                         f"not {text!r}")
    return window


class BudgetSpent(TeacherFault):
    """The budget cannot cover this attempt's worst case: not sent, the request stays pending."""

    kind = "budget"


class BudgetGate:
    def __init__(self, inner: Transport, prices: Prices, max_tokens: int, budget: float | None,
                 spent_before: float = 0.0, window: tuple[float, float] | None = None,
                 clock=time.monotonic):
        self.inner = inner
        self.prices = prices
        self.max_tokens = max_tokens
        self.budget = budget
        self.spent_before = spent_before
        self.spent = 0.0  # by this run: every attempt answered, at its real usage
        self.reserved = 0.0  # worst cases of the attempts in flight
        self.window = window  # (dollars, seconds)
        self._spends: deque[list[float]] = deque()  # [when, dollars]: reserved, then the real cost
        self._clock = clock

    def worst_case(self, request: Request) -> float:
        prompt = len(request.messages) // CHARS_PER_TOKEN_AT_LEAST + 1
        return self.prices.cost(prompt, self.max_tokens) or 0.0

    async def send(self, request: Request) -> Answer:
        worst = self.worst_case(request)
        if self.budget is not None and self.spent_before + self.spent + self.reserved + worst > self.budget:
            raise BudgetSpent(self.refusal(worst))
        entry = await self._within_window(worst) if self.window is not None else None
        self.reserved += worst
        paid = 0.0
        try:
            answer = await self.inner.send(request)
            paid = self._cost(answer)
            return answer
        except TeacherFault as fault:
            if fault.paid is not None:
                paid = self._cost(fault.paid)
            raise
        finally:
            self.reserved -= worst
            self.spent += paid
            if entry is not None:
                entry[1] = paid  # the window's reservation becomes the real cost

    def refusal(self, worst: float) -> str:
        spent = self.spent_before + self.spent
        return (f"the budget of ${self.budget:,.2f} is reached: ${spent:,.4f} spent "
                f"(${self.spent:,.4f} by this run), ${self.reserved:,.4f} held for requests in flight, "
                f"and the next request could cost up to ${worst:,.4f} ({self.max_tokens:,} tokens "
                f"of answer at {self.prices.describe()})")

    def _cost(self, answer: Answer) -> float:
        return self.prices.cost(answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens,
                                answer.cache_write_tokens) or 0.0

    async def _within_window(self, worst: float) -> list[float]:
        """Wait until `worst` fits in the window's dollars; reserve it there at once."""
        assert self.window is not None
        dollars, seconds = self.window
        if worst > dollars:
            raise BudgetSpent(f"one request could cost up to ${worst:,.4f}, more than --spend-per-window "
                              f"allows in any window (${dollars:,.2f})")
        while True:
            now = self._clock()
            while self._spends and self._spends[0][0] <= now - seconds:
                self._spends.popleft()
            if sum(d for _, d in self._spends) + worst <= dollars:
                entry = [now, worst]
                self._spends.append(entry)
                return entry
            await asyncio.sleep(max(0.05, self._spends[0][0] + seconds - now))
