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
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from .config import GenerateConfig
from .errors import ConfigError, InputError
from .inputs import BadRow, messages_of, read_rows, to_messages
from .inputs.readers import drop_snapshots, snapshot_sql
from .store.memory import grow_memory, retry_out_of_memory
from .store.tx import transaction
from .types import Request, Stats

if TYPE_CHECKING:
    from .inputs.templates import Template

BATCH_ROWS = 20_000
SHOWN_PROBLEMS = 20
KEPT_INVALID_ROWS = 10_000
_SORT = orjson.OPT_SORT_KEYS


@dataclass
class Plan:
    key: str
    total: int      # distinct requests in the plan
    invalid: int    # input rows skipped with --skip-invalid
    reused: bool    # True when an unchanged input's plan was found in the store
    duplicates: int = 0  # input lines that repeat an earlier line's request (see duplicate_inputs)


def canonical(value: Any) -> bytes:
    """Sorted-key compact JSON: equal content gives equal bytes, so equal ids."""
    return orjson.dumps(value, option=_SORT, default=str)


def request_id(model: str, params_json: bytes, messages_json: bytes, sample_index: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(model.encode())
    h.update(b"\x00")
    h.update(params_json)
    h.update(b"\x00")
    h.update(messages_json)
    h.update(b"\x00%d" % sample_index)
    return h.hexdigest()


def sample_params(cfg: GenerateConfig) -> list[bytes]:
    """Canonical parameters for each sample index: a seed moves with the index, so the
    n samples of one prompt are different draws even against a seeded teacher."""
    base = cfg.request_params()
    out = []
    for k in range(cfg.n):
        params = dict(base)
        if cfg.seed is not None:
            params["seed"] = cfg.seed + k
        out.append(canonical(params))
    return out


def plan_key(cfg: GenerateConfig, fingerprint: str, template: Template | None) -> str:
    spec = {
        "fingerprint": fingerprint,
        "template": template.source if template else None,
        "model": cfg.model,
        "params": [p.decode() for p in sample_params(cfg)],
        "limit": cfg.limit,
        "skip_invalid": cfg.skip_invalid,
    }
    return hashlib.blake2b(canonical(spec), digest_size=16).hexdigest()


def fingerprint(cfg: GenerateConfig) -> tuple[str, bool]:
    """(fingerprint, reusable): a file's content hash, or the query text (never reused:
    the tables behind a query may have changed)."""
    if cfg.input_sql is not None:
        return "sql:" + hashlib.blake2b(cfg.input_sql.encode(), digest_size=16).hexdigest(), False
    require_input(cfg)
    assert cfg.input is not None
    h = hashlib.blake2b(digest_size=16)
    with cfg.input.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "file:" + h.hexdigest(), True


def require_input(cfg: GenerateConfig) -> None:
    """An input file that is not there is refused here, naming it."""
    if cfg.input is not None and not cfg.input.is_file():
        raise ConfigError(f"input: {cfg.input}: no such file")


class Planner:
    """One plan of one run: `validate()`, then `start()` and read `pending()`; `join()`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, run_id: int,
                 template: Template | None, checked: tuple[str, int] | None = None):
        self.con = con
        self.checked = checked  # (fingerprint, requests): an input validated before the run
        self.cfg = cfg
        self.run_id = run_id
        self.template = template
        if cfg.given_plan is not None:  # a shard: its driver planned it into this store
            self.fingerprint, reusable, self.key = "given", True, cfg.given_plan
        else:
            self.fingerprint, reusable = fingerprint(cfg)
            self.key = plan_key(cfg, self.fingerprint, template)
        # A query is run once, on the store, before anything reads it (readers.snapshot_sql)
        self._snapshot = (snapshot_sql(con, cfg.input_sql, run_id)
                          if cfg.input_sql is not None and cfg.given_plan is None else None)
        row = con.execute("SELECT total, invalid FROM plans WHERE plan_key = ?", [self.key]).fetchone()
        if row is None and cfg.given_plan is not None:
            raise ConfigError(f"{cfg.db}: this store has no plan {cfg.given_plan} (a shard's plan is "
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
            yield from read_rows(self.cfg.input, None)
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
        expected = check_rows(self.rows(self.con), self.cfg, self.template, should_stop)
        if expected is None:
            return False
        self.expected = expected
        return True

    def plan_all(self) -> Plan:
        """Plan on this thread, to the end (what `make_plan` and a reused plan need)."""
        self.claim()
        if not self.reused:
            self._plan(self.con)
        self.con.execute("UPDATE runs SET planned = ? WHERE run_id = ?", [self.total, self.run_id])
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
        self.con.execute("UPDATE runs SET plan_key = ? WHERE run_id = ?", [self.key, self.run_id])

    def _plan(self, con: duckdb.DuckDBPyConnection) -> None:
        cfg, key = self.cfg, self.key
        _forget_unfinished(con, key, self.run_id, replan=self.fingerprint.startswith("sql:"))
        model = cfg.model or ""
        for batch in _batches(cfg, self.template, self._bad, self.rows(con)):
            if self._stop:
                return
            retry_out_of_memory(con, lambda b=batch: _insert_batch(con, key, self.run_id, model, b))
            lo, hi = batch[0][1], batch[-1][1] + 1
            if self._stats is not None:
                [(done,)] = con.execute(DONE_IN_LINES_SQL, {"key": key, "lo": lo, "hi": hi,
                                                            "retry_failed": cfg.retry_failed}).fetchall()
                self._stats.already_done += done
            with self._cond:
                self._through = hi
                self._cond.notify_all()
        [(total,)] = con.execute("SELECT count(*) FROM plan_requests WHERE plan_key = ?", [key]).fetchall()
        [(self.duplicates,)] = con.execute(
            "SELECT count(*) FROM duplicate_inputs WHERE plan_key = ?", [key]).fetchall()
        bad = self._bad
        with transaction(con):
            if bad.rows:
                con.executemany("INSERT INTO invalid_inputs VALUES (?, ?, ?, ?)",
                                [(key, line, err, raw) for line, err, raw in bad.rows])
            con.execute("INSERT INTO plans VALUES (?, ?, ?, ?, ?, now())",
                        [key, _source(cfg), self.fingerprint, total, bad.count])
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


def make_plan(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, run_id: int,
              template: Template | None) -> Plan:
    """Validate and plan the whole input on this thread (no request is sent)."""
    planner = Planner(con, cfg, run_id, template)
    try:
        planner.validate()
        return planner.plan_all()
    finally:
        planner.close()


def _forget_unfinished(con: duckdb.DuckDBPyConnection, key: str, run_id: int, replan: bool) -> None:
    """Delete what plans that never finished left behind (and, to plan a query again, the
    old copy of `key`).

    A plan is finished once its `plans` row exists (written in its last transaction).
    Requests are only ever added by the run that first planned them, so the requests of a
    run whose plan never finished are leftovers, unless an answer, a failure or a finished
    plan refers to them (a plan is sent while it is planned): those stay, and the next
    plan of the same input finds them.
    """
    with transaction(con):
        if replan:
            con.execute("DELETE FROM plans WHERE plan_key = ?", [key])
        con.execute("DELETE FROM invalid_inputs WHERE plan_key = ?", [key])
        con.execute("DELETE FROM duplicate_inputs WHERE plan_key NOT IN (SELECT plan_key FROM plans)")
        con.execute("DELETE FROM plan_requests WHERE plan_key NOT IN (SELECT plan_key FROM plans)")
        con.execute(
            """
            DELETE FROM requests q
            WHERE run_id IN (SELECT run_id FROM runs
                             WHERE run_id != $run
                               AND (plan_key IS NULL OR plan_key NOT IN (SELECT plan_key FROM plans)))
              AND NOT EXISTS (SELECT 1 FROM responses s WHERE s.request_id = q.request_id)
              AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.request_id = q.request_id)
              AND NOT EXISTS (SELECT 1 FROM plan_requests p WHERE p.request_id = q.request_id)
            """, {"run": run_id})


def check_rows(rows: Iterator[tuple[int, Any]], cfg: GenerateConfig, template: Template | None,
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
        if cfg.limit is not None and valid >= cfg.limit:
            break
    if bad.count and not cfg.skip_invalid:
        raise InputError(_problem_message(cfg, bad.shown, bad.count), bad.shown, bad.count)
    return valid * cfg.n


def _source(cfg: GenerateConfig) -> str:
    return str(cfg.input.resolve()) if cfg.input is not None else f"sql: {cfg.input_sql}"


def _problem_message(cfg: GenerateConfig, problems: list[tuple[int, str]], count: int) -> str:
    where = cfg.input if cfg.input is not None else "input-sql row"
    unit = "line" if cfg.input is not None and cfg.input.suffix != ".parquet" else "row"
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


def _batches(cfg: GenerateConfig, template: Template | None, bad: Problems,
             rows: Iterator[tuple[int, Any]]) -> Iterator[list[tuple]]:
    """Yield lists of (request_id, line, sample_index, messages_json, params_json, metadata_json).

    The first batch is small and each next one twice as large up to BATCH_ROWS: the engine
    starts sending once the first batch is committed, so it should not wait for 20,000."""
    params = sample_params(cfg)
    model = cfg.model or ""
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
        if cfg.limit is not None and valid > cfg.limit:
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


def _insert_batch(con: duckdb.DuckDBPyConnection, key: str, run_id: int, model: str,
                  batch: list[tuple]) -> int:
    """Commit one batch; return how many requests it added to the plan.

    Dedupe is by anti-join, not by index: a prompt seen earlier in this plan is not added
    to the plan again (its first line is kept), and a request any plan already stored is
    not stored again (same id, same content). The batch reaches DuckDB as column lists
    (converted in C++), staged once in a temporary table for the two inserts.
    """
    ids, lines, samples, messages, params, metadata = (list(c) for c in zip(*batch, strict=True))
    with transaction(con):
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _plan_batch AS
            SELECT unnest($ids) AS request_id, unnest($lines)::BIGINT AS line,
                   unnest($samples)::INTEGER AS sample_index, unnest($messages) AS messages,
                   unnest($params) AS params, unnest($metadata)::VARCHAR AS metadata
            """,
            {"ids": ids, "lines": lines, "samples": samples, "messages": messages,
             "params": params, "metadata": metadata},
        )
        [(added,)] = con.execute(
            """
            INSERT INTO plan_requests
            SELECT $key, request_id, min(line) FROM _plan_batch b
            WHERE NOT EXISTS (SELECT 1 FROM plan_requests p
                              WHERE p.plan_key = $key AND p.request_id = b.request_id)
            GROUP BY request_id ORDER BY min(line)
            """,
            {"key": key},
        ).fetchall()
        [(inserted,)] = con.execute(
            """
            INSERT INTO requests
            SELECT DISTINCT ON (request_id) request_id, $run, line, sample_index, $model,
                   messages::JSON, params::JSON, metadata::JSON, now()
            FROM _plan_batch b
            WHERE NOT EXISTS (SELECT 1 FROM requests r WHERE r.request_id = b.request_id)
            ORDER BY request_id, line
            """,
            {"run": run_id, "model": model},
        ).fetchall()
        if inserted < len(set(ids)):
            # Requests an earlier plan stored (same prompt, same parameters): the metadata is
            # the input's as it is now, so an edit of a line's other fields is what exports.
            con.execute(
                """
                UPDATE requests SET metadata = b.metadata::JSON
                FROM (SELECT DISTINCT ON (request_id) request_id, metadata FROM _plan_batch
                      ORDER BY request_id, line) b
                WHERE requests.request_id = b.request_id
                  AND requests.metadata::VARCHAR IS DISTINCT FROM b.metadata
                """)
        # A line whose request an earlier line already made: one request, one answer, but
        # its own metadata is kept (sample 0 stands for the line).
        con.execute(
            """
            INSERT INTO duplicate_inputs
            SELECT $key, b.line, b.request_id, b.metadata::JSON FROM _plan_batch b
            JOIN plan_requests p ON p.plan_key = $key AND p.request_id = b.request_id
            WHERE b.sample_index = 0 AND b.line != p.line
            """,
            {"key": key},
        )
        con.execute("DROP TABLE _plan_batch")
    return added


