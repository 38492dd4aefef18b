"""One job split into shard stores, and folded back: the part of sharded runs that is not Ray.

    prepare   in the main store: fold what shards of an earlier try stored, open this
              try's run, validate and plan the whole input (the Planner, as any run), then
              give each shard the pending requests of its hash range as a plan of its own
              store (same schema, same ids)
    finish    fold every shard into the main store, close the run with its counts, and
              remove the shard stores once nothing is pending

Planning happens here, once, in the driver, rather than in each shard: the input is read
and validated once (a bad line stops the run before any shard starts), "pending" is
decided against the main store (so an answer stored there by any earlier run is never
sent again, whatever the shard count was), and a shard needs neither the input file nor
the templates on its node; it only runs `generate()` on the plan in its own store
(`GenerateConfig.given_plan`). A shard's range is a slice of the request id's first 64
bits, so ranges are disjoint by construction and a shard is a plain `WHERE` on the id.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from . import store
from .config import GenerateConfig
from .errors import ConfigError, InputError
from .plan import Planner
from .store import recovery
from .store.live import LiveServer
from .store.memory import limit_memory
from .store.merge import Folded, fold
from .store.plans import plan_counts
from .store.runs import close_run, mark_killed_runs, open_run, software_versions
from .store.tx import transaction
from .types import RunSummary

_SPACE = 1 << 64


def bounds(index: int, count: int) -> tuple[str, str | None]:
    """The hash range of shard `index` of `count`: ids with lo <= id < hi (hi None: no end).

    Ids are 32 lowercase hex digits, so comparing an id with a 16-digit bound compares its
    first 64 bits as a number."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count}")
    lo = f"{-(-index * _SPACE // count):016x}"
    hi = None if index == count - 1 else f"{-(-(index + 1) * _SPACE // count):016x}"
    return lo, hi


def shard_of(request_id: str, count: int) -> int:
    """The shard a request id belongs to (the same answer `bounds` gives)."""
    return int(request_id[:16], 16) * count >> 64


@dataclass
class Shard:
    index: int
    count: int
    path: Path
    plan_key: str
    pending: int = 0

    @property
    def label(self) -> str:
        return f"shard {self.index + 1}/{self.count}"

    def config(self, cfg: GenerateConfig) -> GenerateConfig:
        """The run this shard makes: the job's own settings on its own store and plan."""
        return cfg.model_copy(update={"db": self.path, "given_plan": self.plan_key})


@dataclass
class Job:
    """A sharded run. From `prepare` to `finish` the driver holds the main store open, as
    any run holds its store: a second `generate` on it is refused (it would send the same
    requests again, and be paid again), and `status`/`sql` read it through the driver."""

    run_id: int
    plan_key: str
    total: int
    shards: list[Shard]
    folded_before: Folded = field(default_factory=Folded)
    invalid: int = 0
    duplicates: int = 0
    con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)
    live: LiveServer | None = field(default=None, repr=False)

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.shards)

    def close(self) -> None:
        """Let go of the main store (what `finish` does last; call it if `finish` never runs)."""
        if self.live is not None:
            self.live.close()
            self.live = None
        if self.con is not None:
            with contextlib.suppress(duckdb.Error):
                self.con.close()
            self.con = None


def shard_paths(db: Path, count: int, shard_dir: Path | None = None) -> list[Path]:
    """Where the shard stores of `db` live: beside it, or in `shard_dir` (a directory every
    node sees at the same path, on a cluster)."""
    where = shard_dir if shard_dir is not None else db.parent
    return [where / f"{db.stem}.shard-{i + 1}-of-{count}.duckdb" for i in range(count)]


def shard_plan_key(plan_key: str, index: int, count: int) -> str:
    return hashlib.blake2b(f"{plan_key}:shard:{index}/{count}".encode(), digest_size=16).hexdigest()


def prepare(cfg: GenerateConfig, count: int, shard_dir: Path | None = None,
            template: object = None) -> Job:
    """Plan the job in the main store and write each shard's plan into its store. The
    main store stays open (and served to readers) until `finish` or `Job.close`."""
    if count < 1:
        raise ConfigError("--shards must be at least 1")
    if not cfg.base_urls:
        raise ConfigError("--shards needs a teacher every shard can reach: --base-url (repeat it "
                          "for each replica) or --teacher NAME; the bundled local teacher runs "
                          "on one machine")
    paths = shard_paths(Path(cfg.db), count, shard_dir)
    if shard_dir is not None:
        shard_dir.mkdir(parents=True, exist_ok=True)
    con = store.connect(cfg.db)
    try:
        limit_memory(con)
        job = _plan(con, cfg, paths, template)
        _fence(con, paths)
        job.con = con
        job.live = LiveServer(con, cfg.db, {"run_id": job.run_id, "shards": count}).start()
        return job
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.close()
        raise


