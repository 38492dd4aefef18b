"""Which SQL a reader may run: statements that only read (SELECT, EXPLAIN), one by one.

The live server and `synthgen sql` both hold to it. It is the first line; the second is
where the query runs: a READ ONLY transaction (live) or a read-only, sandboxed connection
(no other files, settings locked), so a data-modifying CTE inside a SELECT fails too.
"""

from __future__ import annotations

import re

import duckdb

from ..errors import StoreError

READ_KINDS = frozenset({"SELECT", "EXPLAIN"})
# EXPLAIN [ANALYZE] [(options)]: what follows is a statement of its own, and EXPLAIN ANALYZE
# runs it (`EXPLAIN ANALYZE COPY ... TO 'x.csv'` writes the file)
_EXPLAIN = re.compile(r"\s*EXPLAIN\b\s*(?:ANALY[SZ]E\b\s*)?(?:\((?:[^()]|\([^()]*\))*\)\s*)?",
                      re.IGNORECASE)


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
        kind = statement_kind(statement)
        if kind not in READ_KINDS:
            where = f"statement {i} is" if len(statements) > 1 else "it is"
            raise StoreError(f"sql: read-only: only statements that read are run (SELECT, EXPLAIN, SHOW, "
                             f"DESCRIBE); {where} {kind}, so nothing was run")
    return [s.query for s in statements]


def statement_kind(statement: duckdb.Statement) -> str:
    """What a parsed statement does: its type, and for an EXPLAIN, "EXPLAIN" only where the
    statement it explains is a SELECT (anything else is named, and is no read)."""
    kind = statement.type.name
    if kind != "EXPLAIN":
        return kind
    inner = parser_kind(statement.query)
    if inner == "SELECT":
        return "EXPLAIN"
    return f"EXPLAIN of {inner}" if inner != "UNKNOWN" else "EXPLAIN of a statement it cannot read"


def parser_kind(query: str) -> str:
    """The kind of the statement an EXPLAIN wraps ("UNKNOWN" when it cannot be told: refused)."""
    match = _EXPLAIN.match(query)
    if match is None:
        return "UNKNOWN"
    parser = duckdb.connect()
    try:
        inner = parser.extract_statements(query[match.end():])
    except duckdb.Error:
        return "UNKNOWN"
    finally:
        parser.close()
    if len(inner) != 1:
        return "UNKNOWN"
    kind = inner[0].type.name
    return parser_kind(inner[0].query) if kind == "EXPLAIN" else kind