PENDING_SQL = """
SELECT p.request_id, r.messages, r.params, p.line, r.sample_index
FROM plan_requests p JOIN requests r USING (request_id)
WHERE p.plan_key = $key AND p.line >= $lo AND p.line < $hi
  AND NOT EXISTS (SELECT 1 FROM responses s WHERE s.request_id = p.request_id)
  AND ($retry_failed OR NOT EXISTS (SELECT 1 FROM failures f WHERE f.request_id = p.request_id))
ORDER BY p.line, r.sample_index
"""


PENDING_LINES = 25_000

# How many of a plan's requests in a range of lines need no sending (what progress counts
# as already done).
DONE_IN_LINES_SQL = """
SELECT count(*) FROM plan_requests p
WHERE p.plan_key = $key AND p.line >= $lo AND p.line < $hi
  AND (EXISTS (SELECT 1 FROM responses s WHERE s.request_id = p.request_id)
       OR (NOT $retry_failed AND EXISTS (SELECT 1 FROM failures f WHERE f.request_id = p.request_id)))
"""


def pending_batches(con: duckdb.DuckDBPyConnection, key: str, retry_failed: bool,
                    rows: int = 4096, lines: int = PENDING_LINES, lo: int | None = None,
                    hi: int | None = None) -> Iterator[list[Request]]:
    """Pending requests of a plan in input order (lines lo <= line < hi, default all), in
    lists of up to `rows` Requests.

    Queried `lines` input lines at a time: one query over the whole plan would join, sort
    and hold every pending request at once (~140 MB at a million requests, more than the
    rest of a run). 25,000 lines keep a query's working memory near 15 MB while the
    per-query cost (a scan of `requests` for the join) stays ~4 s per million requests.
    """
    [(first, last)] = con.execute(
        "SELECT min(line), max(line) FROM plan_requests WHERE plan_key = $key "
        "AND line >= coalesce($lo, 0) AND ($hi IS NULL OR line < $hi)",
        {"key": key, "lo": lo, "hi": hi}).fetchall()
    if first is None:
        return
    start = first
    while start <= last:
        end = start + lines if hi is None else min(start + lines, hi)
        yield from _pending_range(con, key, retry_failed, rows, start, end)
        start += lines


