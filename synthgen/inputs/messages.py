"""One input row -> OpenAI chat messages plus metadata, or `BadRow` saying what is wrong.

Every reader shares these rules and messages, so a bad row reads the same whatever the
format it came in.
"""

from __future__ import annotations

from typing import Any, Protocol


class Renders(Protocol):
    """A template (templates.Template; that module loads jinja2, so it is only imported by
    runs that use --template)."""

    def render(self, row: dict[str, Any]) -> list[dict[str, str]]: ...


ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Fields the export writes beside the metadata: an input field by one of these names
# would overwrite synthgen's own in every exported row, so the row is refused instead.
RESERVED = ("request_id", "sample_index", "finish_reason", "model", "response", "messages")


class BadRow(Exception):
    """One input row is unusable; the message says why (the caller adds the line)."""


class RenderError(Exception):
    """A row could not be rendered by its template; the message names the missing variable."""


Fields = dict[str, Any]


def to_messages(fields: Fields, template: Renders | None) -> tuple[list[dict[str, Any]], Fields]:
    """Return (messages, metadata) for one row, or raise BadRow saying what is wrong."""
    messages = messages_of(fields, template)
    if template is not None:
        return messages, {k: _jsonable(v) for k, v in fields.items()}
    return messages, {k: _jsonable(v) for k, v in fields.items() if k not in ("prompt", "messages")}


def messages_of(fields: Fields, template: Renders | None) -> list[dict[str, Any]]:
    """The row's messages, or BadRow: every rule a row must pass (validating the whole input
    before anything is sent runs this alone, without building the metadata)."""
    if template is not None:
        _check_names(fields, ())
        try:
            return _check_turns(template.render(fields))
        except RenderError as exc:
            raise BadRow(str(exc)) from None
    _check_names(fields, ("prompt", "messages"))
    prompt = fields.get("prompt")
    messages = fields.get("messages")
    if prompt is not None and messages is not None:
        raise BadRow("has both 'prompt' and 'messages'; give one")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise BadRow(f"'prompt' must be a string, got {_type(prompt)}")
        if not prompt.strip():
            raise BadRow("'prompt' is empty")
        return [{"role": "user", "content": prompt}]
    if messages is not None:
        return _check_messages(messages)
    raise BadRow("needs a 'prompt' string or a 'messages' list")


def _check_names(fields: Fields, consumed: tuple[str, ...]) -> None:
    for name in RESERVED:
        if name in fields and name not in consumed:
            raise BadRow(f"field {name!r} is a name synthgen's export uses for its own column "
                         f"({', '.join(RESERVED)}); rename it in the input")


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise BadRow(f"'messages' must be a non-empty list, got {_type(messages)}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise BadRow(f"messages[{i}] must be an object, got {_type(msg)}")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise BadRow(f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r}")
        content = msg.get("content")
        if not isinstance(content, str | list) and not (content is None and role == "assistant"):
            raise BadRow(f"messages[{i}].content must be a string or a list of parts, got {_type(content)}")
        if isinstance(content, list):
            _check_parts(content, i)
    return _check_turns(messages)


def _check_parts(parts: list[Any], i: int) -> None:
    """OpenAI's content parts: objects with a `type`; a text part carries its `text`."""
    for j, part in enumerate(parts):
        where = f"messages[{i}].content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRow(f"{where} must be a content part, an object with a 'type' "
                         f"(text, image_url, ...), got {_type(part)}")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise BadRow(f"{where} is a text part without a 'text' string")


ANSWERED_ROLES = ("user", "tool")


def _check_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The teacher answers the last message: it must be the user's (or a tool's result),
    with something in it. A conversation that ends with the assistant would be stored, and
    exported, with two assistant turns in a row; one of only a system prompt asks nothing."""
    last = messages[-1] if messages else {}
    role = last.get("role") if isinstance(last, dict) else None
    if role not in ANSWERED_ROLES:
        raise BadRow(f"the last message is {role!r}; the teacher answers the last message, so it must "
                     "be the user's (or a tool result): drop a trailing assistant turn, or add the "
                     "user's message")
    for i, msg in enumerate(messages):
        if msg.get("role") == "user" and not _has_content(msg.get("content")):
            raise BadRow(f"messages[{i}] (user) has empty content")
    return messages


def _has_content(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return isinstance(content, list) and bool(content)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _jsonable(value: Any) -> Any:
    """Metadata from Parquet/SQL may hold dates or decimals; keep them as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
