"""The engine: `Engine(pending, sender, sink)` sends every pending request once.

    pending (batches of Request, read in a thread) ──> ConcurrencyLimit
        ──> Attempts (retry.py) ──> sender.send (a transport, or the governor around them)
        ──> sink.put_answer / put_failure (the store's writer thread)

It knows no DuckDB and no body format: `pending` is any iterator of request lists (it may
block: it is read off the event loop), `sender` anything with `send(request) -> Answer`,
`sink` anything with `put_answer`, `put_failure` and an `error` attribute.

One worker task per slot in flight, each taking the next pending row itself. Stopping is
cooperative: Ctrl-C (or SIGTERM) stops feeding, gives requests in flight a grace period,
then cancels the rest, which stay pending for the next run.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from ..errors import AuthFault, ConnectionFault, Redirected, RunAborted, TeacherFault
from ..types import Answer, Failure, Request, Stats, Wasted
from .budget import BudgetSpent
from .limiter import ConcurrencyLimit
from .retry import LENGTH_RETRIES, RATE_LIMIT_WAIT, Attempts, GaveUp

if TYPE_CHECKING:
    from ..backends.base import Transport

# Endpoint faults (bad key, teacher gone) say nothing about the prompt: after this many in a
# row with no answer in between the run stops instead of burning through the file.
ENDPOINT_FAULT_LIMIT = 10
GRACE_SECONDS = 10.0
# Read the next batch of pending requests once fewer than this many are left in hand.
FETCH_ROWS = 2048
# Faults that say something about the endpoint, not the prompt: held back, not filed as
# failures, until an answer shows the endpoint works.
ENDPOINT_FAULTS = (AuthFault, ConnectionFault, Redirected)
# SIGHUP is a dropped SSH session: stop as for Ctrl-C, never die with answers unwritten.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Sink(Protocol):
    """Where outcomes go (the store's writer); `error` set means: stop sending."""

    error: BaseException | None

    def put_answer(self, request_id: str, sample_index: int, answer: Answer, latency_ms: float,
                   attempts: int) -> None: ...

    def put_failure(self, failure: Failure) -> None: ...

    def put_wasted(self, wasted: Wasted) -> None: ...


class Engine:
    def __init__(self, pending: Iterator[list[Request]], sender: Transport, sink: Sink, *,
                 limit: ConcurrencyLimit | None = None, stats: Stats | None = None,
                 max_attempts: int = 5, grace: float = GRACE_SECONDS, retry_sleep=None,
                 on_stop: Callable[[], None] | None = None, rate_limit_wait: float = RATE_LIMIT_WAIT,
                 length_retries: int = LENGTH_RETRIES, key: str = ""):
        self.sink = sink
        self._on_stop = on_stop  # tell whoever feeds `pending` to stop too
        self.limit = limit or ConcurrencyLimit(64)
        self.stats = stats or Stats()
        self.stats.limit = self.limit.limit
        self.grace = grace
        self.attempts = Attempts(sender.send, max_attempts, self.stats.errors, sleep=retry_sleep,
                                 rate_limit_wait=rate_limit_wait, length_retries=length_retries,
                                 key=key)
        self.stop_reason: str | None = None  # "interrupted", "budget" or an abort message
        self.budget_spent: str | None = None  # why --budget stopped sending
        self.crash: BaseException | None = None  # a bug: stop at once
        # The sink or the pending rows failed (a full disk): stop sending, let what is in
        # flight land in the sink (it keeps what it cannot store), then raise this.
        self.failure: BaseException | None = None
        self._stopping = asyncio.Event()
        self._held: list[Failure] = []  # endpoint faults not yet known to be the prompt's fault
        self._tasks: set[asyncio.Task] = set()
        self._reader = pending
        self._rows: deque[Request] = deque()  # pending requests read ahead, in input order
        self._exhausted = False
        self._fetch: asyncio.Task | None = None
        self._fetch_error: Exception | None = None

    def request_stop(self, reason: str = "interrupted") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()
        if self._on_stop is not None:
            self._on_stop()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed = {}
        for sig in STOP_SIGNALS:
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self._on_signal)
                installed[sig] = previous
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (or no signals here): the caller handles Ctrl-C
        try:
            await self._feed()
            await self._drain()
        finally:
            if self._fetch is not None:  # a read in its thread: let it end before returning
                await asyncio.wait({self._fetch})
            for sig, previous in installed.items():
                loop.remove_signal_handler(sig)
                # remove_signal_handler resets to SIG_DFL; put back what the caller had
                # (e.g. the teacher launcher's cleanup) so a late SIGTERM still cleans up.
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            if self._waits_for_flight():
                for f in self._held:  # no abort: these were real per-request failures
                    self._file(f)
            self._held.clear()
        if self.failure is not None:
            raise self.failure

    def _waits_for_flight(self) -> bool:
        """Not an abort: requests in flight may still be answered, so they get the grace."""
        return self.stop_reason in (None, "interrupted", "budget") or self.failure is not None

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.request_stop(f"stopped: {type(exc).__name__}")

    def _on_signal(self) -> None:
        if self._stopping.is_set():  # second Ctrl-C: stop waiting for requests in flight
            for task in list(self._tasks):
                task.cancel()
        self.request_stop("interrupted")

    async def _feed(self) -> None:
        """Start a worker per free slot; each worker then keeps its slot and takes the next
        row itself. Spawning a task per request cost two extra trips through the event
        loop between an answer and the next request, which at a 100 ms teacher was ~3%
        of the requests/s."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if not self._rows:
                if self._exhausted:
                    return
                await self._fetch_more()
                continue
            await self.limit.acquire()
            if self._stopping.is_set():
                self.limit.release()
                return
            if self.sink.error is not None:
                self.limit.release()
                self._fail(self.sink.error)
                return
            if not self._rows:
                self.limit.release()
                continue
            task = loop.create_task(self._worker(self._rows.popleft()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _worker(self, request: Request) -> None:
        """Send `request`, then the next pending ones, for as long as this slot is still
        wanted: not stopping, requests at hand, and the limit not lowered meanwhile."""
        try:
            while True:
                await self._one(request)
                if (self._stopping.is_set() or not self._rows or self.sink.error is not None
                        or self.limit.in_flight > self.limit.limit):
                    return
                request = self._rows.popleft()
                self._prefetch()
        finally:
            self.limit.release()

    def _prefetch(self) -> None:
        """Read the next batch of pending rows in a thread before the deque runs dry."""
        if (len(self._rows) < FETCH_ROWS and not self._exhausted and self._fetch is None
                and self._fetch_error is None):
            self._fetch = asyncio.get_running_loop().create_task(self._fetch_batch())

    async def _fetch_batch(self) -> None:
        try:
            batch = await asyncio.to_thread(_next_batch, self._reader)
            if batch is None:
                self._exhausted = True
            else:
                self._rows.extend(batch)
        except Exception as exc:  # raised by the feeder, which owns the run's errors
            self._fetch_error = exc
        finally:
            self._fetch = None

    async def _fetch_more(self) -> None:
        self._prefetch()
        if self._fetch is not None:
            await asyncio.wait({self._fetch})
        if self._fetch_error is not None:
            self._fail(self._fetch_error)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        if self._stopping.is_set() and not self._waits_for_flight():
            timeout: float | None = 0  # aborted: nothing in flight can succeed
        elif self._stopping.is_set():
            timeout = self.grace
        else:
            timeout = None
        if timeout is None:
            # Wait for everything, but honour a stop that comes while waiting.
            # One wait for all of them (no task is added once feeding ends): waiting for the
            # first of n again and again costs O(n^2) callbacks, which at 1,024 in flight
            # cost more than the requests themselves.
            if self._tasks and not self._stopping.is_set():
                stop = asyncio.ensure_future(self._stopping.wait())
                everything = asyncio.ensure_future(asyncio.wait(set(self._tasks)))
                await asyncio.wait({everything, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                everything.cancel()
            if not self._tasks:
                return
            timeout = self.grace if self._waits_for_flight() else 0
        if timeout:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _one(self, request: Request) -> None:
        stats = self.stats
        stats.sent += 1
        stats.in_flight += 1
        t0 = time.perf_counter()
        try:
            answer, attempts, wasted = await self.attempts.run(request)
        except GaveUp as gave_up:
            stats.attempts += gave_up.attempts
            self._bill(gave_up.wasted)
            fault = gave_up.fault
            if isinstance(fault, BudgetSpent):  # not sent: it stays pending, and sending stops
                self.budget_spent = fault.message
                self.request_stop("budget")
                return
            self._failed(Failure(request.request_id, request.messages, fault.kind, fault.status_code,
                                 fault.message, gave_up.attempts), fault)
            return
        except Exception as exc:  # a bug, not a teacher fault: stop, keep the store consistent
            self.crash = exc
            self.request_stop(f"internal error: {type(exc).__name__}: {exc}")
            return
        finally:
            stats.in_flight -= 1
        stats.attempts += attempts
        latency_ms = (time.perf_counter() - t0) * 1000
        if wasted:
            self._bill(wasted)
        self.sink.put_answer(request.request_id, request.sample_index, answer, latency_ms, attempts)
        stats.answered += 1
        stats.count_usage(answer)
        if answer.prompt_tokens is None or answer.completion_tokens is None:
            stats.no_usage += 1
        if self._held:
            for f in self._held:  # the endpoint works: those were the prompts' own failures
                self._file(f)
            self._held.clear()

    def _bill(self, wasted: list[Wasted]) -> None:
        """Attempts the teacher answered that were not kept: stored and counted, as paid."""
        for w in wasted:
            self.sink.put_wasted(w)
            self.stats.count_usage(w.answer)
            self.stats.wasted += 1

    def _failed(self, failure: Failure, fault: TeacherFault) -> None:
        if isinstance(fault, ENDPOINT_FAULTS):
            if self.stop_reason not in (None, "interrupted"):
                return  # aborting because of the endpoint: the request stays pending
            self._held.append(failure)
            if len(self._held) >= ENDPOINT_FAULT_LIMIT:
                self.request_stop(_abort_message(fault, len(self._held)))
            return
        self._file(failure)

    def _file(self, failure: Failure) -> None:
        self.sink.put_failure(failure)
        self.stats.failed += 1
        self.stats.failures[failure.error_type] += 1


def _next_batch(reader):
    """StopIteration cannot cross a thread future, so the end is signalled with None."""
    try:
        return next(reader)
    except StopIteration:
        return None


def _abort_message(fault: TeacherFault, count: int) -> str:
    if isinstance(fault, Redirected):
        return f"{fault.message} ({count} requests in a row; nothing was recorded as failed)"
    if isinstance(fault, AuthFault):
        return (f"the teacher refused {count} requests in a row with HTTP {fault.status_code} "
                f"({fault.message}); check the API key (nothing was recorded as failed)")
    return (f"the teacher was unreachable for {count} requests in a row, each after every "
            f"retry ({fault.message}); nothing was recorded as failed")


def raise_if_aborted(engine: Engine) -> None:
    if engine.crash is not None:
        raise engine.crash
    if engine.failure is not None:
        raise engine.failure
    if engine.stop_reason not in (None, "interrupted"):
        raise RunAborted(engine.stop_reason)
