"""Planning: turn the input into request rows with content-derived ids, and say what is
pending.

A request id is a hash of canonical JSON of (model, sampling parameters, messages,
sample index). Running the same command again therefore finds every answered request
already in `responses`; changing a parameter makes new ids. That is resume and cache.

    validate()   one pass over the whole input with the same rules as planning: a bad
                 line anywhere stops the run here, before anything is sent
    start()      plans on its own thread in committed batches (memory stays flat at
                 millions of lines) while `pending()` hands the engine each batch's
                 pending requests as soon as it is committed: the first request goes out
                 after one batch, not after the whole file

A plan counts only once its last transaction writes its `plans` row; a plan that a
Ctrl-C or a crash cut short is planned again by the next run (its committed rows are
kept where answers refer to them, the rest is deleted and re-added). A plan whose input
file is unchanged (same content hash) is reused as is, which makes resuming a
million-prompt run start in well under a second.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from .errors import ConfigError, InputError
from .ids import PlanSpec, canonical, fingerprint, plan_key, request_id, require_input, sample_params
from .inputs import BadRow, messages_of, read_rows, to_messages
from .inputs.readers import drop_snapshots, snapshot_sql
from .store import runs as run_rows
from .store.memory import retry_out_of_memory
from .store.plans import (
    done_in_lines,
    finish_plan,
    forget_unfinished,
    insert_batch,
    pending_batches,
    plan_counts,
    plan_row,
)
from .types import Request, Stats

# Importable from here as before (they live in ids.py and store/plans.py)
__all__ = ["Plan", "Planner", "canonical", "check_rows", "fingerprint", "make_plan", "pending_batches",
           "plan_counts", "plan_key", "request_id", "require_input", "sample_params"]

if TYPE_CHECKING:
    from .inputs.templates import Template

BATCH_ROWS = 20_000
SHOWN_PROBLEMS = 20
KEPT_INVALID_ROWS = 10_000


@dataclass
class Plan:
    key: str
    total: int      # distinct requests in the plan
    invalid: int    # input rows skipped with --skip-invalid
    reused: bool    # True when an unchanged input's plan was found in the store
    duplicates: int = 0  # input lines that repeat an earlier line's request (see duplicate_inputs)


class Planner:
    """One plan of one run: `validate()`, then `start()` and read `pending()`; `join()`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, spec: PlanSpec | Any, run_id: int,
                 template: Template | None, checked: tuple[str, int] | None = None):
        self.con = con
        self.checked = checked  # (fingerprint, requests): an input validated before the run
        spec = spec.planning if hasattr(spec, "planning") else spec  # a GenerateConfig: its part
        self.spec = spec
        self.run_id = run_id
        self.template = template
        if spec.given_plan is not None:  # a shard: its driver planned it into this store
            self.fingerprint, reusable, self.key = "given", True, spec.given_plan
        else:
            self.fingerprint, reusable = fingerprint(spec)
            self.key = plan_key(spec, self.fingerprint, template)
        # A query is run once, on the store, before anything reads it (readers.snapshot_sql)
        self._snapshot = (snapshot_sql(con, spec.input_sql, run_id)
                          if spec.input_sql is not None and spec.given_plan is None else None)
        row = plan_row(con, self.key)
        if row is None and spec.given_plan is not None:
            raise ConfigError(f"{spec.db}: this store has no plan {spec.given_plan} (a shard's plan is "
                              "written by its driver: run the sharded command again)")
        self.reused = row is not None and reusable
        self.total, self.invalid = (row[0], row[1]) if self.reused else (0, 0)
        self.duplicates = 0
        self.expected = self.total  # requests the validated input makes (before dedupe)
        self._bad = Problems()
        self._cond = threading.Condition()
        self._through = 0  # every line below this is planned and committed
        self._finished = self.reused
        self._error: BaseException | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._stats: Stats | None = None

    @property
    def plan(self) -> Plan:
        return Plan(self.key, self.total, self.invalid, self.reused, self.duplicates)

    def rows(self, con: duckdb.DuckDBPyConnection) -> Iterator[tuple[int, Any]]:
        """The input's rows: the file's, or the query's snapshot, read on a cursor of its
        own (the planner writes batches on `con` while the snapshot streams)."""
        if self._snapshot is None:
            yield from read_rows(self.spec.input, None)
            return
        cur = con.cursor()
        try:
            yield from read_rows(None, f'SELECT * FROM "{self._snapshot}"', cur)
        finally:
            cur.close()

    def close(self) -> None:
        """Drop the query's snapshot (after the run: the plan holds what it needs)."""
        if self._snapshot is not None:
            with contextlib.suppress(duckdb.Error):  # a failed store: the next run drops it
                drop_snapshots(self.con)
            self._snapshot = None

    def validate(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Read the whole input once with the planner's own rules; raise InputError naming
        the bad lines (unless --skip-invalid). Nothing is written. False when `should_stop`
        said so (a signal) before the end. An input `checked` already (precheck.py: the same
        file, by its content hash) is not read again."""
        if self.reused:
            return True
        if self.checked is not None and self.checked[0] == self.fingerprint:
            self.expected = self.checked[1]
            return True
        expected = check_rows(self.rows(self.con), self.spec, self.template, should_stop)
        if expected is None:
            return False
        self.expected = expected
        return True

    def plan_all(self) -> Plan:
        """Plan on this thread, to the end (what `make_plan` and a reused plan need)."""
        self.claim()
        if not self.reused:
            self._plan(self.con)
        run_rows.set_planned(self.con, self.run_id, self.total)
        return self.plan

    def start(self, stats: Stats | None = None) -> Planner:
        """Plan on a thread of its own; `pending()` follows it batch by batch. `stats`
        (the run's live counters) learns how many planned requests were already done."""
        self._stats = stats
        self.claim()
        if not self.reused:
            self._thread = threading.Thread(target=self._run, name="synthgen-plan", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the batch being planned (Ctrl-C, an abort): the next run finishes it."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def join(self, raise_error: bool = True) -> Plan:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and raise_error:
            raise self._error
        return self.plan

    @property
    def finished(self) -> bool:
        return self._finished

    def _run(self) -> None:
        cur = self.con.cursor()
        try:
            self._plan(cur)
        except BaseException as exc:  # raised to the reader of pending() and by join()
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            cur.close()

    def claim(self) -> None:
        """Record the plan on the run's row (here, on the caller's thread: the run row is
        the caller's to update while the plan is written)."""
        run_rows.set_plan(self.con, self.run_id, self.key)

    def _plan(self, con: duckdb.DuckDBPyConnection) -> None:
        spec, key = self.spec, self.key
        forget_unfinished(con, key, self.run_id, replan=self.fingerprint.startswith("sql:"))
        model = spec.model or ""
        for batch in _batches(spec, self.template, self._bad, self.rows(con)):
            if self._stop:
                return
            retry_out_of_memory(con, lambda b=batch: insert_batch(con, key, self.run_id, model, b))
            lo, hi = batch[0][1], batch[-1][1] + 1
            if self._stats is not None:
                self._stats.already_done += done_in_lines(con, key, lo, hi, spec.retry_failed)
            with self._cond:
                self._through = hi
                self._cond.notify_all()
        bad = self._bad
        total, self.duplicates = finish_plan(con, key, _source(spec), self.fingerprint, bad.rows, bad.count)
        self.total, self.invalid = total, bad.count
        if self._stats is not None:  # the total is known now (duplicates made one request each)
            self._stats.total, self._stats.planning = total, False
        with self._cond:
            self._through = 1 << 62
            self._finished = True
            self._cond.notify_all()

    def pending(self, retry_failed: bool, rows: int = 4096) -> Iterator[list[Request]]:
        """Pending requests in input order, each batch as soon as the planner committed it.

        Blocks while the planner is behind (call it off the event loop)."""
        cur = self.con.cursor()
        try:
            if self.reused:
                yield from pending_batches(cur, self.key, retry_failed, rows)
                return
            lo = 0
            while True:
                with self._cond:
                    while self._through <= lo and not self._finished and self._error is None \
                            and not self._stop:
                        self._cond.wait()
                    if self._error is not None:
                        raise self._error
                    through, finished = self._through, self._finished
                if through <= lo:
                    return  # stopped, or finished with nothing left
                hi = through if not finished else None
                yield from pending_batches(cur, self.key, retry_failed, rows, lo=lo, hi=hi)
                if finished:
                    return
                lo = through
        finally:
            cur.close()


def make_plan(con: duckdb.DuckDBPyConnection, spec: PlanSpec | Any, run_id: int,
              template: Template | None) -> Plan:
    """Validate and plan the whole input on this thread (no request is sent)."""
    planner = Planner(con, spec, run_id, template)
    try:
        planner.validate()
        return planner.plan_all()
    finally:
        planner.close()


def check_rows(rows: Iterator[tuple[int, Any]], spec: PlanSpec, template: Template | None,
               should_stop: Callable[[], bool] = lambda: False) -> int | None:
    """Every row through the planner's own rules: the requests the valid rows make, or
    InputError naming the bad lines (unless --skip-invalid); None if `should_stop` said so."""
    bad = Problems()
    valid = 0
    for line, fields in rows:
        if line % 4096 == 0 and should_stop():
            return None
        try:
            if isinstance(fields, BadRow):
                raise fields
            messages_of(fields, template)
        except BadRow as exc:
            raw = "" if isinstance(fields, BadRow) else canonical(fields).decode()[:2000]
            bad.add(line, str(exc), raw)
            continue
        valid += 1
        if spec.limit is not None and valid >= spec.limit:
            break
    if bad.count and not spec.skip_invalid:
        raise InputError(_problem_message(spec, bad.shown, bad.count), bad.shown, bad.count)
    return valid * spec.n


def _source(spec: PlanSpec) -> str:
    return str(spec.input.resolve()) if spec.input is not None else f"sql: {spec.input_sql}"


def _problem_message(spec: PlanSpec, problems: list[tuple[int, str]], count: int) -> str:
    where = spec.input if spec.input is not None else "input-sql row"
    unit = "line" if spec.input is not None and spec.input.suffix != ".parquet" else "row"
    lines = [f"{count} invalid input {unit}{'s' if count != 1 else ''}; nothing was sent:"]
    lines += [f"  {where}:{line}: {reason}" for line, reason in problems]
    if count > len(problems):
        lines.append(f"  ... and {count - len(problems)} more")
    lines.append("Fix them, or pass --skip-invalid to record them and go on with the valid ones.")
    return "\n".join(lines)


@dataclass
class Problems:
    """Bad rows seen while planning: all counted, the first few kept (memory stays bounded)."""

    count: int = 0
    shown: list[tuple[int, str]] = field(default_factory=list)
    rows: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, line: int, reason: str, raw: str) -> None:
        self.count += 1
        if len(self.shown) < SHOWN_PROBLEMS:
            self.shown.append((line, reason))
        if len(self.rows) < KEPT_INVALID_ROWS:
            self.rows.append((line, reason, raw))


FIRST_BATCH_ROWS = 256


def _batches(spec: PlanSpec, template: Template | None, bad: Problems,
             rows: Iterator[tuple[int, Any]]) -> Iterator[list[tuple]]:
    """Yield lists of (request_id, line, sample_index, messages_json, params_json, metadata_json).

    The first batch is small and each next one twice as large up to BATCH_ROWS: the engine
    starts sending once the first batch is committed, so it should not wait for 20,000."""
    params = sample_params(spec)
    model = spec.model or ""
    batch: list[tuple] = []
    valid = 0
    size = min(FIRST_BATCH_ROWS, BATCH_ROWS)
    for line, fields in rows:
        try:
            if isinstance(fields, BadRow):
                raise fields
            messages, metadata = to_messages(fields, template)
        except BadRow as exc:
            raw = "" if isinstance(fields, BadRow) else canonical(fields).decode()[:2000]
            bad.add(line, str(exc), raw)
            continue
        valid += 1
        if spec.limit is not None and valid > spec.limit:
            break
        messages_json = canonical(messages)
        metadata_json = canonical(metadata).decode() if metadata else None
        m = messages_json.decode()
        for k, p in enumerate(params):
            rid = request_id(model, p, messages_json, k)
            batch.append((rid, line, k, m, p.decode(), metadata_json))
        if len(batch) >= size:
            yield batch
            batch = []
            size = min(2 * size, BATCH_ROWS)
    if batch:
        yield batch


