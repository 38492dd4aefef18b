"""`Run`: one run of one store, from its row opened to its row closed.

What a run's steps used to hand each other, ten arguments at a time (the store
connection, the config, the run's id, its planner, its summary and live counters, how it
is heard and how it is stopped), lives here once; a step takes the Run:

    Run(con, cfg, reporting, stop)     the run's row opened ('running')
      .execute(drive, ...)             validate the input, then plan it and `drive` it:
          online.drive                 the engine (run/online.py)
          batch.drive                  or a Batch API (run/batch.py)
      ._finish()                       the summary, what is pending, the row closed

Whatever way the run ends (done, interrupted, aborted, crashed) the row gets its counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from ..engine.progress import snapshot
from ..errors import ConfigError, InputError, StoreWriteError
from ..plan import Planner
from ..store import runs
from ..store.live import LiveServer
from ..store.plans import plan_counts
from ..types import RunSummary, Stats

if TYPE_CHECKING:
    from ..config import GenerateConfig
    from ..inputs.templates import Template
    from .reporting import Reporting
    from .signals import StopFlag

log = logging.getLogger("synthgen")


@dataclass
class Ended:
    """How sending ended: why it stopped (None: every request is settled), and what to
    raise once the run's row is closed (a crash, or the reason it stopped early)."""

    reason: str | None = None
    error: BaseException | None = None


Drive = Callable[["Run"], Awaitable[Ended]]


class Run:
    def __init__(self, con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, reporting: Reporting,
                 stop: StopFlag):
        self.con = con
        self.cfg = cfg
        self.reporting = reporting
        self.stop = stop
        self.started = time.monotonic()
        self.run_id = runs.open_run(con, cfg.public_dict(), runs.software_versions())
        self.summary = RunSummary(run_id=self.run_id, model=cfg.model or "", batch=cfg.batch)
        self.stats = Stats(started=self.started, prices=cfg.prices)
        self.planner: Planner | None = None

    def close(self, status: str, message: str | None = None) -> None:
        """End the run's row now (nothing was sent): invalid input, a signal while reading."""
        self.summary.status, self.summary.message = status, message
        self.summary.elapsed = time.monotonic() - self.started
        runs.close_run(self.con, self.summary)

    async def execute(self, drive: Drive, template: Template | None,
                      validated: tuple[str, int] | None) -> RunSummary:
        """Validate the whole input, then plan it on a thread while `drive` sends what is
        pending (online.drive: the engine; batch.drive: a Batch API)."""
        try:
            self.planner = Planner(self.con, self.cfg.planning, self.run_id, template, checked=validated)
        except ConfigError as exc:  # the input file is missing, the input query fails
            self.close("invalid_input", str(exc))
            raise
        try:
            return await self._plan_and_send(drive)
        finally:
            self.planner.close()

    async def _plan_and_send(self, drive: Drive) -> RunSummary:
        planner = self.planner
        assert planner is not None
        try:
            finished = planner.validate(should_stop=self.stop.is_set)
        except InputError as exc:
            self.close("invalid_input", str(exc))
            raise
        if not finished:  # a signal while the input was read: nothing was planned or sent
            self.summary.pending = planner.expected
            self.close("interrupted")
            return self.summary
        planner.claim()
        to_send = self._count_done()
        # From here the store is read by others through this process, and reads nothing else.
        live = LiveServer(self.con, self.cfg.db, {"run_id": self.run_id},
                          progress=lambda: snapshot(self.stats).as_dict()).start()
        self.con.execute("SET enable_external_access = false")
        ended = Ended()
        committed: int | None = None  # answers stored, where that differs from answers received
        try:
            if to_send:
                try:
                    ended = await drive(self)
                except StoreWriteError as exc:
                    committed, self.summary.message = exc.committed, str(exc)
                    raise
            reason = ended.reason
            self.summary.status = "done" if reason is None else (
                reason if reason in ("interrupted", "cancelled") else "aborted")
            self.summary.message = reason if self.summary.status == "aborted" else None
        finally:
            planner.stop()
            planner.join(raise_error=False)  # its error, if any, already stopped the engine
            live.close()
            self._finish(committed)
        if ended.error is not None:  # raised once the run's row says how it ended
            raise ended.error
        return self.summary

    def _count_done(self) -> bool:
        """What of the plan is done already (the live counters start from it); whether
        anything is left to send."""
        stats, planner = self.stats, self.planner
        assert planner is not None
        if not planner.reused:
            stats.total, stats.planning = planner.expected, True
            return True
        # One query, not partitions: at the start the answer key's index is not loaded, so
        # its hash table fits the run's memory (0.5 s against 2 s at a million requests).
        counts = plan_counts(self.con, planner.key)
        stats.total = counts["total"]
        stats.already_done = counts["answered"] + (0 if self.cfg.retry_failed else counts["failed"])
        # Nothing to send: a finished million-prompt job answers at once instead of
        # reading its whole plan back to find no pending row.
        return stats.total > stats.already_done

    def _finish(self, committed: int | None) -> None:
        """The summary from the live counters, what is pending, and the row closed."""
        s, stats, planner = self.summary, self.stats, self.planner
        assert planner is not None
        plan = planner.plan
        s.take(stats)
        s.total = max(plan.total, stats.total) if not planner.finished else plan.total
        s.invalid, s.plan_reused, s.duplicates = plan.invalid, plan.reused, plan.duplicates
        s.already_done = stats.already_done
        s.cost = stats.cost  # the progress line's figure, by the same function (pricing.py)
        s.elapsed = time.monotonic() - self.started
        if committed is not None:
            s.answered = committed  # the run's record holds what is stored, no more
        try:
            s.pending = self._pending(exact=committed is None)
            if s.status == "done" and s.pending and not self.cfg.retry_failed:
                s.status = "incomplete"
            runs.close_run(self.con, s)
        except duckdb.Error:
            # The database itself failed (a full disk invalidates it): the exception on its
            # way out says what happened; the next run marks this run's row.
            log.debug("the run's row could not be closed", exc_info=True)

    def _pending(self, exact: bool) -> int:
        """What is left of the plan. Counted from the run's own figures where they are
        exact (the whole plan was read, one writer, every answer stored): a million-request
        plan's count takes seconds, which a user waits for at the end of every run."""
        cfg, stats, planner = self.cfg, self.stats, self.planner
        assert planner is not None
        if exact and planner.finished and not cfg.retry_failed and not cfg.batch:
            return planner.total - stats.already_done - stats.answered - stats.failed
        after = plan_counts(self.con, planner.key, max(planner.total, stats.total))
        if planner.finished:
            return after["pending"]
        # Cut short while planning: the rest of the input is planned by the next run.
        return max(after["pending"], planner.expected - after["answered"] - after["failed"])
