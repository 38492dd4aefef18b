"""Would a student's chat template keep the teacher's reasoning? Asked before an export.

An export carries the reasoning as `reasoning_content`, or written into the content
(`export --think-in-content`). TRL renders each row through the student's chat template,
and many templates drop one or the other without a word: SmolLM2's ChatML and Llama's
have no `reasoning_content`; DeepSeek-R1's cuts everything up to `</think>` out of an
assistant's content. The student is then trained without the reasoning. The check renders
one probe conversation, in the form the export writes, and looks for the reasoning in the
text the template makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

REASONING = "reasoning-probe-7f3a"
ANSWER = "answer-probe-7f3a"


def load_tokenizer(spec: str) -> Any:
    """`teacher` (the bundled teacher's, SmolLM2's), a Hugging Face model directory, or a
    .gguf file -> its tokenizer. Nothing is downloaded."""
    from .deps import require_train_extra

    require_train_extra()
    from transformers import AutoTokenizer

    from .presets import teacher_tokenizer

    if spec in ("teacher", "tiny"):
        return teacher_tokenizer()
    path = Path(spec)
    if path.suffix == ".gguf" and path.is_file():
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if path.is_dir() and ((path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists()):
        return AutoTokenizer.from_pretrained(str(path))
    raise ConfigError(f"--tokenizer {spec!r}: expected 'teacher', a model directory with a tokenizer, "
                      "or a .gguf file; tokenizers are not downloaded")


def reasoning_warning(tokenizer: Any, think_in_content: str | None = None,
                      label: str | None = None) -> str | None:
    """A warning when `tokenizer`'s chat template (a tokenizer, or a spec for
    `load_tokenizer`) drops the reasoning in the form the export writes; None if it keeps it."""
    if isinstance(tokenizer, str):
        label = label or tokenizer
        tokenizer = load_tokenizer(tokenizer)
    label = label or getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    turn: dict[str, str] = {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
    if think_in_content is not None:
        turn = {"role": "assistant",
                "content": think_in_content.replace("{reasoning}", REASONING).replace("{content}", ANSWER)}
    probe = [{"role": "user", "content": "What is 2 + 2?"}, turn]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception as exc:  # jinja raises many kinds; all mean the template cannot say
        return f"--tokenizer {label}: its chat template failed on a reasoning turn ({exc})"
    if REASONING in text:
        return None
    if think_in_content is None:
        return (f"the chat template of {label} drops `reasoning_content`: a student trained on this "
                "export through it never sees the teacher's reasoning; export with --think-in-content "
                "to write it into the answer")
    return (f"the chat template of {label} drops the reasoning written into the content "
            f"({think_in_content!r}): a student trained on this export through it never sees it; "
            "try another --think-in-content form, or a template that keeps it")
