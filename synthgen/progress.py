"""Progress while a run goes: a live bar on a terminal, a plain line every few seconds
otherwise (logs, CI, nohup), and the summary at the end. Reads `Stats`; never writes it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from .engine import Stats


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def describe(stats: Stats) -> str:
    """One line: done/total, rates, errors by kind, in flight/limit, ETA."""
    elapsed = time.monotonic() - stats.started
    done = stats.already_done + stats.answered + stats.failed
    rps = _rate(stats.answered + stats.failed, elapsed)
    tps = _rate(stats.completion_tokens, elapsed)
    left = max(0, stats.total - done)
    eta = _duration(left / rps) if rps > 0 and left else ("-" if left else "0s")
    pct = 100.0 * done / stats.total if stats.total else 100.0
    parts = [
        f"{done:,}/{stats.total:,} ({pct:.1f}%)",
        f"{rps:,.1f} req/s",
        f"{tps:,.0f} tok/s",
        f"in flight {stats.in_flight}/{stats.limit}",
        f"failed {stats.failed:,}",
        f"ETA {eta}",
    ]
    if stats.errors:
        kinds = ", ".join(f"{k} {v:,}" for k, v in stats.errors.most_common(4))
        parts.append(f"errors: {kinds}")
    return " | ".join(parts)


async def report(stats: Stats, stream: TextIO | None = None, interval: float | None = None) -> None:
    """Run until cancelled: a rich live bar on a terminal, else a plain line per interval."""
    stream = stream or sys.stderr
    if stream.isatty():
        await _live(stats, stream, interval or 0.25)
        return
    interval = interval or 10.0
    while True:
        await asyncio.sleep(interval)
        stream.write(describe(stats) + "\n")
        stream.flush()


async def _live(stats: Stats, stream: TextIO, interval: float) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    progress = Progress(
        BarColumn(bar_width=16), TextColumn("{task.fields[line]}"),
        console=Console(file=stream), transient=True, auto_refresh=False,
    )
    task = progress.add_task("generate", total=stats.total or 1, line="")
    with progress:
        while True:
            done = stats.already_done + stats.answered + stats.failed
            progress.update(task, completed=done, total=stats.total or 1, line=describe(stats))
            progress.refresh()
            await asyncio.sleep(interval)
