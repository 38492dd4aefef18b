"""Fold shard stores into a main store: every answer once, next to its own prompt.

A shard store has the main store's schema and the same content-hashed request ids, so
folding is three anti-joins on `request_id`, one transaction per shard, reading the shard
attached READ_ONLY (a shard killed mid-run is read as it was committed):

    requests    the shard's requests that have an outcome and that main lacks (a plan
                made elsewhere); the driver of a sharded run has already planned them
    responses   the shard's answers main lacks (an answer already stored is kept as is)
    failures    the shard's failures of requests main has neither answered nor failed;
                a failure in main that the shard answered (--retry-failed) goes

Folding the same shard again adds nothing, which is what makes `synthgen merge` and a
rerun of a sharded command safe. The rows folded belong to one run of main (`run_id`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..errors import StoreError
from .commit import RESPONSE_COLUMNS
from .tx import transaction

_SHARD = "synthgen_shard"

NEW_ANSWERS = f"""
FROM {_SHARD}.responses s
WHERE NOT EXISTS (SELECT 1 FROM main.responses r WHERE r.request_id = s.request_id)
"""
NEW_FAILURES = f"""
FROM {_SHARD}.failures f
WHERE NOT EXISTS (SELECT 1 FROM main.responses r WHERE r.request_id = f.request_id)
  AND NOT EXISTS (SELECT 1 FROM main.failures m WHERE m.request_id = f.request_id)
"""
_COLUMNS = RESPONSE_COLUMNS.replace("run_id", "$run")


@dataclass
class Folded:
    """What one fold added to main."""

    answers: int = 0
    failures: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __iadd__(self, other: Folded) -> Folded:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def rows(self) -> int:
        return self.answers + self.failures + self.requests


@contextlib.contextmanager
def attached(con: duckdb.DuckDBPyConnection, shard: Path):
    """The shard attached READ_ONLY as `synthgen_shard`; a clear error if it cannot be."""
    if not shard.is_file():
        raise StoreError(f"{shard}: no such shard store")
    try:
        con.execute(f"ATTACH ? AS {_SHARD} (READ_ONLY)", [str(Path(shard).resolve())])
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        if "lock" in first.lower():
            raise StoreError(f"{shard}: a process is still writing this shard store ({first}); merge "
                             "it once that run has ended") from None
        raise StoreError(f"{shard}: cannot be read as a store ({first})") from None
    try:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = ?",
            [_SHARD]).fetchall()}
        if not {"schema_migrations", "responses", "failures", "requests"} <= tables:
            raise StoreError(f"{shard}: not a synthgen store")
        mine = _migrations(con, "main")
        theirs = _migrations(con, _SHARD)
        if theirs - mine:
            raise StoreError(f"{shard}: written by a newer synthgen (migrations {sorted(theirs - mine)}); "
                             "upgrade synthgen to merge it")
        yield
    finally:
        con.execute(f"DETACH {_SHARD}")


def _migrations(con: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    return {r[0] for r in con.execute(f"SELECT name FROM {catalog}.schema_migrations").fetchall()}


def pending_fold(con: duckdb.DuckDBPyConnection, shard: Path) -> Folded:
    """What folding `shard` would add (nothing written)."""
    with attached(con, shard):
        return _count(con)


def _count(con: duckdb.DuckDBPyConnection) -> Folded:
    [(answers, pt, ct)] = con.execute(
        f"SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) "
        f"{NEW_ANSWERS}").fetchall()
    [(failures,)] = con.execute(f"SELECT count(*) {NEW_FAILURES}").fetchall()
    return Folded(answers=answers, failures=failures, prompt_tokens=pt, completion_tokens=ct)


def fold(con: duckdb.DuckDBPyConnection, shard: Path, run_id: int) -> Folded:
    """Fold one shard into the store `con` holds, in one transaction; return what was added."""
    with attached(con, shard):
        counted = _count(con)
        with transaction(con):
            [(requests,)] = con.execute(f"""
                INSERT INTO main.requests
                SELECT q.* FROM {_SHARD}.requests q
                WHERE NOT EXISTS (SELECT 1 FROM main.requests m WHERE m.request_id = q.request_id)
                  AND (EXISTS (SELECT 1 FROM {_SHARD}.responses s WHERE s.request_id = q.request_id)
                       OR EXISTS (SELECT 1 FROM {_SHARD}.failures f WHERE f.request_id = q.request_id))
                """).fetchall()
            con.execute(f"DELETE FROM main.failures WHERE request_id IN "
                        f"(SELECT request_id FROM {_SHARD}.responses)")
            con.execute(f"INSERT INTO main.responses ({RESPONSE_COLUMNS}) SELECT {_COLUMNS} {NEW_ANSWERS}",
                        {"run": run_id})
            con.execute(f"""
                INSERT INTO main.failures (request_id, run_id, messages, error_type, status_code,
                                           message, attempts, created_at)
                SELECT request_id, $run, messages, error_type, status_code, message, attempts, created_at
                {NEW_FAILURES}
                """, {"run": run_id})
    counted.requests = requests
    return counted


def merge_stores(db: Path, shards: list[Path]) -> tuple[int | None, list[Folded]]:
    """`synthgen merge`: fold each shard into `db` as one 'merged' run of `db`; when nothing
    is new (the second time), nothing is written at all, not even a run row."""
    from . import connect

    main = Path(db).resolve()
    for shard in shards:
        if Path(shard).resolve() == main:
            raise StoreError(f"{shard}: is the main store itself; give the shard stores after --db")
    con = connect(db)
    try:
        new = [pending_fold(con, Path(s)) for s in shards]
        if not any(f.answers or f.failures for f in new):
            return None, new
        [(run_id,)] = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()
        con.execute(
            "INSERT INTO runs (run_id, status, started_at, config, message) "
            "VALUES (?, 'merging', now(), ?, ?)",
            [run_id, _config_json(shards), f"merge of {len(shards)} shard store(s)"])
        folded = [fold(con, Path(s), run_id) for s in shards]
        con.execute(
            "UPDATE runs SET status = 'merged', ended_at = now(), answered = ?, failed = ?, "
            "prompt_tokens = ?, completion_tokens = ? WHERE run_id = ?",
            [sum(f.answers for f in folded), sum(f.failures for f in folded),
             sum(f.prompt_tokens for f in folded), sum(f.completion_tokens for f in folded), run_id])
        return run_id, folded
    finally:
        con.close()


def _config_json(shards: list[Path]) -> str:
    import orjson

    return orjson.dumps({"merged": [str(Path(s).resolve()) for s in shards]}).decode()
