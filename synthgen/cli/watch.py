"""`synthgen status --watch`: the live display of a run that another process is running.

The run serves its progress numbers over the store's live-read socket (store/live.py), so
the watcher draws exactly what the run's own terminal shows, from the same `Snapshot`:
the live display on a terminal, a plain line every `interval` otherwise. It returns when
the run ends (the socket goes away), for the caller to print the final status.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

import click

from ..engine.progress import Snapshot, describe
from ..store.live import progress
from .progress import LiveBar

POLL = 0.5


def watch(db: Path, interval: float | None = None, stream: TextIO | None = None) -> bool:
    """Follow the run writing `db` until it ends; False when no run was writing it."""
    stream = stream or sys.stderr
    first = progress(db)
    if first is None or not first.get("ok"):
        return False
    click.echo(f"run {first.get('run_id')} (pid {first.get('pid')}) is writing {db}; "
               "Ctrl-C stops watching (not the run)", err=True)
    tty = stream.isatty()
    bar = LiveBar(stream, transient=False) if tty else None
    every = interval or (POLL if tty else 10.0)
    last_line = 0.0
    info = first
    try:
        while info is not None and info.get("ok"):
            snap = Snapshot.from_dict(info["progress"])
            if bar is not None:
                bar.show(snap)
            elif time.monotonic() - last_line >= every:
                stream.write(describe(snap) + "\n")
                stream.flush()
                last_line = time.monotonic()
            time.sleep(min(every, POLL))
            info = progress(db)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"run {first.get('run_id')} has ended", err=True)
    _wait_for_release(db)
    return True


def _wait_for_release(db: Path, patience: float = 30.0) -> None:
    """The run stops serving reads a moment before it closes its row and the file (it
    counts what is left pending first): wait for the lock to go, so the status printed
    next is the final one rather than "locked"."""
    import duckdb

    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            duckdb.connect(str(db), read_only=True).close()
            return
        except duckdb.IOException:
            if progress(db) is not None:  # a new run took the store over: it serves reads
                return
            time.sleep(0.1)
