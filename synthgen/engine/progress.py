"""What a run looks like while it goes: a `Snapshot` of `Stats` (plain numbers, JSON-able,
the same for this process's display and for `synthgen status --watch` in another one), a
plain line of text from it, and the task that samples the stats and hands them on.

The library draws nothing by itself: `generate(progress=stream)` writes plain lines to
that stream, `generate(on_progress=fn)` calls `fn(stats)`; the CLI's live display is one
such callback (cli/progress.py), and draws the same `Snapshot`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TextIO

from ..types import Stats

# A run whose settled count has not moved for this long is "stalled", not "ETA 3s".
STALL_AFTER = 10.0
SAMPLE_EVERY = 1.0


@dataclass
class Snapshot:
    """Everything the progress display shows, at one moment. Rates and the ETA are over
    the recent window (`types.RATE_WINDOW`), not the mean since the start."""

    elapsed: float = 0.0
    done: int = 0
    total: int = 0
    planning: bool = False
    answered: int = 0
    failed: int = 0
    already_done: int = 0
    in_flight: int = 0
    limit: int = 0
    req_s: float | None = None  # requests settled (answered or failed) per second
    tok_s: float | None = None  # completion tokens per second
    eta_s: float | None = None  # None: unknown (no rate yet, or stalled)
    stalled_s: float = 0.0  # seconds since the last request settled, when over STALL_AFTER
    rpm: float | None = None  # requests sent per minute, measured over the window
    tpm: float | None = None  # tokens (in + out) per minute, measured
    rpm_limit: float | None = None
    tpm_limit: float | None = None
    learned_rps: float | None = None  # a pace learned from 429s (runs without --rpm)
    paused_s: float = 0.0  # a shared pause (429 / spent quota) still to sit out
    server_waiting: float | None = None  # requests queued at a vLLM teacher (its /metrics)
    server_kv: float | None = None  # its fullest KV cache, 0..1
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts, by kind
    failures: dict[str, int] = field(default_factory=dict)  # requests filed as failed, by kind
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    @property
    def left(self) -> int:
        return max(0, self.total - self.done)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """From `as_dict()` output (another process's, perhaps another version's): keys this
        version does not know are dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def snapshot(stats: Stats, now: float | None = None) -> Snapshot:
    """The display's numbers from `stats` and its window (safe to call from another thread
    while the engine writes: the counters it copies are read once each)."""
    now = time.monotonic() if now is None else now
    window, pacing = stats.window, dict(stats.pacing)
    req_s = window.per_second("settled")
    sent_s = window.per_second("sent")
    pt_s, ct_s = window.per_second("prompt_tokens"), window.per_second("completion_tokens")
    snap = Snapshot(
        elapsed=now - stats.started, done=stats.done, total=stats.total, planning=stats.planning,
        answered=stats.answered, failed=stats.failed, already_done=stats.already_done,
        in_flight=stats.in_flight, limit=stats.limit, req_s=req_s, tok_s=ct_s,
        rpm=None if sent_s is None else sent_s * 60,
        tpm=None if pt_s is None or ct_s is None else (pt_s + ct_s) * 60,
        rpm_limit=pacing.get("rpm_limit"), tpm_limit=pacing.get("tpm_limit"),
        learned_rps=pacing.get("learned_rps"), paused_s=pacing.get("paused_s", 0.0),
        server_waiting=stats.server_waiting, server_kv=stats.server_kv,
        errors=_copy(stats.errors), failures=_copy(stats.failures),
        prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens, cost=stats.cost,
    )
    if window.last_change is not None and snap.left and now - window.last_change >= STALL_AFTER:
        snap.stalled_s = now - window.last_change
    elif req_s and snap.left:
        snap.eta_s = snap.left / req_s
    elif not snap.left and not stats.planning:
        snap.eta_s = 0.0
    return snap


def _copy(counter: dict[str, int]) -> dict[str, int]:
    """A copy of a Counter that another thread may be adding a key to."""
    for _ in range(10):
        try:
            return dict(counter)
        except RuntimeError:  # changed size during iteration
            continue
    return {}


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def compact(n: float) -> str:
    """1,234 / 12.3k / 4.56M: a number that keeps its meaning in a few columns."""
    n = float(n)
    for at, unit, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(n) >= at:
            return f"{n / unit:.3g}{suffix}"
    return f"{n:,.0f}"


