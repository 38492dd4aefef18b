"""`synthgen view`: browse a store in the browser, on 127.0.0.1, read-only.

    queries  what the page asks (one SELECT each, on a read-only sandboxed connection, or
             the live-read path while a run writes the store)
    server   the HTTP server and its defences (127.0.0.1 only, Host/Origin/token checks,
             GET only)
    page     the HTML, CSS and script of the page

It reads the store only; it knows nothing of the engine, the backends or the student.
"""

from __future__ import annotations

from .server import ViewServer

__all__ = ["ViewServer"]
