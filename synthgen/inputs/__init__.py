"""Inputs: rows from a file or a query, each turned into chat messages and metadata.

    readers     JSONL / CSV / Parquet / DuckDB query -> (line, fields), streamed
    messages    fields -> (messages, metadata), or BadRow with the reason
    templates   --template NAME: prompts/NAME.jinja or .yaml, rendered in a sandbox
                (imported only when a run uses one: it loads jinja2)
"""

from .messages import BadRow, Fields, messages_of, to_messages
from .readers import read_rows

__all__ = ["BadRow", "Fields", "messages_of", "read_rows", "to_messages"]
