"""`synthgen generate --dry-run [--pilot N]`: what a run would send and cost, before it sends.

    plan       the input is validated and planned into the store as any run plans it
               (`plan_only`: the run is recorded as "planned", and the real run reuses the
               plan), so "pending" is exact: answers already stored are not counted again
    count      the prompt tokens of every pending request (tokens.py says how)
    pilot      only with `pilot=N`: N pending requests, spread over the input (ordered by
               a hash of their ids, not the input's first N), are sent as a normal run
               through a plan of their own (`given_plan`, as a shard is), stored like any
               answer; their mean completion tokens stand for every other answer's, and
               the prompt tokens the teacher billed for them scale the count
    figures    output tokens (the pilot's mean, or --max-tokens as the upper bound) and
               the cost online and through a Batch API, by the one cost function
               (pricing.py) at the run's prices: given, or the dated price table's

Nothing is sent unless `pilot` is given. The library prints nothing: the CLI says it.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import duckdb

from . import store
from .config import GenerateConfig
from .errors import ConfigError
from .pricing import Prices
from .store.plans import pending_batches
from .store.tx import transaction
from .tokens import counter_for

if TYPE_CHECKING:
    from .inputs.templates import Template
    from .types import RunSummary

COUNT_BATCH = 2048  # messages handed to a tokenizer at once


@dataclass
class Pilot:
    """What the pilot sent and what the teacher billed for it."""

    run_id: int
    sent: int  # requests in the pilot's plan
    failed: int  # of them failed (a fault, a schema misfit: see `failures`)
    answered: int  # of them answered with usage (what the means are over)
    prompt_tokens: int  # the teacher's count, over those answers
    completion_tokens: int
    counted_prompt_tokens: int  # our counter's figure for the same prompts
    cost: float | None  # what the pilot's run cost (pricing.py), online
    # The whole bill of the pilot: every attempt answered, the retried misfits and cut
    # answers too (store/wasted.py), so the estimate prices retries as the run will pay them
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0

    @property
    def settled(self) -> int:
        return self.answered + self.failed

    @property
    def mean_completion(self) -> float | None:
        """Completion tokens billed per request settled (its retries included)."""
        if not self.settled or not self.answered:
            return None
        return max(self.billed_completion_tokens, self.completion_tokens) / self.settled

    @property
    def prompt_scale(self) -> float:
        """Prompt tokens billed per request, per counted one (1 without a measure): the
        tokenizer's difference from the teacher's, times the attempts a request takes."""
        if not self.answered or not self.counted_prompt_tokens:
            return 1.0
        per_request = max(self.billed_prompt_tokens, self.prompt_tokens) / self.settled
        return per_request / (self.counted_prompt_tokens / self.answered)


@dataclass
class Estimate:
    """A run before it is sent: its pending requests, their tokens and their cost."""

    run_id: int  # the "planned" run the dry run recorded
    model: str
    local: bool  # the bundled local teacher would answer (no bill)
    total: int  # requests in the plan
    done: int  # of them answered or failed already (not sent again)
    pending: int  # still to send (after the pilot, when there was one)
    prompt_tokens: int  # counted over the pending requests (scaled by the pilot's measure)
    counter: str  # how they were counted
    exact_counter: bool
    max_tokens: int | None  # --max-tokens: the longest answer (None: not sent, no bound)
    prices: Prices  # online
    batch_prices: Prices  # the same at the batch discount
    pilot: Pilot | None = None
    retry_failed: bool = False  # failed requests count as pending (--retry-failed)

    @property
    def output_expected(self) -> float | None:
        """Completion tokens of the pending requests: the pilot's mean each, else None."""
        mean = self.pilot.mean_completion if self.pilot else None
        return None if mean is None else mean * self.pending

    @property
    def output_most(self) -> int | None:
        """Completion tokens if every pending answer ran to --max-tokens."""
        return None if self.max_tokens is None else self.max_tokens * self.pending

    def cost(self, batch: bool = False) -> tuple[float | None, float | None, float | None]:
        """(prompts alone, expected, at most) for the pending requests, online or batch;
        None where unknown (no price, no pilot, no --max-tokens)."""
        prices = self.batch_prices if batch else self.prices
        expected = self.output_expected
        return (prices.cost(self.prompt_tokens, 0),
                None if expected is None else prices.cost(self.prompt_tokens, round(expected)),
                None if self.output_most is None else prices.cost(self.prompt_tokens, self.output_most))


