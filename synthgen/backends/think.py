"""Reasoning written inline in an answer's content, split out into the reasoning column.

A DeepSeek-R1 distill (or Qwen3, QwQ...) served without a reasoning parser, and many
gateways, return the trace inside the content: `<think>...</think>answer`. Left there, the
trace is trained as part of the answer and `--with-reasoning` / the think-in-content export
cannot place it. vLLM splits it server-side with a reasoning parser; this is the same split,
client-side, applied where every answer is parsed (response.py), so online and batch answers
get it alike. The cases, as vLLM's deepseek_r1 / qwen3 parsers read them:

    <think>R</think>A        reasoning R, content A (whitespace around both trimmed)
    R</think>A               the chat template opened <think> itself (R1 distills): the same
    <think>R                 never closed (cut by max_tokens while thinking): all reasoning,
                             content "" (an answer with finish_reason 'length', reasoning kept)
    A                        no tags: content as is

A close tag after an open tag that does not begin the content ("use <think> and </think>")
is text about tags, not a trace, and is left alone. Tags are configurable
(`--think-tags OPEN,CLOSE`, or `none` to keep content as sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ThinkTags:
    """The pair of strings that delimit inline reasoning."""

    open: str
    close: str

    def __str__(self) -> str:
        return f"{self.open},{self.close}"


DEFAULT = ThinkTags("<think>", "</think>")
OFF = "none"


def parse_tags(value: Any) -> ThinkTags | None:
    """`"OPEN,CLOSE"`, a two-item list, a ThinkTags, or `none`/None/"" (no split) -> tags;
    anything else a ValueError saying what is expected."""
    if value is None or isinstance(value, ThinkTags):
        return value
    if isinstance(value, str):
        if value.strip().lower() in (OFF, ""):
            return None
        parts = value.split(",")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = []
    if len(parts) != 2 or not all(isinstance(p, str) and p.strip() for p in parts):
        raise ValueError(f"{value!r}: give the open and close tag as 'OPEN,CLOSE' (e.g. "
                         f"'<think>,</think>'), or '{OFF}' to keep the content as sent")
    open_tag, close_tag = (p.strip() for p in parts)
    if open_tag == close_tag:
        raise ValueError(f"{value!r}: the open and close tag must differ")
    return ThinkTags(open_tag, close_tag)


def split(content: str, tags: ThinkTags) -> tuple[str | None, str, int] | None:
    """(reasoning or None if empty, content, where the content starts in the text given),
    or None when `content` carries no inline reasoning."""
    body = content.lstrip()
    lead = len(content) - len(body)
    if body.startswith(tags.open):
        inner_at = lead + len(tags.open)
        end = content.find(tags.close, inner_at)
        if end < 0:  # still thinking when it stopped
            return (content[inner_at:].strip() or None), "", len(content)
    else:
        end = content.find(tags.close)
        if end < 0 or tags.open in content[:end]:
            return None
        inner_at = lead
    after = end + len(tags.close)
    rest = content[after:]
    answer_at = after + len(rest) - len(rest.lstrip())
    return (content[inner_at:end].strip() or None), content[answer_at:], answer_at


def answer_logprobs(logprobs: list[dict[str, Any]] | None, content: str,
                    answer_at: int) -> tuple[list[dict[str, Any]] | None, int | None]:
    """(the entries of the answer's own tokens, how many tokens came before them: the
    reasoning's, its tags included). The stored logprobs line up with the stored content
    (KD reads entry j as the target of answer token j). Where the tokens' text is not the
    content character for character (byte tokens), they cannot be cut at the tag: kept
    whole, and the count is unknown (None)."""
    if not logprobs or "".join(e.get("token") or "" for e in logprobs) != content:
        return logprobs, None
    at, kept = 0, []
    for entry in logprobs:
        if at >= answer_at:
            kept.append(entry)
        at += len(entry.get("token") or "")
    return kept or None, len(logprobs) - len(kept)
