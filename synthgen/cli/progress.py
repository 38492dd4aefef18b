"""The CLI's view of a running generate: a live display on a terminal, plain lines otherwise
(logs, CI, nohup), and the library's warnings printed as they come. `status --watch`
draws another process's run with the same display (cli/watch.py)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ..engine.progress import Snapshot, duration, eta, fields_of, snapshot
from ..types import Stats


def announcer(shown: dict[str, Any], stream: TextIO | None = None) -> Any:
    """How a command says a line of its own beside `progress_options`' display: through
    the live bar on a terminal, else a plain line on `stream` (stderr)."""
    bar = shown.get("on_progress")
    if isinstance(bar, LiveBar):
        return bar.say
    out = stream or sys.stderr
    return lambda message: (out.write(message + "\n"), out.flush())


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
    """The live display of `generate(on_progress=...)`: rich's bar, percentage and
    done/total columns, then every other number of the progress line, laid out to the
    terminal's width (an 80-column terminal gets more lines, not fewer numbers).
    Transient: gone at the end, where the summary takes its place."""

    def __init__(self, stream: TextIO, transient: bool = True):
        from rich.console import Console

        self._console = Console(file=stream)
        self._transient = transient
        self._display = _make_display(self._console, transient)
        self._started = False

    def __call__(self, stats: Stats) -> None:
        self.show(snapshot(stats))

    def show(self, snap: Snapshot) -> None:
        """Draw `snap` (this process's stats, or another's through `status --watch`)."""
        if not self._started:
            self._display.start()
            self._started = True
        self._display.snap = snap
        self._display.update(self._display.task, completed=snap.done, total=snap.total or 1,
                             elapsed=duration(snap.elapsed), eta=eta(snap))
        self._display.refresh()

    def close(self) -> None:
        if self._started:
            self._display.stop()

    def say(self, message: str) -> None:
        """A line of its own (a recipe's stage starting or its funnel): the display is put
        away first, so the line is not drawn into the bar's lines and cut at the terminal's
        width; the next progress draws a new one below it."""
        from rich.text import Text

        if self._started:
            self._display.stop()
            self._display = _make_display(self._console, self._transient)
            self._started = False
        self._console.print(Text(message), soft_wrap=True)


# Shown on the bar's own line (rich columns), so left out of the lines below it.
_ON_THE_BAR = {"done", "eta", "elapsed"}
_GAP = "  "


def detail_lines(snap: Snapshot, width: int) -> list[str]:
    """Every number the bar's line does not show, packed into lines of at most `width`
    columns; a piece is never split unless it alone is wider than the terminal."""
    pieces = [text for name, text in fields_of(snap) if name not in _ON_THE_BAR]
    if snap.planning:
        pieces.insert(0, "planning (total grows)")
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + len(_GAP) + len(piece) <= width:
            lines[-1] += _GAP + piece
        else:
            lines.append(piece)
    return lines


def _make_display(console, transient: bool):
    """rich is imported here, when a terminal is there to draw on."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
    from rich.text import Text

    class Display(Progress):
        """rich's Progress with the run's other numbers drawn below the bar."""

        def __init__(self, console, transient: bool):
            self.snap: Snapshot | None = None  # before rich's first draw, in super().__init__
            super().__init__(
                BarColumn(bar_width=20), TaskProgressColumn(), MofNCompleteColumn(separator="/"),
                TextColumn("elapsed {task.fields[elapsed]}"), TextColumn("ETA {task.fields[eta]}"),
                console=console, transient=transient, auto_refresh=False,
            )
            self.task = self.add_task("generate", total=1, elapsed="0s", eta="-")

        def get_renderables(self):
            yield self.make_tasks_table(self.tasks)
            if self.snap is not None:
                width = max(20, self.console.width - 1)
                yield Text("\n".join(detail_lines(self.snap, width)), no_wrap=False)

    return Display(console, transient)


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

