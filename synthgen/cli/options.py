"""Options that several commands take, declared once so that their names, types and help
agree everywhere (a flag documented two ways is a flag someone reads wrong)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable)

DB = click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False),
                  help="The DuckDB store.")


def prices(scope: str = "") -> Callable[[F], F]:
    """--price-in, --price-out, --price-cached-in and --price-cache-write (pricing.py reads
    them); `scope` says where a price applies, e.g. ", every stage"."""
    options = [
        click.option("--price-in", type=float,
                     help=f"Price per million prompt tokens{scope} [default: the price table's for "
                          "--model; a model it lacks has no price]. Given, the table is not used."),
        click.option("--price-out", type=float,
                     help="Price per million completion tokens [default: the price table's]."),
        click.option("--price-cached-in", type=float,
                     help="Price per million prompt tokens read from the provider's cache [default: "
                          "the table's, else --price-in]."),
        click.option("--price-cache-write", type=float,
                     help="Price per million prompt tokens written to the provider's cache [default: "
                          "the table's, else --price-in]."),
    ]

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command
    return apply
