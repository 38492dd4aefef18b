"""What a run looks like while it goes: one line of text from `Stats`, and the task that
hands it to whoever asked (a stream, a callback). Reads `Stats`; never writes it.

The library draws nothing by itself: `generate(progress=stream)` writes plain lines to
that stream, `generate(on_progress=fn)` calls `fn(stats)`; the CLI's live bar is one
such callback (cli/progress.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TextIO

from ..types import Stats


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def describe(stats: Stats) -> str:
    """One line: done/total, rates, errors by kind, in flight/limit, ETA."""
    elapsed = time.monotonic() - stats.started
    done = stats.done
    rps = _rate(stats.answered + stats.failed, elapsed)
    tps = _rate(stats.completion_tokens, elapsed)
    left = max(0, stats.total - done)
    eta = duration(left / rps) if rps > 0 and left else ("-" if left else "0s")
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


async def report(stats: Stats, stream: TextIO | None = None, interval: float | None = None,
                 callback: Callable[[Stats], None] | None = None) -> None:
    """Until cancelled: a plain line to `stream` every `interval` (default 10 s), and/or
    `callback(stats)` every `interval` (default 0.25 s). With neither, returns at once."""
    if stream is None and callback is None:
        return
    interval = interval or (0.25 if callback is not None else 10.0)
    while True:
        await asyncio.sleep(interval)
        if callback is not None:
            callback(stats)
        if stream is not None:
            stream.write(describe(stats) + "\n")
            stream.flush()
