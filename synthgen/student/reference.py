"""The teacher as a local model: what pruned students are cut from, and what `synthgen
eval` measures the student against (its own NLL on the held-out answers, its size, its
decode speed).

`--teacher-model` is a Hugging Face directory or a .gguf file; the default is the bundled
teacher's GGUF. Dequantizing a GGUF takes ~30 s (SmolLM2-135M), and a pruned run needs the
teacher twice (to cut the student, then to compare against it), so the dequantized model
is saved once as a plain HF directory under ~/.cache/synthgen/dequantized/ (apart
from the launcher's records in teachers/) and loaded from there in about a second
afterwards, like the tokenizer cache in presets.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from .deps import StudentError
from .presets import Student, cache_dir, drop_quantization, teacher_gguf


def teacher_path(spec: str | None) -> Path:
    """The teacher a run uses: `spec` checked, or the bundled GGUF."""
    if spec is None:
        return teacher_gguf()
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise StudentError(f"--teacher-model {spec}: no such GGUF file")
        return path
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise StudentError(
        f"--teacher-model {spec!r}: expected a Hugging Face model directory (with config.json) "
        "or a .gguf file; models are not downloaded"
    )


def dequantized(gguf: Path) -> Path:
    """The GGUF as an HF directory in the cache, converted on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.resolve().stat()
    tag = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "dequantized" / tag
    if (target / "config.json").exists():
        return target
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    drop_quantization(model)
    tmp = target.with_name(f"{tag}.tmp{os.getpid()}")
    model.float().save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "source.txt").write_text(f"{gguf.resolve()}\n")
    try:
        tmp.rename(target)  # atomic; a concurrent process may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_teacher(spec: str | None) -> Student:
    """The teacher in float32, eval mode, with its tokenizer (kind 'teacher')."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = teacher_path(spec)
    directory = dequantized(path) if path.suffix == ".gguf" else path
    tok = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype="float32")
    return Student(model.eval(), tok, str(path), "teacher")


def parameters(model: Any) -> int:
    """Parameters counted once (tied embeddings are one tensor)."""
    return sum(p.numel() for p in model.parameters())
