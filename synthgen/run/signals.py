"""Ctrl-C, SIGTERM and SIGHUP (a dropped SSH session) around a run's sending."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class StopFlag:
    """A signal before or after sending is noted, so reading the input ends cleanly and the
    run's row is closed; while sending, the engine's own handlers take over (and put these
    back)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.requested = False

    def is_set(self) -> bool:
        return self.requested

    @contextlib.contextmanager
    def handling(self) -> Iterator[StopFlag]:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    previous[sig] = signal.signal(sig, self._note)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _note(self, signum, frame) -> None:
        self.requested = True
