"""`synthgen merge --db MAIN SHARD...`: fold shard stores into a main store."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The main store to fold the shards into (created if missing).")
@click.argument("shards", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
def merge(db: Path, shards: tuple[Path, ...]) -> None:
    """Fold shard stores into --db: each answer and failure once, keyed by request id.

    What --db already holds is kept as it is, so merging the same shards again changes
    nothing. `generate --ray --shards N` does this itself at the end of every run.
    """
    from ..store.merge import merge_stores

    run_id, folded = merge_stores(db, list(shards))
    for shard, f in zip(shards, folded, strict=True):
        click.echo(f"{shard}: {f.answers:,} answers, {f.failures:,} failures new to {db}"
                   + (f" ({f.requests:,} requests added)" if f.requests else ""), err=True)
    if run_id is None:
        click.echo(f"nothing to merge: {db} already holds every answer and failure of these shards",
                   err=True)
    else:
        total = sum(f.answers for f in folded)
        click.echo(f"run {run_id}: merged {total:,} answers into {db}", err=True)
