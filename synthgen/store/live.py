"""Read while a run writes: the process that holds the store answers queries for others.

DuckDB lets one process open a file for writing and no other process open it at all while
it does. So a run serves read-only queries from its own database over a Unix socket, and
readers (`status`, `sql`, `export`, `open_store()`) use it when they find the file locked:

    reader ──(query, params)──> socket in a private directory ──> the run's DuckDB
           <──(Arrow IPC stream)──  cursor in a READ ONLY transaction

Besides queries it answers `ping` (which run, which process) and `progress`: the run's live
progress numbers (a JSON object, what `synthgen status --watch` draws), from a callable
the run passes in, so the store knows nothing of the engine.

Nothing a reader sends can write: each query runs in its own cursor inside a transaction
DuckDB opened READ ONLY, it must be one SELECT (or EXPLAIN) statement (no SET, PRAGMA,
ATTACH, COPY), and the run's database has no access to other files. The socket lives in
a directory only this user can enter. Results land in a local in-memory DuckDB, so the
reader gets a real DuckDB cursor or relation: cursors see what is committed, which the
writer does every 0.1 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import socket
import socketserver
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from ..errors import StoreError
from .memory import grow_memory
from .readonly import READ_KINDS

log = logging.getLogger("synthgen.live")

BATCH_ROWS = 2048
MAX_REQUEST = 1 << 20
CONNECT_TIMEOUT = 2.0


def socket_path(db: str | Path) -> Path:
    """Where the run writing `db` listens: a private directory of this user (sockets have a
    ~100-byte path limit, so the name is a hash of the store's real path)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.blake2b(str(Path(db).resolve()).encode(), digest_size=12).hexdigest()
    return Path(base) / f"synthgen-{os.getuid()}" / f"{digest}.sock"


def _private_dir(path: Path, create: bool) -> bool:
    """True when `path` is a directory of ours that nobody else can enter."""
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


class LiveServer:
    """Serves read-only queries on `con`'s database until `close()`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, db: str | Path, info: dict[str, Any],
                 progress: Callable[[], dict[str, Any]] | None = None):
        self.path = socket_path(db)
        self._con = con
        self._info = {"pid": os.getpid(), **info}
        self._progress = progress
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        """Listen, or do nothing when no private directory can be had (readers then get the
        plain "locked" error)."""
        if not _private_dir(self.path.parent, create=True):
            return self
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a run that was killed left it; we hold the store's lock now
        server = _Server(str(self.path), _Handler)
        os.chmod(self.path, 0o600)
        server.con, server.info, server.progress = self._con.cursor(), self._info, self._progress
        server.lock = threading.Lock()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="synthgen-live", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.con.close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    con: duckdb.DuckDBPyConnection  # this server's own cursor; each query gets one of its own
    info: dict[str, Any]
    progress: Callable[[], dict[str, Any]] | None
    lock: threading.Lock  # a connection is not thread-safe: one cursor made at a time

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A reader's broken query must not print into the run's terminal: log it."""
        log.debug("live store: a read failed", exc_info=True)


def _arrow_reader(rel: duckdb.DuckDBPyRelation):
    """A relation's result as a RecordBatchReader (DuckDB 1.x and 2.x spell it apart)."""
    to_reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
    return to_reader(BATCH_ROWS)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            request = json.loads(self.rfile.readline(MAX_REQUEST))
        except (ValueError, OSError):
            return
        server: _Server = self.server  # type: ignore[assignment]
        if request.get("ping"):
            self._header({"ok": True, **server.info})
            return
        if request.get("progress"):
            live = server.progress() if server.progress is not None else None
            self._header({"ok": live is not None, **server.info, "progress": live})
            return
        with server.lock:
            cur = server.con.cursor()
        try:
            self._query(cur, str(request.get("query", "")), request.get("params"))
        except duckdb.Error as exc:
            self._header({"error": str(exc), "type": type(exc).__name__})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader went away mid-stream
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            cur.close()

    def _query(self, cur: duckdb.DuckDBPyConnection, query: str, params: Any) -> None:
        statements = cur.extract_statements(query)
        kinds = [s.type.name for s in statements]
        if len(statements) != 1 or kinds[0] not in READ_KINDS:
            what = ", ".join(kinds) or "nothing"
            raise duckdb.InvalidInputException(
                f"a live store answers one SELECT at a time, read-only (got: {what})")
        cur.execute("BEGIN TRANSACTION READ ONLY")
        while True:
            try:
                reader = _arrow_reader(cur.sql(query, params=params))
                break
            except duckdb.OutOfMemoryException:
                cur.execute("ROLLBACK")
                if not grow_memory(cur):
                    raise
                cur.execute("BEGIN TRANSACTION READ ONLY")
        import pyarrow as pa  # only a process that is asked a query pays for Arrow

        self._header({"ok": True})
        with pa.ipc.new_stream(self.wfile, reader.schema) as out:
            for batch in reader:
                out.write_batch(batch)
        self.wfile.flush()

    def _header(self, data: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(data, default=str).encode() + b"\n")
        self.wfile.flush()


def ping(db: str | Path) -> dict[str, Any] | None:
    """The live run serving `db` ({pid, run_id, ...}), or None when there is none."""
    return _ask(db, {"ping": True})


def progress(db: str | Path) -> dict[str, Any] | None:
    """The live progress of the run writing `db` ({pid, run_id, progress: {...}}), or None
    when no run is writing it (or it ended meanwhile)."""
    return _ask(db, {"progress": True})


def _ask(db: str | Path, request: dict[str, Any]) -> dict[str, Any] | None:
    path = socket_path(db)
    if not _private_dir(path.parent, create=False) or not path.exists():
        return None
    try:
        with _connect(path) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            line = sock.makefile("rb").readline(MAX_REQUEST)
        return json.loads(line) if line else None
    except (OSError, ValueError):
        return None


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


class LiveConnection:
    """What `connect(db, read_only=True)` returns while a run holds `db`.

    `execute` and `sql` run the query in the writing process and give back a cursor and a
    relation of a local in-memory DuckDB holding the result, so the usual DuckDB calls work
    (`fetchall`, `description`, `.show()`, `.df()`, ...). Each result is a snapshot of
    what was committed when the query ran.
    """

    def __init__(self, db: str | Path, info: dict[str, Any]):
        self.db = Path(db)
        self.info = info
        self._path = socket_path(db)
        self._local = duckdb.connect()
        self._names = itertools.count()

    def arrow_reader(self, query: str, params: Any = None):
        """The result as a pyarrow RecordBatchReader, streamed from the writing process."""
        import pyarrow as pa

        try:
            sock = _connect(self._path)
        except OSError as exc:
            raise StoreError(f"{self.db}: the run writing it stopped answering ({exc})") from None
        sock.sendall(json.dumps({"query": query, "params": params}, default=str).encode() + b"\n")
        stream = sock.makefile("rb")
        sock.close()  # the file object keeps the socket open until it is closed
        header = json.loads(stream.readline(MAX_REQUEST) or b"{}")
        if "error" in header:
            stream.close()
            error = getattr(duckdb, str(header.get("type")), duckdb.Error)
            if not (isinstance(error, type) and issubclass(error, duckdb.Error)):
                error = duckdb.Error
            raise error(header["error"])
        if not header.get("ok"):
            stream.close()
            raise StoreError(f"{self.db}: the run writing it gave no answer")
        return pa.ipc.open_stream(stream)

    def execute(self, query: str, parameters: Any = None) -> duckdb.DuckDBPyConnection:
        """A local cursor over the result, read as it streams in (read it once)."""
        name = f"_live_{next(self._names)}"
        cur = self._local.cursor()
        cur.register(name, self.arrow_reader(query, parameters))
        return cur.execute(f"FROM {name}")

    def sql(self, query: str, params: Any = None) -> duckdb.DuckDBPyRelation:
        """A local relation over the whole result (held in memory; query it as often as you like)."""
        name = f"_live_{next(self._names)}"
        self._local.register(name, self.arrow_reader(query, params).read_all())
        return self._local.sql(f"FROM {name}")

    query = sql

    def table(self, name: str) -> duckdb.DuckDBPyRelation:
        quoted = '"' + name.replace('"', '""') + '"'
        return self.sql(f"FROM {quoted}")

    def cursor(self) -> LiveConnection:
        return self

    def close(self) -> None:
        self._local.close()

    def __enter__(self) -> LiveConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
