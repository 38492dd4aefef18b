"""`to_dataset(db, query=...)`: the store's rows as a Hugging Face `datasets.Dataset`, in
memory, in the same shapes `export` writes (no temporary file in between).

`query` chooses the rows (any SQL over the store returning corpus columns: `corpus`, a
recipe stage's view, ...); without it, the rows `export` would write. `format` is one of
export's: messages, prompt-completion, preference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from . import arrow_batches, connect
from .export import FORMATS, export_query, records
from .readonly import read_statements


def to_dataset(db: str | Path, query: str | None = None, format: str = "messages",
               where: str | None = None, all_plans: bool = False) -> Any:
    """A `datasets.Dataset` of the store's rows in `format` (needs the datasets package:
    `pip install 'synthgen[datasets]'`; the [train] extra has it too)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("to_dataset needs the datasets package: pip install 'synthgen[datasets]'") from None
    if format not in FORMATS:
        raise ConfigError(f"to_dataset: format {format!r}: use one of {', '.join(FORMATS)}")
    if query is not None:
        if where is not None:
            raise ConfigError("to_dataset: give query or where, not both (put the condition in the query)")
        [sql] = read_statements(query)
    else:
        sql = export_query(format, where, all_plans)
    con = connect(db, read_only=True)
    try:
        try:
            reader = arrow_batches(con, sql)
        except Exception as exc:
            raise StoreError(f"to_dataset: the query failed: {str(exc).splitlines()[0]}") from None
        rows = list(records(reader, format))
    finally:
        con.close()
    return datasets.Dataset.from_list(rows)
