"""The store: one DuckDB file holding every request, answer, failure and run.

    schema      the tables and their ordered migrations
    memory      a run's DuckDB memory limit
    writer      the single writer thread of a run (batched commits)
    status      per run: done, pending, failed, cost
    export      chat-format JSONL / Parquet for TRL and HF datasets
    live        read while a run writes (the run serves queries over a local socket)

Nothing here speaks HTTP; planning (what is pending) lives in `synthgen.plan`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import duckdb

from ..errors import StoreError, first_line
from .live import RELEASE_WAIT, LiveConnection, is_synthgen, ping
from .schema import LOGPROBS_TYPE, migrate

__all__ = ["LOGPROBS_TYPE", "LiveConnection", "arrow_batches", "connect", "open_store"]

Connection = duckdb.DuckDBPyConnection | LiveConnection
_LOCK_PID = re.compile(r"PID (\d+)")


# A sandboxed reader sees the store and nothing else: no other file (read or written, no
# ATTACH, COPY, INSTALL/LOAD) and no setting it could change back.
SANDBOX = {"enable_external_access": False, "lock_configuration": True}
# `sql --allow-files`: local files too, but no extension fetched from the internet or
# loaded on its own (a URL in FROM would otherwise install httpfs), and no setting changed.
FILES = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
         "lock_configuration": True}


def connect(path: str | Path, read_only: bool = False, sandbox: bool | str = False) -> Any:
    """Open (and, unless read-only, create and migrate) a synthgen store.

    `sandbox`: True, the store and nothing else; "files", local files too (see FILES).
    Read-only, while a synthgen run holds the file, this returns a `LiveConnection` that
    asks the run itself (DuckDB lets no other process open a file being written); the run
    reads no other files then, as `sandbox` asks of a connection opened here.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"{path}: no such database")
    config = SANDBOX if sandbox is True else FILES if sandbox == "files" else {}
    ending_since: float | None = None
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise StoreError(f"{path}: cannot open database ({first_line(exc)})") from exc
            info = ping(path)
            if info is not None and read_only:
                return LiveConnection(path, info, config)
            holder = _holder(exc)
            # A run that has stopped serving reads but not yet closed the file (it is
            # writing its summary, checkpointing): a reader waits for it to let go.
            if info is None and read_only and holder is not None and is_synthgen(holder):
                ending_since = ending_since or time.monotonic()
                if time.monotonic() - ending_since < RELEASE_WAIT:
                    time.sleep(0.05)
                    continue
            raise StoreError(_locked_message(path, exc, info)) from None
        except duckdb.Error as exc:
            raise StoreError(f"{path}: not a DuckDB database, or a damaged one ({first_line(exc)})") from exc
    try:
        if read_only:
            tables = {r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables").fetchall()}
            if "schema_migrations" not in tables:
                raise StoreError(f"{path}: not a synthgen store (no schema_migrations table)")
        else:
            migrate(con)
    except duckdb.Error as exc:
        con.close()
        raise StoreError(f"{path}: the store is damaged and cannot be read ({first_line(exc)}); "
                         "restore it from a copy, or start a new --db") from exc
    except StoreError:
        con.close()
        raise
    return con


def _locked_message(path: Path, exc: BaseException, info: dict[str, Any] | None) -> str:
    if info is not None:
        run = f"run {info['run_id']} " if info.get("run_id") else ""
        return (f"{path}: a synthgen {run}(pid {info.get('pid')}) is writing this store; "
                "one process writes a store at a time: wait for it to end, or use another --db")
    holder = _holder(exc)
    if holder is not None and is_synthgen(holder):
        return (f"{path}: a synthgen process (pid {holder}) holds this store (a run that is ending, "
                "or a command writing it); one process writes a store at a time: wait for it to "
                "end, or use another --db")
    who = f"process {holder}" if holder is not None else "another process"
    return (f"{path}: the file is locked by {who}, which is not a synthgen run (a run would "
            "answer reads while it writes); close the program that holds it, then try again")


def _holder(exc: BaseException) -> int | None:
    """The pid DuckDB names as holding a file's lock."""
    match = _LOCK_PID.search(str(exc))
    return int(match.group(1)) if match else None


def open_store(path: str | Path, read_only: bool = True) -> Any:
    """Public entry point: a DuckDB connection to a store, read-only unless asked.

    Query it with SQL, e.g. ``open_store("corpus.duckdb").sql("FROM corpus LIMIT 5")``.
    During a run it still works (see `LiveConnection`).
    """
    return connect(path, read_only=read_only)


def arrow_batches(con: Any, query: str, params: object = None, batch_size: int = 4096):
    """A streaming Arrow RecordBatchReader over a query (DuckDB 1.x and 2.x spell it apart)."""
    if isinstance(con, LiveConnection):
        return con.arrow_reader(query, params)
    rel = con.sql(query, params=params)
    if hasattr(rel, "to_arrow_reader"):
        return rel.to_arrow_reader(batch_size)
    return rel.fetch_arrow_reader(batch_size)
