"""Students, all offline: the `tiny` preset, a local Hugging Face directory, a GGUF file.

`tiny` is a small randomly initialized Llama with the bundled teacher's tokenizer, so
token-level distillation against the bundled teacher works. A GGUF student is
dequantized by transformers; its quantization config is dropped so it can be saved as
plain safetensors.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .deps import StudentError

# The `tiny` Llama: about 7M parameters, most of them the 49k-token embedding (tied).
TINY = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}


@dataclass
class Student:
    """A loaded student and where it came from (recorded in the training config)."""

    model: Any
    tokenizer: Any
    spec: str
    kind: str  # "tiny" | "hf" | "gguf"


def teacher_gguf() -> Path:
    """The bundled teacher's GGUF file, fetched once per machine (synthgen.teacher.model)."""
    from ..errors import TeacherError
    from ..teacher.model import ensure_gguf

    try:
        return ensure_gguf()
    except TeacherError as exc:
        raise StudentError(f"the `tiny` student uses the bundled teacher's tokenizer: {exc}") from exc


def cache_dir() -> Path:
    base = os.environ.get("SYNTHGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "synthgen"
    )
    return Path(base)


def teacher_tokenizer_dir(gguf: Path) -> Path:
    """Where the tokenizer of `gguf` is cached once converted (`tokenizer.json` and its chat
    template): `--dry-run` reads it there with `tokenizers` alone, without transformers."""
    stat = gguf.stat()
    tag = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "tokenizers" / tag


def teacher_tokenizer() -> Any:
    """The bundled teacher's tokenizer, converted from GGUF once per machine and cached
    (reading it from GGUF takes ~10 s; the cached copy loads in well under a second)."""
    from transformers import AutoTokenizer

    gguf = teacher_gguf()
    target = teacher_tokenizer_dir(gguf)
    if not (target / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        tok.save_pretrained(str(tmp))
        try:
            tmp.rename(target)  # atomic; a concurrent process may have won the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(str(target))


def tiny_model(tokenizer: Any, seed: int, **overrides: int) -> Any:
    """A randomly initialized Llama sized by TINY (or `overrides`), seeded for repeatability."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **{**TINY, **overrides},
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_student(spec: str, seed: int = 0, tiny_overrides: dict[str, int] | None = None) -> Student:
    """`tiny`, a directory with config.json, or a .gguf file -> a float32 model + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec == "tiny":
        tok = teacher_tokenizer()
        return Student(tiny_model(tok, seed, **(tiny_overrides or {})), tok, spec, "tiny")
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise StudentError(f"{path}: no such GGUF file")
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        drop_quantization(model)
        return Student(model.float(), tok, str(path), "gguf")
    if path.is_dir() and (path / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path))
        return Student(model.float(), tok, str(path), "hf")
    raise StudentError(
        f"--student {spec!r}: expected 'tiny', a Hugging Face model directory (with "
        "config.json) or a .gguf file; models are not downloaded"
    )


def drop_quantization(model: Any) -> None:
    """A dequantized GGUF model still carries its quantization config, which makes
    save_pretrained refuse or write a config loaders misread; the weights are plain now."""
    for obj in (model, getattr(model, "config", None)):
        if obj is None:
            continue
        for attr in ("quantization_config", "hf_quantizer", "is_quantized", "quantization_method"):
            if attr in getattr(obj, "__dict__", {}):
                delattr(obj, attr)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Training pads batches: fall back to EOS as the pad token when there is none."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise StudentError(
            "the student's tokenizer has no chat template; give it one (tokenizer_config.json "
            "or chat_template.jinja) so conversations render the way it will be served"
        )
    return tokenizer
