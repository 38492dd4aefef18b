"""The DuckDB memory limit of a run: start small, keep headroom above what cannot be
evicted, and grow only when DuckDB says it ran out."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import duckdb

T = TypeVar("T")

# A run's DuckDB working memory. DuckDB treats its limit as a cache size as much as a
# cap: without one it keeps every block a run touched (a million-prompt run held ~250 MB
# of cached table blocks and finished query results). Sorts and joins spill to disk
# beyond it; a batch that truly needs more (long top-20 logprobs) raises it, see below.
# The responses key's index counts against the limit and cannot be evicted (~67 MB at a
# million answers), so the writer keeps this much free above it (`keep_headroom`).
# A million-prompt run took as long at 32 MB as at 64 MB and peaked ~30 MB lower.
RUN_MEMORY_LIMIT = 32 * 2**20
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def limit_memory(con: duckdb.DuckDBPyConnection, limit: int = RUN_MEMORY_LIMIT) -> None:
    """Start a run with a small DuckDB memory limit (never above DuckDB's own default)."""
    if limit < _memory_limit(con):
        con.execute(f"SET memory_limit = '{limit}B'")


# Memory DuckDB cannot evict: the responses key's index and in-memory tables.
_PINNED_SQL = ("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
               "WHERE tag IN ('ART_INDEX', 'IN_MEMORY_TABLE')")


def keep_headroom(con: duckdb.DuckDBPyConnection, headroom: int = RUN_MEMORY_LIMIT) -> None:
    """Raise the limit so that `headroom` stays free above the memory DuckDB cannot evict.

    The writer calls this as the index grows: left to out-of-memory errors, the limit
    doubled (64 -> 128 -> 256 MB in a million-answer run) and the cache filled the slack.
    """
    try:
        [(pinned,)] = con.execute(_PINNED_SQL).fetchall()
    except duckdb.OutOfMemoryException:  # no room even to ask: grow, which is what is wanted
        grow_memory(con)
        return
    want = min(int(pinned + headroom), _ceiling())
    if want > _memory_limit(con):
        con.execute(f"SET memory_limit = '{want}B'")


def grow_memory(con: duckdb.DuckDBPyConnection, ceiling: int | None = None) -> bool:
    """Double DuckDB's memory limit after an out-of-memory error; False at the ceiling
    (80% of the machine's memory, DuckDB's default), where the error should stand."""
    ceiling = ceiling or _ceiling()
    current = _memory_limit(con)
    grown = min(2 * current, ceiling)
    # DuckDB reads the limit back rounded ('18.7 GiB'), so "at the ceiling" means "within
    # 1% of it": comparing exactly retried an out-of-memory error forever.
    if grown <= current * 1.01:
        return False
    con.execute(f"SET memory_limit = '{grown}B'")
    return True


def retry_out_of_memory(con: duckdb.DuckDBPyConnection, fn: Callable[[], T]) -> T:
    """Run `fn` (one transaction or one query); if DuckDB runs out of its limit, grow the
    limit and run it again. `fn` must roll back what it did before raising."""
    while True:
        try:
            return fn()
        except duckdb.OutOfMemoryException:
            if not grow_memory(con):
                raise


def _ceiling() -> int:
    return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _memory_limit(con: duckdb.DuckDBPyConnection) -> int:
    [(text,)] = con.execute("SELECT current_setting('memory_limit')").fetchall()
    number, _, unit = str(text).strip().partition(" ")
    if not unit:  # e.g. '134217728B'
        unit = number.lstrip("0123456789.")
        number = number[: len(number) - len(unit)]
    return int(float(number) * _UNITS.get(unit.upper() or "B", 1))
