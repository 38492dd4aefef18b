"""Batch files that never meet an API: written for `vllm run-batch` (or an upload by hand),
and their output files stored with the same exactly-once rules as a collected batch.

    write_pending(db, out)   the latest plan's pending requests as batch-00001.jsonl, ...
                             (each line: custom_id = request id, method, url, and exactly
                             the body the online transport sends), split at the API's limits
    ingest_files(db, files)  output lines -> responses by custom_id (an answer stored before
                             is kept), refused requests -> failures, retryable ones stay
                             pending; every ingest is a run of its own in `runs`

Requests in flight in a Batch API batch are not written: an answer from both would be
paid for twice.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson

from .. import store
from ..backends.http import chat_body
from ..backends.openai_batch import outcome, request_line
from ..backends.think import DEFAULT as DEFAULT_THINK
from ..backends.think import ThinkTags
from ..errors import ConfigError, StoreError
from ..store.plans import pending_batches
from ..store.runs import close_run, open_run, software_versions
from ..types import RunSummary
from . import records
from .files import BatchFile, Splitter
from .ingest import Context, Tally, ingest_file

NO_LIMIT = 1 << 62


@dataclass
class Written:
    plan_key: str | None
    model: str | None = None
    files: list[BatchFile] = field(default_factory=list)
    held: int = 0  # pending requests left out: in flight in a batch at an API
    oversized: int = 0  # requests larger than a whole file may be

    @property
    def requests(self) -> int:
        return sum(len(f.request_ids) for f in self.files)


LATEST_PLAN_SQL = """
SELECT plan_key FROM runs WHERE plan_key IN (SELECT plan_key FROM plans)
ORDER BY run_id DESC LIMIT 1
"""


def write_pending(db: str | Path, out: Path, max_requests: int = 50_000,
                  max_bytes: int = 200_000_000, plan_key: str | None = None) -> Written:
    """Write the pending requests of `plan_key` (default: the latest finished plan) into
    batch files under `out` (an empty or new directory)."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("batch-*.jsonl")):
        raise ConfigError(f"--out {out}: it already holds batch-*.jsonl files; write into an empty "
                          "directory, so that no stale file is run or ingested by mistake")
    con = store.connect(db)  # read-write: a store from before the batch tables gets them
    try:
        if plan_key is None:
            row = con.execute(LATEST_PLAN_SQL).fetchone()
            if row is None:
                raise StoreError(f"{db}: no finished plan to write; give the input (--input and "
                                 "--model, as for generate) to plan it first")
            plan_key = row[0]
        result = Written(plan_key)
        splitter = Splitter(out, max_requests, max_bytes)
        model_json: bytes | None = None
        for batch in pending_batches(con, plan_key, retry_failed=False):
            if model_json is None:
                [(model,)] = con.execute("SELECT model FROM requests WHERE request_id = ?",
                                         [batch[0].request_id]).fetchall()
                model_json, result.model = orjson.dumps(model or ""), model
            held = records.held_back(con, [r.request_id for r in batch], run_id=-1)
            result.held += len(held)
            for request in batch:
                if request.request_id in held:
                    continue
                done = splitter.add(request.request_id,
                                    request_line(request.request_id, chat_body(model_json, request)))
                if done is not None:
                    result.files.append(done)
        if (last := splitter.finish()) is not None:
            result.files.append(last)
        result.oversized = len(splitter.oversized)
        return result
    finally:
        con.close()


@dataclass
class Ingested:
    path: Path
    tally: Tally


def ingest_files(db: str | Path, paths: list[Path],
                 think: ThinkTags | None = DEFAULT_THINK) -> tuple[int, list[Ingested]]:
    """Store the answers of batch output (and error) files; (run id, one tally per file).
    Inline reasoning between `think`'s tags is split out as online answers' is."""
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    con = store.connect(db)
    try:
        run_id = _open_run(con, paths)
        results: list[Ingested] = []
        total = Tally()
        status = "failed"
        try:
            for path in paths:
                tally = Tally()
                ctx = Context(run_id, max_attempts=NO_LIMIT)  # attempts are not known: retry later
                ingest_file(con, path, ctx, f"file:{path.name}", tally, keep_seen=False,
                            parse=functools.partial(outcome, think=think))
                results.append(Ingested(path, tally))
                total.add(tally)
            status = "done"
        finally:
            with contextlib.suppress(duckdb.Error):
                close_run(con, RunSummary(run_id=run_id, status=status, answered=total.answered,
                                          failed=total.failed, prompt_tokens=total.prompt_tokens,
                                          completion_tokens=total.completion_tokens), planned=False)
        return run_id, results
    finally:
        con.close()


def _open_run(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> int:
    return open_run(con, {"ingest": [str(p.resolve()) for p in paths]}, software_versions())
