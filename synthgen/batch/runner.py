"""`generate --batch`: the plan's pending requests through a Batch API, at its discount.

    re-attach   batches recorded by an earlier run of this store: polled, not sent again
    pass        pending requests (Planner.pending) -> files of <= 50,000 lines / 200 MB
                -> recorded -> POST /files -> recorded -> POST /batches -> recorded
    poll        GET /batches/{id} with backoff (doubling up to --batch-poll-max)
    ingest      a finished batch's output and error files -> the store, by fault class;
                what is left (retryable errors, requests an expired batch never ran) goes
                into the next pass

Every step that costs money is recorded in the store first (batch/records.py), so a run
killed anywhere is continued by the same command without a second batch for the same
requests: a batch created but never recorded is found again by its key (metadata) or its
input file. A batch cancelled (`synthgen batch cancel`, or the API's dashboard) stops new
submissions; what it did answer is stored. The control calls (upload, create, poll,
download) retry retryable faults with backoff; a refused key stops the run, resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from ..backends.openai_batch import BatchInfo
from ..errors import (
    AuthFault,
    EndpointRefused,
    InvalidResponse,
    NotRun,
    Redirected,
    RejectedFault,
    RetryableFault,
    TeacherFault,
    TooLarge,
)
from ..types import Answer, Request, Stats

if TYPE_CHECKING:
    from ..backends.base import BatchAPI
from . import records
from .calls import CONTROL_ATTEMPTS, Abort, Calls, Stopped
from .files import BatchFile, Splitter
from .ingest import CHUNK, Context, Tally, ingest_file, store_outcomes
from .settings import Settings

log = logging.getLogger("synthgen")



class BatchRunner:
    """One `generate --batch` run against one Batch API endpoint."""

    def __init__(self, con: duckdb.DuckDBPyConnection, client: BatchAPI,
                 pending: Callable[[], Iterator[list[Request]]], body: Callable[[Request], bytes],
                 run_id: int, plan_key: str | None, settings: Settings, stats: Stats,
                 should_stop: Callable[[], bool] = lambda: False,
                 notify: Callable[[str], None] = log.info,
                 on_progress: Callable[[], None] = lambda: None):
        self.cur = con.cursor()
        self.client = client
        self.endpoint = client.endpoint
        self.pending = pending
        self.body = body
        self.run_id = run_id
        self.plan_key = plan_key
        self.settings = settings
        self.max_bytes = settings.max_bytes
        self.stats = stats
        self.should_stop = should_stop
        self.notify = notify
        self.on_progress = on_progress
        self.open: list[records.BatchRow] = []
        self.cancelled: str | None = None  # the batch whose cancellation stops submissions
        self.submitted = 0  # batches this run created
        self.need_pass = True
        self.idle_batches = 0  # batches in a row that ran nothing
        self._wait = settings.poll_interval
        self.calls = Calls(settings.poll_interval, settings.poll_max, should_stop)
        self._workdir = Path(tempfile.mkdtemp(prefix="synthgen-batch-"))

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> str | None:
        """None when every request is settled; "interrupted", "cancelled" or the reason
        the run stopped early otherwise."""
        try:
            await self._reattach()
            while True:
                self.calls.check_stop()
                if self.need_pass and self.cancelled is None:
                    self.need_pass = False
                    await self._submit_pass()
                if not self.open:
                    if self.need_pass and self.cancelled is None:
                        continue
                    break
                if await self._poll_all():
                    self._wait = self.settings.poll_interval
                    if self.idle_batches >= self.settings.max_idle_batches:
                        raise Abort(f"{self.idle_batches} batches in a row expired without running a "
                                     f"request: {self.endpoint} is not running this run's batches now; "
                                     "their requests are pending, and the same command submits them again")
                else:
                    await self.calls.sleep(self._wait)
                    self._wait = min(2 * self._wait, self.settings.poll_max)
            return "cancelled" if self.cancelled is not None else None
        except Stopped:
            return "interrupted"
        except Abort as exc:
            return str(exc)
        finally:
            self.stats.in_flight = sum(r.requests for r in self.open)
            shutil.rmtree(self._workdir, ignore_errors=True)
            self.cur.close()

    def _in_flight(self, delta: int) -> None:
        self.stats.in_flight += delta
        self.stats.limit = self.stats.in_flight

    # -- re-attach ------------------------------------------------------------------------

    async def _reattach(self) -> None:
        rows = await asyncio.to_thread(records.open_batches, self.cur)
        elsewhere = [r for r in rows if r.endpoint != self.endpoint]
        if elsewhere:
            where = ", ".join(sorted({r.endpoint for r in elsewhere}))
            log.warning(f"{len(elsewhere)} batches ({sum(r.requests for r in elsewhere):,} requests) "
                        f"are in flight at {where}: their requests are not sent again; run with "
                        "that --base-url to collect them, or `synthgen batch cancel`")
        for row in rows:
            if row.endpoint != self.endpoint:
                continue
            if row.state == "preparing" and not self.client.uploads and row.created_at is not None:
                # An API that takes the requests with the create (Message Batches) may have
                # made the batch before the kill: it is looked for, else sent again.
                await self._create(row.batch_key, None, row.requests, resumed=True,
                                   since=row.created_at.timestamp(), adopt_only=True)
            elif row.state == "preparing":
                # Its file never reached the API (the file id is recorded before the batch
                # is created): nothing to find there; its requests go into this run's pass.
                await asyncio.to_thread(records.discard, self.cur, row.batch_key)
            elif row.state == "uploaded":
                assert row.input_file_id is not None
                await self._create(row.batch_key, row.input_file_id, row.requests, resumed=True)
            else:
                self.open.append(row)
                self._in_flight(row.requests)
        if self.open:
            self.notify(f"re-attached to {len(self.open)} batches in flight "
                        f"({sum(r.requests for r in self.open):,} requests); none is submitted again")

    # -- submit ---------------------------------------------------------------------------

    async def _submit_pass(self) -> None:
        splitter = Splitter(self._workdir, self.settings.max_requests, self.max_bytes)
        ready: deque[BatchFile] = deque()
        pending = self.pending()
        try:
            while True:
                self.calls.check_stop()
                splitter.max_bytes = self.max_bytes
                batch_file = await asyncio.to_thread(self._next_file, pending, splitter, ready)
                if batch_file is None:
                    break
                await self._submit_file(batch_file)
        finally:
            splitter.discard()
            close = getattr(pending, "close", None)
            if close is not None:
                await asyncio.to_thread(close)
        if splitter.oversized:
            fault = TooLarge(f"the request alone is larger than a batch file may be "
                             f"({self.max_bytes:,} bytes)", 413)
            await self._store([(rid, fault) for rid in splitter.oversized], None)

    def _next_file(self, pending: Iterator[list[Request]], splitter: Splitter,
                   ready: deque[BatchFile]) -> BatchFile | None:
        """The next full file (on a worker thread: reading the plan blocks)."""
        while not ready:
            batch = next(pending, None)
            if batch is None:
                return splitter.finish()
            held = records.held_back(self.cur, [r.request_id for r in batch], self.run_id)
            for request in batch:
                if request.request_id in held:
                    continue
                line = self.client.request_line(request.request_id, self.body(request))
                done = splitter.add(request.request_id, line)
                if done is not None:
                    ready.append(done)
        return ready.popleft()

    async def _submit_file(self, batch_file: BatchFile) -> None:
        key = records.new_key(self.run_id)
        n = len(batch_file.request_ids)
        await asyncio.to_thread(records.record_new, self.cur, key, self.run_id, self.plan_key,
                                self.endpoint, batch_file.request_ids, batch_file.size)
        if not self.client.uploads:  # the requests go with the create (Message Batches)
            try:
                await self._create(key, None, n, resumed=False, path=batch_file.path)
            finally:
                with contextlib.suppress(OSError):
                    batch_file.path.unlink()
            return
        try:
            file_id = await self.calls.call(lambda: self.client.upload(batch_file.path, f"{key}.jsonl"),
                                       "uploading a batch file (POST /files)")
        except TooLarge:
            await asyncio.to_thread(records.discard, self.cur, key)
            if n == 1:
                fault = TooLarge("the endpoint refuses a batch file with this request alone (413)", 413)
                await self._store([(batch_file.request_ids[0], fault)], None)
                return
            # Strictly smaller each time, so this ends: at the latest a request alone is
            # larger than a file may be, and fails as such (Splitter.oversized).
            self.max_bytes = min(self.max_bytes, batch_file.size // 2)
            self.need_pass = True
            self.notify(f"the endpoint refused a {batch_file.size:,}-byte batch file as too large "
                        f"(413); files of this run are now at most {self.max_bytes:,} bytes")
            return
        except RejectedFault as exc:
            await asyncio.to_thread(records.discard, self.cur, key)
            raise Abort(f"the endpoint refused the batch file upload ({exc.message}): does "
                         f"{self.endpoint} serve the Batch API (POST /files)?") from None
        finally:
            with contextlib.suppress(OSError):
                batch_file.path.unlink()
        await asyncio.to_thread(records.set_uploaded, self.cur, key, file_id)
        await self._create(key, file_id, n, resumed=False)

    async def _create(self, key: str, file_id: str | None, n: int, resumed: bool,
                      path: Path | None = None, since: float | None = None,
                      adopt_only: bool = False) -> None:
        """Create the batch, unless it exists already: after a kill, or after a create
        whose answer was lost (a timeout does not say the batch was not made), the API's
        list is searched for it (our key, our file, or its time and size) first.
        `adopt_only`: there is nothing to create it from any more (its file is gone):
        if it is not found, its requests go into this run's pass."""
        info: BatchInfo | None = None
        since = since if since is not None else time.time()
        for attempt in range(CONTROL_ATTEMPTS):
            if resumed or attempt:
                info = await self.calls.call(lambda: self.client.find(file_id, key, since, n),
                                        "listing batches")
                if info is not None:
                    break
                if adopt_only:
                    await asyncio.to_thread(records.discard, self.cur, key)
                    return
            try:
                info = await self.client.create(file_id, key, path)
                break
            except (AuthFault, Redirected, EndpointRefused) as exc:
                raise Abort(f"creating a batch (POST /batches): {exc.message}") from None
            except RejectedFault as exc:
                await asyncio.to_thread(records.discard, self.cur, key)
                raise Abort(f"the endpoint refused to create a batch ({exc.message})") from None
            except RetryableFault as exc:
                if attempt + 1 >= CONTROL_ATTEMPTS:
                    raise Abort(f"creating a batch (POST /batches) failed {CONTROL_ATTEMPTS} times: "
                                 f"{exc.message}; the same command tries again") from None
                await self.calls.sleep(self.calls.backoff(attempt, exc))
        assert info is not None
        await asyncio.to_thread(records.set_submitted, self.cur, key, info)
        self.submitted += 1
        row = records.BatchRow(key, self.run_id, self.endpoint, "submitted", info.status, info.id,
                               file_id, info.output_file_id, info.error_file_id, n,
                               datetime.now(UTC))
        self.open.append(row)
        self._in_flight(n)
        self.notify(f"batch {info.id}: {n:,} requests {'found again' if resumed else 'submitted'} "
                    f"({info.status})")

    # -- poll and ingest ------------------------------------------------------------------

    async def _poll_all(self) -> bool:
        """One look at every open batch; True when any of them moved."""
        moved = False
        for row in list(self.open):
            self.calls.check_stop()
            assert row.batch_id is not None
            try:
                info = await self.calls.call(lambda r=row: self.client.get(r.batch_id),
                                        f"polling batch {row.batch_id}")
            except RejectedFault as exc:  # the API does not know it (another key, deleted)
                await asyncio.to_thread(records.set_done, self.cur, row.batch_key, "lost", exc.message)
                self.open.remove(row)
                self._in_flight(-row.requests)
                self.need_pass = True
                log.warning(f"batch {row.batch_id} is unknown to {self.endpoint} ({exc.message}); "
                            "its requests go into a new batch")
                moved = True
                continue
            if info.status != row.status:
                moved = True
                self.notify(f"batch {info.id}: {info.status} ({info.completed:,} done, {info.failed:,} "
                            f"failed of {info.total or row.requests:,})")
            row.status = info.status
            await asyncio.to_thread(records.set_status, self.cur, row.batch_key, info)
            if info.status in ("cancelling", "cancelled") and self.cancelled is None:
                self.cancelled = info.id
            if info.terminal:
                await self._ingest(row, info)
                self.open.remove(row)
                moved = True
        return moved

    async def _ingest(self, row: records.BatchRow, info: BatchInfo) -> None:
        ids = await asyncio.to_thread(records.request_ids, self.cur, row.batch_key)
        created = row.created_at.timestamp() if row.created_at is not None else None
        ctx = Context(self.run_id, self.settings.max_attempts, row.batch_key, set(ids),
                      latency_ms=1000 * (time.time() - created) if created else 0.0)
        tally = Tally()
        for file_id in (info.output_file_id, info.error_file_id):
            if file_id:
                path = await self._download(file_id)
                try:
                    await asyncio.to_thread(ingest_file, self.cur, path, ctx, self.endpoint, tally,
                                            parse=self.client.outcome)
                finally:
                    path.unlink(missing_ok=True)
        missing = [rid for rid in ids if rid not in tally.seen]
        if missing:
            await self._store(self._unanswered(info, ids, missing), ctx, tally)
        await asyncio.to_thread(records.set_done, self.cur, row.batch_key, "ingested")
        self._in_flight(-row.requests)
        self._count(tally)
        if tally.requeued:
            self.need_pass = True
        self.notify(f"batch {info.id} {info.status}: {tally.answered:,} answers stored, "
                    f"{tally.failed:,} failed, {tally.requeued:,} for a later batch"
                    + (f", {tally.already:,} answered before" if tally.already else ""))
        ran_nothing = tally.not_run and not (tally.answered or tally.failed or tally.retry)
        self.idle_batches = self.idle_batches + 1 if ran_nothing and info.status == "expired" else 0

    def _unanswered(self, info: BatchInfo, ids: list[str], missing: list[str]
                    ) -> list[tuple[str, TeacherFault]]:
        """What a request with no line in either file had, by how its batch ended."""
        if info.status == "failed":
            named = {ids[line - 1]: fault for line, fault in info.line_faults().items()
                     if 0 < line <= len(ids)}
            if named:  # the batch was refused for these lines; the others never ran
                return [(rid, named.get(rid) or NotRun("its batch was refused for other lines"))
                        for rid in missing]
            return [(rid, info.failure()) for rid in missing]
        if info.status == "completed":
            fault: TeacherFault = InvalidResponse("the batch completed without a line for this request")
        else:
            fault = NotRun(f"its batch {info.status} before it ran")
        return [(rid, fault) for rid in missing]

    async def _store(self, outcomes: list[tuple[str, Answer | TeacherFault]], ctx: Context | None,
                     tally: Tally | None = None) -> None:
        own = tally is None
        tally = tally if tally is not None else Tally()
        ctx = ctx or Context(self.run_id, self.settings.max_attempts)
        for i in range(0, len(outcomes), CHUNK):
            await asyncio.to_thread(store_outcomes, self.cur, ctx, outcomes[i:i + CHUNK], tally)
        if own:
            self._count(tally)

    def _count(self, tally: Tally) -> None:
        s = self.stats
        s.answered += tally.answered
        s.failed += tally.failed
        s.prompt_tokens += tally.prompt_tokens
        s.completion_tokens += tally.completion_tokens
        s.cached_tokens += tally.cached_tokens
        s.cache_write_tokens += tally.cache_write_tokens
        s.errors.update(tally.errors)
        s.failures.update(tally.failures)
        self.on_progress()

    async def _download(self, file_id: str) -> Path:
        # a file id may be a URL (Message Batches' results_url): its name here is a hash of it
        path = self._workdir / f"{hashlib.blake2b(file_id.encode(), digest_size=8).hexdigest()}.jsonl"

        async def fetch() -> int:
            with open(path, "wb") as fh:  # a retry starts the file again
                return await self.client.download(file_id, fh)

        await self.calls.call(fetch, f"downloading {file_id}")
        return path