def _pending_range(con: duckdb.DuckDBPyConnection, key: str, retry_failed: bool, rows: int,
                   lo: int, hi: int) -> Iterator[list[Request]]:
    """The pending requests of lines lo <= line < hi. DuckDB may run out of its limit while
    the result streams (the writer's commits share it), not only when the query starts:
    then the limit grows and the query runs again from just after the last request given
    (by line and sample, the result's order), so none is given twice."""
    after: tuple[int, int] | None = None
    while True:
        params = {"key": key, "retry_failed": retry_failed, "lo": lo if after is None else after[0],
                  "hi": hi}
        cur = retry_out_of_memory(con, lambda p=params: con.execute(PENDING_SQL, p))
        try:
            while batch := cur.fetchmany(rows):
                if after is not None:
                    batch = [r for r in batch if (r[3], r[4]) > after]
                if batch:
                    after = (batch[-1][3], batch[-1][4])
                    yield [Request(*r) for r in batch]
            return
        except duckdb.OutOfMemoryException:
            if not grow_memory(con):
                raise


# Requests counted per hash-partition query in `plan_counts`. One query over a million
# requests builds a ~70 MB hash table of request ids; on top of the responses key's index
# (also counted against DuckDB's limit) that pushed a million-prompt run's memory limit up
# twice at its very end. A quarter million ids per query keeps the table near 15 MB.
COUNT_PARTITION = 250_000

