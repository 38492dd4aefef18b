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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from ..errors import StoreError
from .memory import grow_memory
from .readonly import READ_KINDS, statement_kind

log = logging.getLogger("synthgen.live")

BATCH_ROWS = 2048
MAX_REQUEST = 1 << 20
CONNECT_TIMEOUT = 2.0
LINGER = 2.0  # seconds a read still running may go on after its run has ended
RELEASE_WAIT = 30.0  # seconds a reader waits for an ending run to let go of the file


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
        server.active, server.closing = set(), False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="synthgen-live", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving. A read still running is given LINGER seconds to finish, then
        interrupted (its reader reads the file itself once the run has let it go): a
        reader never holds up, or fails, the end of the run that serves it."""
        server = self._server
        if server is None:
            return
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # new readers go to the file, which is free once the run ends
        server.closing = True
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + LINGER
        while server.active and time.monotonic() < deadline:
            time.sleep(0.02)
        with server.lock:
            for cur in list(server.active):
                with contextlib.suppress(duckdb.Error):
                    cur.interrupt()
        deadline = time.monotonic() + LINGER
        while server.active and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(duckdb.Error):
            server.con.close()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    con: duckdb.DuckDBPyConnection  # this server's own cursor; each query gets one of its own
    info: dict[str, Any]
    progress: Callable[[], dict[str, Any]] | None
    lock: threading.Lock  # a connection is not thread-safe: one cursor made at a time
    active: set[duckdb.DuckDBPyConnection]  # the cursors of reads running now
    closing: bool  # the run is ending: a read cut short says so, and its reader reads the file

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A reader's broken query must not print into the run's terminal: log it."""
        log.debug("live store: a read failed", exc_info=True)


def _arrow_reader(rel: duckdb.DuckDBPyRelation):
    """A relation's result as a RecordBatchReader (DuckDB 1.x and 2.x spell it apart)."""
    to_reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
    return to_reader(BATCH_ROWS)


class _Handler(socketserver.StreamRequestHandler):
    sent = False  # the answer's header has gone out (an error after it cannot be said)

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
            if server.closing:
                self._header({"ended": True})
                return
            cur = server.con.cursor()
            server.active.add(cur)
        try:
            self._query(cur, str(request.get("query", "")), request.get("params"))
        except duckdb.Error as exc:
            if server.closing and not self.sent:
                self._header({"ended": True})  # the run is ending: the reader reads the file
            elif not self.sent:
                self._header({"error": str(exc), "type": type(exc).__name__})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader went away mid-stream
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            with server.lock:
                server.active.discard(cur)
                cur.close()

    def _query(self, cur: duckdb.DuckDBPyConnection, query: str, params: Any) -> None:
        statements = cur.extract_statements(query)
        kinds = [statement_kind(s) for s in statements]
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
        self.sent = True
        self.wfile.write(json.dumps(data, default=str).encode() + b"\n")
        self.wfile.flush()


def is_synthgen(pid: int) -> bool:
    """Whether process `pid` is a synthgen command (Linux's /proc; elsewhere: not known,
    so False)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return any(os.path.basename(a) == "synthgen" or (a == "-m" and argv[i + 1:i + 2] and
                                                     argv[i + 1].startswith("synthgen"))
               for i, a in enumerate(argv))


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

    def __init__(self, db: str | Path, info: dict[str, Any], config: dict[str, Any] | None = None):
        self.db = Path(db)
        self.info = info
        self._path = socket_path(db)
        self._local = duckdb.connect()
        self._names = itertools.count()
        self._config = config or {}  # how the file is opened once the run has let it go
        self._file: duckdb.DuckDBPyConnection | None = None

    def arrow_reader(self, query: str, params: Any = None):
        """The result as a pyarrow RecordBatchReader, streamed from the writing process;
        read from the file itself when the run has ended (or ends before answering)."""
        import pyarrow as pa

        if self._file is not None:
            return _arrow_reader(self._file.sql(query, params=params))
        try:
            sock = _connect(self._path)
        except OSError:
            return _arrow_reader(self._released().sql(query, params=params))
        sock.sendall(json.dumps({"query": query, "params": params}, default=str).encode() + b"\n")
        stream = sock.makefile("rb")
        sock.close()  # the file object keeps the socket open until it is closed
        try:
            header = json.loads(stream.readline(MAX_REQUEST) or b'{"ended": true}')
        except (OSError, ValueError):
            header = {"ended": True}
        if header.get("ended"):
            stream.close()
            return _arrow_reader(self._released().sql(query, params=params))
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

    def _released(self) -> duckdb.DuckDBPyConnection:
        """The file itself, read-only, once the run that held it has let it go (it ended
        between this reader's start and its query): waited for, RELEASE_WAIT at most."""
        deadline = time.monotonic() + RELEASE_WAIT
        while self._file is None:
            try:
                self._file = duckdb.connect(str(self.db), read_only=True, config=self._config)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise StoreError(f"{self.db}: the run writing it ended, and the file is still "
                                     f"locked ({str(exc).strip().splitlines()[0]})") from None
                time.sleep(0.05)
        return self._file

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
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> LiveConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