def rate(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def eta(snap: Snapshot) -> str:
    if snap.stalled_s:
        return f"stalled {duration(snap.stalled_s)}"
    if snap.eta_s is None:
        return "-"
    return duration(snap.eta_s)


def kinds(counts: dict[str, int], most: int = 4) -> str:
    """'timeout 3, http_500 1' (the most frequent first; '+N more' past `most`)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v:,}" for k, v in ranked[:most])
    return text + (f", +{len(ranked) - most} more" if len(ranked) > most else "")


def fields_of(snap: Snapshot) -> list[tuple[str, str]]:
    """The display as (name, text) pieces, in reading order; both the plain line and the
    terminal display are laid out from these, so they always hold the same numbers."""
    total = f"{snap.total:,}" + ("+" if snap.planning else "")
    out = [
        ("done", f"{snap.done:,}/{total} ({snap.percent:.1f}%)"),
        ("rate", f"{rate(snap.req_s)} req/s"),
        ("tokens_rate", f"{rate(snap.tok_s, 0)} tok/s"),
        ("eta", f"ETA {eta(snap)}"),
        ("in_flight", f"in flight {snap.in_flight}/{snap.limit}"),
    ]
    if snap.rpm_limit:
        out.append(("rpm", f"rpm {compact(snap.rpm or 0)}/{compact(snap.rpm_limit)}"))
    if snap.tpm_limit:
        out.append(("tpm", f"tpm {compact(snap.tpm or 0)}/{compact(snap.tpm_limit)}"))
    if snap.learned_rps:
        out.append(("learned", f"paced {snap.learned_rps:.2f}/s (429s)"))
    if snap.paused_s > 0:
        out.append(("paused", f"paused {snap.paused_s:.0f}s"))
    if snap.server_waiting is not None:
        kv = f", KV cache {snap.server_kv:.0%}" if snap.server_kv is not None else ""
        out.append(("server_queue", f"server queue {snap.server_waiting:.0f}{kv}"))
    failed = f"failed {snap.failed:,}"
    if snap.failures:
        failed += f" ({kinds(snap.failures)})"
    out.append(("failed", failed))
    if snap.errors:
        out.append(("errors", f"errors: {kinds(snap.errors)}"))
    out.append(("tokens", f"tokens {compact(snap.prompt_tokens)} in / {compact(snap.completion_tokens)} out"))
    if snap.cost is not None:
        out.append(("cost", f"${snap.cost:,.4f}"))
    out.append(("elapsed", f"elapsed {duration(snap.elapsed)}"))
    return out


def describe(what: Stats | Snapshot) -> str:
    """One plain line: done/total, windowed rates, ETA, in flight/limit, pacing, failures
    and errors by kind, tokens, cost, elapsed."""
    snap = snapshot(what) if isinstance(what, Stats) else what
    return " | ".join(text for _, text in fields_of(snap))


async def report(stats: Stats, stream: TextIO | None = None, interval: float | None = None,
                 callback: Callable[[Stats], None] | None = None,
                 pacing: Callable[[], dict[str, float]] | None = None) -> None:
    """Until cancelled: sample `stats` (and `pacing()`, the governor's current pace) about
    once a second, so the window behind the rates is kept even when nobody watches here
    (`status --watch` may, from another process); and a plain line to `stream` every
    `interval` (default 10 s), and/or `callback(stats)` every `interval` (default 0.25 s)."""
    interval = interval or (0.25 if callback is not None else 10.0)
    tick = min(interval, SAMPLE_EVERY) if stream is not None or callback is not None else SAMPLE_EVERY
    next_sample = next_report = time.monotonic()
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        if now >= next_sample:
            if pacing is not None:
                stats.pacing = pacing()
            stats.sample(now)
            next_sample = now + SAMPLE_EVERY - 0.01
        if now < next_report + interval - 0.001:
            continue
        next_report = now
        if callback is not None:
            callback(stats)
        if stream is not None:
            stream.write(describe(stats) + "\n")
            stream.flush()