def _plan(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, paths: list[Path],
          template: object) -> Job:
    count = len(paths)
    mark_killed_runs(con)
    recovery.restore(con, cfg.db)
    run_id = open_run(con, cfg.public_dict(), software_versions())
    folded = Folded()
    for path in paths:  # what an earlier, cut-short try stored
        if path.exists():
            folded += fold(con, path, run_id)
    planner = Planner(con, cfg.planning, run_id, template)  # type: ignore[arg-type]
    try:
        planner.validate()
    except InputError as exc:
        close_run(con, RunSummary(run_id=run_id, status="invalid_input", message=str(exc),
                                   model=cfg.model or ""))
        raise
    plan = planner.plan_all()
    shards = [Shard(i, count, path, shard_plan_key(plan.key, i, count))
              for i, path in enumerate(paths)]
    for shard in shards:
        shard.pending = _write_shard_plan(con, plan.key, plan.total, shard, cfg.retry_failed)
    return Job(run_id, plan.key, plan.total, shards, folded, plan.invalid, plan.duplicates)


def _fence(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> None:
    """From here the main store reaches no file but itself and its shard stores (their WAL
    and checkpoint files too): what readers served meanwhile can see, as in any run."""
    allowed = [str(p.resolve()) + suffix for p in paths for suffix in ("", ".wal", ".wal.checkpoint")]
    con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")


PENDING_IN_RANGE_SQL = """
CREATE OR REPLACE TEMP TABLE _shard_pending AS
SELECT p.request_id, p.line FROM main.plan_requests p
WHERE p.plan_key = $key AND p.request_id >= $lo AND ($hi IS NULL OR p.request_id < $hi)
  AND NOT EXISTS (SELECT 1 FROM main.responses s WHERE s.request_id = p.request_id)
  AND ($retry_failed OR NOT EXISTS (SELECT 1 FROM main.failures f WHERE f.request_id = p.request_id))
"""


def _write_shard_plan(con: duckdb.DuckDBPyConnection, key: str, total: int, shard: Shard,
                      retry_failed: bool) -> int:
    """Make the shard's plan exactly what main has pending in its range; return its size."""
    store.connect(shard.path).close()  # create (and migrate) the shard store
    lo, hi = bounds(shard.index, shard.count)
    con.execute(PENDING_IN_RANGE_SQL, {"key": key, "lo": lo, "hi": hi, "retry_failed": retry_failed})
    con.execute("ATTACH ? AS synthgen_shard", [str(shard.path.resolve())])
    try:
        with transaction(con):
            con.execute("""
                INSERT INTO synthgen_shard.requests
                SELECT q.* FROM main.requests q JOIN _shard_pending USING (request_id)
                WHERE NOT EXISTS (SELECT 1 FROM synthgen_shard.requests r
                                  WHERE r.request_id = q.request_id)
                """)
            con.execute("DELETE FROM synthgen_shard.plan_requests WHERE plan_key = $skey",
                        {"skey": shard.plan_key})
            [(pending,)] = con.execute(
                "INSERT INTO synthgen_shard.plan_requests SELECT $skey, request_id, line "
                "FROM _shard_pending ORDER BY line", {"skey": shard.plan_key}).fetchall()
            con.execute("DELETE FROM synthgen_shard.plans WHERE plan_key = $skey",
                        {"skey": shard.plan_key})
            con.execute("INSERT INTO synthgen_shard.plans VALUES ($skey, $source, $fp, $n, 0, now())",
                        {"skey": shard.plan_key, "source": f"{shard.label} of plan {key} ({total:,})",
                         "fp": f"shard:{key}", "n": pending})
    finally:
        con.execute("DETACH synthgen_shard")
        con.execute("DROP TABLE IF EXISTS _shard_pending")
    return pending


@dataclass
class ShardOutcome:
    """How one shard's run ended: its summary, or why it has none (an actor killed)."""

    shard: Shard
    summary: RunSummary | None = None
    error: str | None = None


def finish(cfg: GenerateConfig, job: Job, outcomes: list[ShardOutcome], *, keep_shards: bool = False,
           interrupted: bool = False, elapsed: float = 0.0) -> RunSummary:
    """Fold every shard into the main store and close the job's run with what it stored."""
    con = job.con
    if con is None:
        raise ValueError("finish: the job's main store was already let go (Job.close)")
    try:
        folded = Folded()
        folded += job.folded_before
        for shard in job.shards:
            if shard.path.exists():
                folded += fold(con, shard.path, job.run_id)
        counts = plan_counts(con, job.plan_key, job.total)
        errors = [o for o in outcomes if o.error is not None]
        pending = counts["pending"]
        if interrupted and pending:
            status = "interrupted"
        elif errors:
            status = "aborted"
        else:
            status = "incomplete" if pending else "done"
        message = "; ".join(f"{o.shard.label}: {o.error}" for o in errors) or None
        summary = RunSummary(
            run_id=job.run_id, status=status, total=counts["total"],
            already_done=counts["answered"] + counts["failed"] - folded.answers - folded.failures,
            answered=folded.answers, failed=folded.failures, pending=counts["pending"],
            invalid=job.invalid, prompt_tokens=folded.prompt_tokens,
            completion_tokens=folded.completion_tokens, elapsed=elapsed, model=cfg.model or "",
            message=message, duplicates=job.duplicates, plan_reused=False)
        for o in outcomes:
            if o.summary is not None:
                summary.failures.update(o.summary.failures)
                summary.errors.update(o.summary.errors)
        close_run(con, summary)
    finally:
        job.close()
    if status == "done" and not keep_shards:
        for shard in job.shards:
            _remove_store(shard.path)
    return summary


def _remove_store(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
