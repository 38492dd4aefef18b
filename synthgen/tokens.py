"""Prompt tokens counted before anything is sent (what `--dry-run` prices).

The count is only as good as its tokenizer, so each counter says what it is:

    the bundled teacher's tokenizer   when the run would use the bundled local teacher and
                                      its model is on this machine (its chat template too)
    tiktoken's encoding               for a model name tiktoken knows (OpenAI's), when
                                      tiktoken is installed and its table loads
    characters / 4                    otherwise: an approximation, said as one

A `--pilot` then scales the count by what the teacher itself billed for the pilot's
prompts (estimate.py), so an approximate counter still gives a close figure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# What a chat format adds around each message and before the answer (OpenAI's documented
# overhead: 3 tokens a message, 3 to prime the reply; 4 a message is a common safe figure).
PER_MESSAGE = 4
PER_REPLY = 3
CHARS_PER_TOKEN = 4
TIKTOKEN_LOAD_S = 10.0  # tiktoken fetches its table on first use: an offline machine waits


@dataclass(frozen=True)
class Counter:
    """Counts the prompt tokens of requests' messages (canonical JSON text, as stored)."""

    name: str  # how the count is made, said beside it
    exact: bool  # False: an approximation
    count_many: Callable[[Sequence[str]], list[int]]


def counter_for(model: str | None, local: bool) -> Counter:
    """The best counter this machine has for `model` (see the module's list)."""
    if local:
        found = _local_counter()
        if found is not None:
            return found
    found = _tiktoken_counter(model)
    if found is not None:
        return found
    return Counter(f"an approximation: {CHARS_PER_TOKEN} characters a token, "
                   f"{PER_MESSAGE} a message", False, _approximate)


def _texts(messages: str) -> list[str]:
    out = []
    for message in orjson.loads(messages) or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):  # content parts: the text ones
            out.append(" ".join(p.get("text", "") for p in content if isinstance(p, dict)))
        else:
            out.append("")
    return out


def _approximate(batch: Sequence[str]) -> list[int]:
    counts = []
    for messages in batch:
        texts = _texts(messages)
        counts.append(sum(-(-len(t) // CHARS_PER_TOKEN) + PER_MESSAGE for t in texts) + PER_REPLY)
    return counts


def _tiktoken_counter(model: str | None) -> Counter | None:
    """tiktoken's encoding for `model`, if tiktoken is installed, knows the model, and its
    table loads within TIKTOKEN_LOAD_S (it downloads on first use, with no timeout of its own)."""
    if not model:
        return None
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    loaded: list[Any] = []

    def load() -> None:
        try:
            loaded.append(tiktoken.get_encoding(name))
        except Exception:  # offline, a broken cache: the approximation serves
            return

    thread = threading.Thread(target=load, name="synthgen-tiktoken", daemon=True)
    thread.start()
    thread.join(TIKTOKEN_LOAD_S)
    if not loaded:
        return None
    encoding = loaded[0]

    def count(batch: Sequence[str]) -> list[int]:
        out = []
        for messages in batch:
            texts = _texts(messages)
            out.append(sum(len(n) for n in encoding.encode_ordinary_batch(texts))
                       + PER_MESSAGE * len(texts) + PER_REPLY)
        return out

    return Counter(f"tiktoken's {name} for {model}, {PER_MESSAGE} a message", True, count)


def _local_counter() -> Counter | None:
    """The bundled teacher's own tokenizer and chat template, where its model is already on
    this machine (never fetched for an estimate). Read from the converted copy with
    `tokenizers` and jinja2 (transformers' import alone costs seconds); converted first,
    once per machine, with transformers where no copy is there yet."""
    try:
        from .student.presets import teacher_tokenizer, teacher_tokenizer_dir
        from .teacher.model import find_gguf

        gguf = find_gguf()
        if gguf is None:
            return None
        where = teacher_tokenizer_dir(gguf)
        if not (where / "tokenizer.json").exists():
            teacher_tokenizer()  # converts and caches it
        return _cached_counter(where)
    except Exception:  # no transformers, an unreadable copy: the approximation serves
        return None


def _cached_counter(where: Path) -> Counter | None:
    """A counter from a tokenizer directory: tokenizer.json and the chat template (its own
    file, or tokenizer_config.json's), rendered as transformers renders it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from tokenizers import Tokenizer

    config = orjson.loads((where / "tokenizer_config.json").read_bytes())
    source = where / "chat_template.jinja"
    text = source.read_text(encoding="utf-8") if source.exists() else config.get("chat_template")
    if not isinstance(text, str):
        return None
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(text)
    tokenizer = Tokenizer.from_file(str(where / "tokenizer.json"))
    special = {k: config.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    # Without offsets where this tokenizers has it (~20% faster: only the lengths are used)
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    def count(batch: Sequence[str]) -> list[int]:
        rendered = [template.render(messages=orjson.loads(m), add_generation_prompt=True, **special)
                    for m in batch]
        return [len(e.ids) for e in encode(rendered, add_special_tokens=False)]

    return Counter("the bundled teacher's tokenizer and chat template", True, count)
