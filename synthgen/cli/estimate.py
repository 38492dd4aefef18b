"""`synthgen generate --dry-run [--pilot N]` and `synthgen run RECIPE --dry-run`: the estimate
(synthgen/estimate.py), said."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import GenerateConfig
from ..errors import InputError, RunAborted
from ..estimate import Estimate, estimate
from ..pricing import unpriced
from .progress import progress_options, show_library_messages

if TYPE_CHECKING:
    from ..recipes import Recipe


def dry_run(cfg: GenerateConfig, pilot: int, progress_interval: float | None) -> None:
    """Plan, (pilot,) estimate and print; a bad input or a stopped pilot is a clear error."""
    try:
        with show_library_messages(), progress_options(progress_interval) as shown:
            found = estimate(cfg, pilot, **shown)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    except RunAborted as exc:
        raise click.ClickException(f"the pilot stopped early: {exc}") from None
    click.echo("\n".join(describe(found, cfg.db)))


def recipe_dry_run(spec: Recipe, db: Path, options: dict[str, Any], pilot: int,
                   progress_interval: float | None) -> None:
    """`synthgen run RECIPE --dry-run`: the first generating stage's estimate, and why the
    others have none."""
    from ..recipes.estimate import estimate_recipe

    try:
        with show_library_messages(), progress_options(progress_interval) as shown:
            found = estimate_recipe(spec, db, options, pilot, **shown)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    except RunAborted as exc:
        raise click.ClickException(f"the pilot stopped early: {exc}") from None
    lines = [f"recipe {spec.name}:"]
    for s in found:
        head = f"stage {s.stage.position}/{len(found)} {s.stage.name}"
        if s.estimate is None:
            lines.append(f"{head}: not estimated: {s.why_not}")
        else:
            lines += [f"{head}:", *("  " + line for line in describe(s.estimate, db))]
    click.echo("\n".join(lines))


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def describe(e: Estimate, db: object) -> list[str]:
    """The estimate as lines: what is pending, its tokens, and the cost range."""
    p = e.pilot
    lines = []
    if p is None:
        lines.append(f"dry run: nothing was sent; the plan is stored in {db} (run {e.run_id}, "
                     "'planned'), and the run reuses it")
    else:
        each = f", {p.mean_completion:,.1f} each" if p.mean_completion is not None else ""
        failed = f", {p.failed:,} failed" if p.failed else ""
        lines.append(f"pilot (run {p.run_id}): {p.sent:,} requests sent{failed}, {p.answered:,} "
                     f"answered with usage: {p.prompt_tokens:,} prompt tokens, "
                     f"{p.completion_tokens:,} completion tokens{each}; cost {_usd(p.cost)}; stored in {db}")
    lines.append(f"  requests: {e.pending:,} pending of {e.total:,} planned ({e.done:,} answered or "
                 "failed already)")
    scaled = (f", scaled by {p.prompt_scale:.3f} to what the teacher billed for the pilot's prompts"
              if p is not None and p.answered else "")
    lines.append(f"  prompt tokens: {'' if e.exact_counter else '~'}{e.prompt_tokens:,} "
                 f"(counted with {e.counter}{scaled})")
    if not e.pending:
        lines.append("  nothing is left to send" + ("" if e.retry_failed else
                                                     " (failed requests are sent again only with "
                                                     "--retry-failed)"))
        return lines
    most = ("no bound: --max-tokens is not sent" if e.output_most is None or e.max_tokens is None
            else f"at most {e.output_most:,} (--max-tokens {e.max_tokens:,} each)")
    if e.output_expected is not None:
        lines.append(f"  output tokens: ~{round(e.output_expected):,} (the pilot's mean); {most}")
    else:
        lines.append(f"  output tokens: {most}" + ("" if p is None else "; the pilot measured none"))
    if e.local:
        lines.append("  cost: none billed (the bundled local teacher answers on this machine)")
        return lines
    if not e.prices.known:
        lines.append(f"  cost: unknown: {unpriced(e.model)}")
        return lines
    for label, batch in (("online", False), ("batch ", True)):
        lines.append(f"  cost {label}: " + _range(e, batch))
    lines.append(f"  prices: {e.prices.describe()}; batch less {e.batch_prices.discount:.0%}")
    return lines


def _range(e: Estimate, batch: bool) -> str:
    low, expected, high = e.cost(batch)
    said = f"{_usd(low)} (prompts alone)"
    if expected is not None:
        said += f", ~{_usd(expected)} expected"
        if e.pilot is not None and e.pilot.cost is not None and not batch:
            said += f" (~{_usd(expected + e.pilot.cost)} with the pilot's own)"
    said += f", at most {_usd(high)}" if high is not None else ", no upper bound without --max-tokens"
    return said
