"""The `runs` table: every invocation's row, opened when it starts and closed with its
counts however it ends (done, interrupted, aborted, crashed: the next writer marks a
run that never closed as killed)."""

from __future__ import annotations

from typing import Any

import duckdb
import orjson

from ..types import Counts, RunSummary


def open_run(con: duckdb.DuckDBPyConnection, config: dict[str, Any], versions: dict[str, str]) -> int:
    """A new run's row, 'running'; its id. `config` is the public config (no secret can be
    in it: the key is read from the environment, URLs lose their credentials)."""
    run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchone()[0]
    con.execute(
        "INSERT INTO runs (run_id, status, started_at, model, base_urls, config, versions) "
        "VALUES (?, 'running', now(), ?, ?, ?, ?)",
        [run_id, config.get("model"), config.get("base_urls") or [], orjson.dumps(config).decode(),
         orjson.dumps(versions).decode()])
    return run_id


def close_run(con: duckdb.DuckDBPyConnection, s: RunSummary, planned: bool = True) -> None:
    """The run's row with how it ended and what it did (and the size of its plan, unless
    it planned nothing: an ingest of files made elsewhere)."""
    con.execute(
        "UPDATE runs SET status = ?, ended_at = now(), answered = ?, failed = ?, "
        "prompt_tokens = ?, completion_tokens = ?, cached_tokens = ?, cache_write_tokens = ?, "
        "message = ?, planned = coalesce(planned, ?) WHERE run_id = ?",
        [s.status, s.answered, s.failed, s.prompt_tokens, s.completion_tokens, s.cached_tokens,
         s.cache_write_tokens, s.message, s.total if planned else None, s.run_id])


def set_plan(con: duckdb.DuckDBPyConnection, run_id: int, plan_key: str) -> None:
    """The plan a run sends (`status` and `export` follow the latest run's plan)."""
    con.execute("UPDATE runs SET plan_key = ? WHERE run_id = ?", [plan_key, run_id])


def set_planned(con: duckdb.DuckDBPyConnection, run_id: int, planned: int) -> None:
    con.execute("UPDATE runs SET planned = ? WHERE run_id = ?", [planned, run_id])


def record_counts(con: duckdb.DuckDBPyConnection, run_id: int, counts: Counts,
                  committed: tuple[int, int] | None = None) -> None:
    """A running run's counts so far, so `status` during it (and after a kill) shows them;
    `committed`: (answers, failures) stored, where that is what the row should say."""
    answered, failed = committed if committed is not None else (counts.answered, counts.failed)
    con.execute(
        "UPDATE runs SET answered = ?, failed = ?, prompt_tokens = ?, completion_tokens = ?, "
        "cached_tokens = ?, cache_write_tokens = ? WHERE run_id = ?",
        [answered, failed, counts.prompt_tokens, counts.completion_tokens, counts.cached_tokens,
         counts.cache_write_tokens, run_id])


# A killed run recorded its counts at most a second before it died (or never, if it died
# while planning): they are counted again from what it stored; its tokens are the bill's,
# every attempt answered (billed_attempts: the kept answers and the wasted ones).
KILLED_SQL = """
UPDATE runs SET status = 'killed',
    message = coalesce(message, 'the process ended without closing its run (killed, or its store '
                                || 'could not be written)'),
    answered = (SELECT count(*) FROM responses s WHERE s.run_id = runs.run_id),
    failed = (SELECT count(*) FROM failures f WHERE f.run_id = runs.run_id),
    prompt_tokens = (SELECT coalesce(sum(prompt_tokens), 0) FROM billed_attempts b
                     WHERE b.run_id = runs.run_id),
    completion_tokens = (SELECT coalesce(sum(completion_tokens), 0) FROM billed_attempts b
                         WHERE b.run_id = runs.run_id),
    cached_tokens = (SELECT coalesce(sum(cached_tokens), 0) FROM billed_attempts b
                     WHERE b.run_id = runs.run_id),
    cache_write_tokens = (SELECT coalesce(sum(cache_write_tokens), 0) FROM billed_attempts b
                          WHERE b.run_id = runs.run_id)
WHERE status = 'running' RETURNING run_id
"""


def spent_by_other_runs(con: duckdb.DuckDBPyConnection, run_id: int) -> float:
    """What every other run of this store cost, each at its own prices (pricing.py): what
    a --budget has already spent (a resumed job, the earlier stages of a recipe)."""
    from ..pricing import Prices

    total = 0.0
    for config, pt, ct, cached, written in con.execute(
            "SELECT config, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens "
            "FROM runs WHERE run_id <> ?", [run_id]).fetchall():
        total += Prices.of_config(orjson.loads(config or "{}")).cost(pt, ct, cached, written) or 0.0
    return total


def software_versions() -> dict[str, str]:
    """What a run records of the software that made it."""
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version  # ~30 ms of import: only here

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("synthgen", "duckdb", "aiohttp", "tenacity", "pydantic", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def mark_killed_runs(con: duckdb.DuckDBPyConnection) -> int:
    """Runs still marked running when we hold the store's write lock cannot be running:
    they were killed (or their store failed). Say so, with what they stored."""
    return len(con.execute(KILLED_SQL).fetchall())
