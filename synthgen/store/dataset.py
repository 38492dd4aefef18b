"""`to_dataset(db, query=...)`: the store's rows as a Hugging Face `datasets.Dataset`, in
memory, in the same shapes `export` writes (no temporary file in between).

`query` chooses the rows (any SQL over the store returning corpus columns: `corpus`, a
recipe stage's view, ...); without it, the rows `export` would write. `format` is one of
export's: messages, prompt-completion, preference. A store whose prompts mix images
(content parts) and text loads with every content as a list of parts (parts.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from ..hints import pip_install
from . import arrow_batches, connect
from .export import FORMATS, check_think_form, export_query, records
from .parts import any_parts, as_parts
from .readonly import read_statements


def to_dataset(db: str | Path, query: str | None = None, format: str = "messages",
               where: str | None = None, all_plans: bool = False, *, stage: str | None = None,
               include_truncated: bool = False, include_removed: bool = False,
               think_in_content: str | None = None) -> Any:
    """A `datasets.Dataset` of the store's rows in `format` (needs the datasets package:
    synthgen's `datasets` extra; the `train` extra has it too). Without `query`,
    the rows `export` writes with the same arguments (an empty Dataset where it writes
    nothing). `think_in_content`: the reasoning written into the content (see `export`)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"to_dataset needs the datasets package: {pip_install('datasets')}") from None
    if format not in FORMATS:
        raise ConfigError(f"to_dataset: format {format!r}: use one of {', '.join(FORMATS)}")
    check_think_form(think_in_content)
    con = connect(db, read_only=True)
    try:
        extra: list[str] = []
        if query is not None:
            if where is not None or stage is not None:
                raise ConfigError("to_dataset: give query, or where/stage, not both (put the condition "
                                  "in the query)")
            [sql] = read_statements(query)
        else:
            chosen = export_query(con, format, where, all_plans, stage, include_truncated, include_removed)
            sql, extra = chosen.sql, chosen.extra
        if not sql:  # a store without preference pairs
            return datasets.Dataset.from_list([])
        try:
            reader = arrow_batches(con, sql)
        except Exception as exc:
            raise StoreError(f"to_dataset: the query failed: {str(exc).splitlines()[0]}") from None
        rows = list(records(reader, format, extra, think_in_content))
    finally:
        con.close()
    if any_parts(rows):  # images beside text: one shape for Arrow (parts.py says why)
        rows = [as_parts(r) for r in rows]
    return datasets.Dataset.from_list(rows)