def estimate(cfg: GenerateConfig, pilot: int = 0, prompt_template: Template | None = None,
             **run_options: Any) -> Estimate:
    """Plan `cfg`'s input into its store and estimate what sending it costs; with `pilot`,
    send that many pending requests first and estimate from their answers. `prompt_template`
    is a compiled template (a recipe stage's) instead of `cfg.template`; `run_options` go to
    the pilot's `generate()` (progress, on_progress)."""
    from .run import plan_only
    from .run.teacher import local_model

    if pilot < 0:
        raise ConfigError("--pilot must be 0 or more requests")
    local = not cfg.base_urls
    if local:  # the bundled teacher's name, as a run would plan it (nothing is started)
        cfg = cfg.model_copy(update={"model": local_model()})
    planned = plan_only(cfg, prompt_template)
    key = _plan_key(cfg, planned.run_id)
    counter = counter_for(cfg.model, local)
    # A pilot only where something is pending (else it would record an empty run)
    measured = _run_pilot(cfg, key, pilot, counter, run_options) if pilot and planned.pending else None
    con = store.connect(cfg.db, read_only=True)
    try:
        counted, pending = _count_pending(con, key, cfg.retry_failed, counter)
        done = planned.total - pending
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()
    scale = measured.prompt_scale if measured else 1.0
    online = replace(cfg.prices, discount=0.0)
    batch = cfg.model_copy(update={"batch": True}).prices
    return Estimate(planned.run_id, cfg.model or "", local, planned.total, done, pending,
                    round(counted * scale), counter.name, counter.exact, cfg.max_tokens,
                    online, batch, measured, cfg.retry_failed)


def _plan_key(cfg: GenerateConfig, run_id: int) -> str:
    con = store.connect(cfg.db, read_only=True)
    try:
        row = con.execute("SELECT plan_key FROM runs WHERE run_id = ?", [run_id]).fetchone()
    finally:
        con.close()
    if row is None or row[0] is None:
        raise ConfigError(f"{cfg.db}: the planned run {run_id} has no plan")
    return row[0]


def _count_pending(con: Any, key: str, retry_failed: bool, counter: Any) -> tuple[int, int]:
    """(prompt tokens, requests) of the plan's pending requests."""
    tokens = requests = 0
    for batch in pending_batches(con, key, retry_failed, rows=COUNT_BATCH):
        tokens += sum(counter.count_many([r.messages for r in batch]))
        requests += len(batch)
    return tokens, requests


PILOT_PENDING_SQL = """
CREATE OR REPLACE TEMP TABLE _pilot AS
SELECT p.request_id, p.line FROM plan_requests p
WHERE p.plan_key = $key
  AND NOT EXISTS (SELECT 1 FROM responses s WHERE s.request_id = p.request_id)
  AND ($retry_failed OR NOT EXISTS (SELECT 1 FROM failures f WHERE f.request_id = p.request_id))
ORDER BY hash(p.request_id) LIMIT $n
"""

PILOT_USAGE_SQL = """
SELECT r.messages, s.prompt_tokens, s.completion_tokens
FROM plan_requests p JOIN responses s USING (request_id) JOIN requests r USING (request_id)
WHERE p.plan_key = $key AND s.prompt_tokens IS NOT NULL AND s.completion_tokens IS NOT NULL
"""


def pilot_plan_key(key: str, n: int) -> str:
    return hashlib.blake2b(f"{key}:pilot:{n}".encode(), digest_size=16).hexdigest()


def _write_pilot_plan(cfg: GenerateConfig, key: str, n: int) -> tuple[str, int]:
    """A plan of n of `key`'s pending requests, in the same store (their rows are there)."""
    pilot_key = pilot_plan_key(key, n)
    con = store.connect(cfg.db)
    try:
        con.execute(PILOT_PENDING_SQL, {"key": key, "retry_failed": cfg.retry_failed, "n": n})
        with transaction(con):
            con.execute("DELETE FROM plan_requests WHERE plan_key = ?", [pilot_key])
            [(size,)] = con.execute("INSERT INTO plan_requests SELECT ?, request_id, line FROM _pilot "
                                    "ORDER BY line", [pilot_key]).fetchall()
            con.execute("DELETE FROM plans WHERE plan_key = ?", [pilot_key])
            con.execute("INSERT INTO plans VALUES (?, ?, ?, ?, 0, now())",
                        [pilot_key, f"pilot: {size:,} pending requests of plan {key}", f"pilot:{key}",
                         size])
        return pilot_key, size
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()


def _run_pilot(cfg: GenerateConfig, key: str, n: int, counter: Any,
               run_options: dict[str, Any]) -> Pilot:
    """Send the pilot's plan as a normal run (online, whatever --batch says: a batch could
    take a day) and measure what the teacher billed for it."""
    from .run import generate

    pilot_key, size = _write_pilot_plan(cfg, key, n)
    summary: RunSummary = generate(cfg.model_copy(update={"given_plan": pilot_key, "batch": False}),
                                   **run_options)
    con = store.connect(cfg.db, read_only=True)
    try:
        rows = con.execute(PILOT_USAGE_SQL, {"key": pilot_key}).fetchall()
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()
    counted = sum(counter.count_many([r[0] for r in rows])) if rows else 0
    return Pilot(summary.run_id, size, summary.failed, len(rows), sum(r[1] for r in rows),
                 sum(r[2] for r in rows), counted, summary.cost, summary.prompt_tokens,
                 summary.completion_tokens)
