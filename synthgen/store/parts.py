"""Content parts (images beside text) in exports and `to_dataset`: one shape per file.

A prompt's content is a string or, for an image prompt, a list of OpenAI content parts
(`{"type": "text", "text": ...}`, `{"type": "image_url", "image_url": {"url": ...}}`),
stored as sent and exported as stored: never flattened, since the parts are what the
teacher saw. A store that mixes the two cannot become one Arrow column (Hugging Face
datasets, Parquet): "cannot mix list and non-list values". So where any row of an export
holds parts, every content of every row is written as a list of parts, a string becoming
one text part. That is the shape HF datasets load, the one multimodal chat templates
(processors' `apply_chat_template`) and TRL's vision-language SFT read, and what TRL
itself turns a string into for such models. Keeping messages as JSON strings instead
would load, but no trainer reads a string column as a conversation. A store without parts
keeps plain string contents (the only kind a text-only student's template renders).
Parts are kept as the OpenAI API spells them: an `image_url` part carries its URL or data
URL; mapping it to a processor's own image field is the training script's, which knows
the processor.
"""

from __future__ import annotations

from typing import Any

CONVERSATIONS = ("messages", "prompt", "completion", "chosen", "rejected")

# A row of the query whose messages hold a list content (a JSON column or its text)
PARTS_SQL = """
SELECT EXISTS (SELECT 1 FROM ({sql}) AS q WHERE list_bool_or(list_transform(
    json_extract(q.messages::JSON, '$[*].content'), lambda c: json_type(c) = 'ARRAY')))
"""


def has_parts(con: Any, sql: str) -> bool:
    """Whether any row of `sql` has a message whose content is a list of parts."""
    try:
        [(found,)] = con.execute(PARTS_SQL.format(sql=sql)).fetchall()
    except Exception:  # no messages column to look in (a query of its own): nothing to unify
        return False
    return bool(found)


def any_parts(records: list[dict[str, Any]]) -> bool:
    """Whether any record's conversation holds a list content (records in memory)."""
    return any(isinstance(turn, dict) and isinstance(turn.get("content"), list)
               for record in records for key in CONVERSATIONS
               for turn in (record.get(key) if isinstance(record.get(key), list) else ()))


def as_parts(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every string content of its conversations as one text part."""
    for key in CONVERSATIONS:
        turns = record.get(key)
        if isinstance(turns, list):
            record[key] = [_parted(t) for t in turns]
    return record


def _parted(turn: Any) -> Any:
    if isinstance(turn, dict) and isinstance(turn.get("content"), str):
        return {**turn, "content": [{"type": "text", "text": turn["content"]}]}
    return turn
