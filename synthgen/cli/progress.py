"""The CLI's view of a running generate: a live bar on a terminal, plain lines otherwise
(logs, CI, nohup), and the library's warnings printed as they come."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ..engine.progress import describe
from ..types import Stats


@contextlib.contextmanager
def progress_options(interval: float | None = None, stream: TextIO | None = None) -> Iterator[dict[str, Any]]:
    """Keyword arguments for `generate()` that show the run on `stream` (stderr): a rich
    bar redrawn 4 times a second on a terminal, else a plain line every `interval` (10 s)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield {"progress": stream, "progress_interval": interval}
        return
    bar = LiveBar(stream)
    try:
        yield {"on_progress": bar, "progress_interval": interval or 0.25}
    finally:
        bar.close()


class LiveBar:
    """A rich progress bar fed by `generate(on_progress=...)`; transient (gone at the end)."""

    def __init__(self, stream: TextIO):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(
            BarColumn(bar_width=16), TextColumn("{task.fields[line]}"),
            console=Console(file=stream), transient=True, auto_refresh=False,
        )
        self._task = self._progress.add_task("generate", total=1, line="")
        self._started = False

    def __call__(self, stats: Stats) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(self._task, completed=stats.done, total=stats.total or 1,
                              line=describe(stats))
        self._progress.refresh()

    def close(self) -> None:
        if self._started:
            self._progress.stop()


@contextlib.contextmanager
def show_library_messages(stream: TextIO | None = None) -> Iterator[None]:
    """Print what the library logs (warnings; the teacher launcher's steps) while a
    command runs: the library itself never prints."""
    handler = _EchoHandler(stream or sys.stderr)
    logger = logging.getLogger("synthgen")
    previous = logger.level
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class _EchoHandler(logging.Handler):
    def __init__(self, stream: TextIO):
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        self.stream.write(prefix + record.getMessage() + "\n")
        self.stream.flush()

