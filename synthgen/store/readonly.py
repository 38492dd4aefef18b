"""Which SQL a reader may run: statements that only read (SELECT, EXPLAIN), one by one.

The live server and `synthgen sql` both hold to it. It is the first line; the second is
where the query runs: a READ ONLY transaction (live) or a read-only, sandboxed connection
(no other files, settings locked), so a data-modifying CTE inside a SELECT fails too.
"""

from __future__ import annotations

import duckdb

from ..errors import StoreError

READ_KINDS = frozenset({"SELECT", "EXPLAIN"})


def read_statements(query: str) -> list[str]:
    """The statements of `query`, each as text; StoreError naming the first that is not a
    read. Parsed by an in-memory DuckDB that touches nothing."""
    parser = duckdb.connect()
    try:
        statements = parser.extract_statements(query)
    except duckdb.Error as exc:
        raise StoreError(f"sql: {str(exc).strip().splitlines()[0]}") from None
    finally:
        parser.close()
    if not statements:
        raise StoreError("sql: the query is empty")
    for i, statement in enumerate(statements, 1):
        kind = statement.type.name
        if kind not in READ_KINDS:
            where = f"statement {i} is" if len(statements) > 1 else "it is"
            raise StoreError(f"sql: read-only: only statements that read are run (SELECT, EXPLAIN, SHOW, "
                             f"DESCRIBE); {where} {kind}, so nothing was run")
    return [s.query for s in statements]
