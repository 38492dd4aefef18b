"""`synthgen report`: the store as one HTML file with plots (synthgen/report/)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The DuckDB store.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("report.html"),
              show_default=True, help="The HTML file to write.")
def report(db: Path, out: Path) -> None:
    """Write one self-contained HTML file with plots of every run, stage and evaluation.

    Per run: answers/s and tokens/s over time, latency percentiles, errors by kind over
    time, finish reasons, prompt and answer lengths, cost; per stage a funnel; the
    student's training and eval curves. Works offline (no CDN) and during a run.
    """
    from ..report import build

    path = build(db, out)
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB); open it in a browser", err=True)