PLAN_COUNTS_SQL = """
    SELECT count(*),
           count(*) FILTER (WHERE s.request_id IS NOT NULL),
           count(*) FILTER (WHERE s.request_id IS NULL AND f.request_id IS NOT NULL)
    FROM (SELECT request_id FROM plan_requests
          WHERE plan_key = $key AND hash(request_id) % $parts = $part) p
         LEFT JOIN (SELECT request_id FROM responses
                    WHERE hash(request_id) % $parts = $part) s USING (request_id)
         LEFT JOIN (SELECT request_id FROM failures
                    WHERE hash(request_id) % $parts = $part) f USING (request_id)
"""


def plan_counts(con: duckdb.DuckDBPyConnection, key: str, total: int = 0) -> dict[str, int]:
    """Answered, failed and pending requests of a plan, counted by the database.

    `total` (the plan's size, when known) splits the count into hash partitions of about
    COUNT_PARTITION requests, trading a few scans of the tables for a small hash table.
    """
    parts = max(1, -(-total // COUNT_PARTITION))
    sums = [0, 0, 0]
    for part in range(parts):
        row = retry_out_of_memory(con, lambda p=part: con.execute(
            PLAN_COUNTS_SQL, {"key": key, "parts": parts, "part": p}).fetchone())
        sums = [a + b for a, b in zip(sums, row, strict=True)]
    total, answered, failed = sums
    return {"total": total, "answered": answered, "failed": failed,
            "pending": total - answered - failed}
