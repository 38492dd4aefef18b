"""The viewer's HTTP server: 127.0.0.1 only, GET only, one store, read only.

A page in the user's own browser is the attacker to think of: any site can make the
browser send requests to 127.0.0.1, and a DNS-rebinding site can make its own name point
there. So:

- it binds 127.0.0.1 (no flag to change it) and answers only a Host header naming
  127.0.0.1 or localhost at its own port (a rebound name is refused);
- every request carries the secret token the printed URL holds (the page in `?token=`,
  the API in an `X-Synthgen-Token` header, which no cross-site request can set without a
  CORS preflight, and OPTIONS is refused), so neither another site nor another user of the
  machine can read the corpus;
- an Origin header, where sent, must be its own; a cross-site fetch is refused;
- only GET and HEAD: any POST, PUT, DELETE, OPTIONS... gets 405 before anything is read;
- queries are one SELECT on a read-only, sandboxed connection (view/queries.py);
- responses forbid framing, sniffing, referrers and any script but the page's own (CSP).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from ..errors import StoreError
from ..store import LiveConnection
from . import page, queries

log = logging.getLogger("synthgen.view")

HOST = "127.0.0.1"
TOKEN_HEADER = "X-Synthgen-Token"


class ViewServer:
    """Serves the viewer of `db` on 127.0.0.1:`port` (0: any free port) until `close()`."""

    def __init__(self, db: str | Path, port: int = 0):
        self.db = Path(db)
        self.token = secrets.token_urlsafe(24)
        self._httpd = _Server((HOST, port), _Handler)
        self._httpd.view = self
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The one URL that opens the viewer (it holds the token)."""
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def allowed_hosts(self) -> set[str]:
        return {f"{HOST}:{self.port}", f"localhost:{self.port}"}

    def start(self) -> ViewServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="synthgen-view", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    view: ViewServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "synthgen-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("view: " + format, *args)

    # Anything but reading is refused before it is looked at.
    def _refuse_method(self) -> None:
        self._send(405, b"read-only viewer: GET only\n", "text/plain", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        view = self.server.view
        why = self._refusal(view)
        if why is not None:
            status, message = why
            self._send(status, message.encode() + b"\n", "text/plain", head=head)
            return
        url = urlsplit(self.path)
        args = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path == "/":
            nonce = secrets.token_urlsafe(16)
            body = page.html(view.token, nonce, str(view.db.name)).encode()
            self._send(200, body, "text/html; charset=utf-8", nonce=nonce, head=head)
            return
        handler = API.get(url.path)
        if handler is None:
            self._send(404, b"not found\n", "text/plain", head=head)
            return
        try:
            with queries.connection(view.db) as con:
                data = handler(con, args)
            status = 200 if data is not None else 404
            payload = {"ok": data is not None, "data": data} if data is not None else \
                {"ok": False, "error": "no such row"}
        except queries.QueryError as exc:
            # The user's own SQL: said on the page (a 200, so the browser logs no error).
            status, payload = 200, {"ok": False, "error": str(exc)}
        except StoreError as exc:
            status, payload = 503, {"ok": False, "error": str(exc)}
        body = orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS)
        self._send(status, body, "application/json", head=head)

    def _refusal(self, view: ViewServer) -> tuple[int, str] | None:
        host = self.headers.get("Host", "")
        if host not in view.allowed_hosts():
            return 421, "this viewer answers only to 127.0.0.1 and localhost at its own port"
        origin = self.headers.get("Origin")
        if origin is not None and origin not in {f"http://{h}" for h in view.allowed_hosts()}:
            return 403, "cross-origin requests are refused"
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site requests are refused"
        url = urlsplit(self.path)
        if url.path == "/":
            given = (parse_qs(url.query).get("token") or [""])[-1]
        else:
            given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), view.token.encode()):
            return 403, "open the URL that `synthgen view` printed (it holds the access token)"
        return None

    def _send(self, status: int, body: bytes, ctype: str, *, nonce: str | None = None, head: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header("Content-Security-Policy",
                         f"default-src 'none'; script-src {script}; style-src {script}; "
                         "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                         "frame-ancestors 'none'")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _rows(con: Any, args: dict[str, str]) -> Any:
    return queries.rows(con, args)


def _row(con: Any, args: dict[str, str]) -> Any:
    return queries.row(con, args.get("id", ""))


def _facets(con: Any, args: dict[str, str]) -> Any:
    live = con.info.get("run_id") if isinstance(con, LiveConnection) else None
    return {**queries.facets(con), "live_run": live}


API = {
    "/api/facets": _facets,
    "/api/rows": _rows,
    "/api/row": _row,
    "/api/evals": lambda con, args: queries.evals(con),
}
