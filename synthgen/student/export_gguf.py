"""`synthgen student export`: a trained student as one GGUF file, the format llama.cpp (and
the laptop and phone runtimes built on it) loads, checked against the student it came from.

    1. the student directory as Hugging Face wrote it; an unmerged LoRA run is merged into
       its base first (a GGUF has no adapters); a tokenizer without a chat template is
       refused, because llama-server would then fall back to a template the student never
       saw in training, and every answer would be off without any error
    2. llama.cpp's own converter (teacher/gguf_tools.py) writes f32, f16 or q8_0; q4_k_m is
       converted at f32 and then quantized by llama-quantize (compiled once per machine)
    3. gguf_check.py: the tokenizer and chat template in the file are the student's, and
       the file served by llama-server answers a few prompts greedily as transformers does

The file is written beside `--out` and renamed into place once converted, so a failed
export never leaves a half-written GGUF under the name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..hints import pip_install
from .deps import StudentError, require_train_extra
from .log import echo_or_log, quiet

DEFAULT_QUANT = "q8_0"
# What llama.cpp's converter imports beyond the train extra's core (its requirements file).
CONVERTER_MODULES = ("numpy", "sentencepiece", "safetensors")
PLAIN_PROMPTS = (
    "Name three colours.",
    "What is the capital of France?",
    "Explain what a compiler does in one sentence.",
    "Give me a tip for learning to cook.",
)


def quant_names() -> tuple[str, ...]:
    from ..teacher.gguf_tools import QUANTS

    return tuple(QUANTS)


def require_converter_modules() -> None:
    missing = [m for m in CONVERTER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise StudentError(
            f"llama.cpp's converter needs {', '.join(missing)}: install them with: {pip_install('train')}"
        )


def source_dir(spec: str) -> Path:
    """The Hugging Face directory to convert: `spec` itself, or, for `teacher` (the bundled
    teacher) or a .gguf file, that model dequantized once into the cache (reference.py).
    Exporting the teacher the same way is what makes `compare` fair: teacher and student
    at the same quantization, by the same converter and quantizer."""
    if spec == "teacher" or spec.endswith(".gguf"):
        from ..errors import TeacherError
        from ..teacher.model import ensure_gguf
        from .reference import dequantized

        try:
            gguf = ensure_gguf() if spec == "teacher" else Path(spec)
        except TeacherError as exc:
            raise StudentError(f"--model teacher: {exc}") from exc
        if not gguf.is_file():
            raise StudentError(f"--model {spec}: no such GGUF file")
        return dequantized(gguf)
    return Path(spec)


def load_for_export(model_dir: Path) -> tuple[Any, Any, bool]:
    """The student (merged if it is an unmerged LoRA run), its tokenizer, and whether it was
    merged; refuses a directory it cannot serve faithfully."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not model_dir.is_dir():
        raise StudentError(f"--model {model_dir}: no such directory")
    adapter = (model_dir / "adapter_config.json").is_file()
    if not adapter and not (model_dir / "config.json").is_file():
        raise StudentError(
            f"--model {model_dir}: not a model directory (no config.json or adapter_config.json)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise StudentError(f"--model {model_dir}: no tokenizer to export ({exc})") from exc
    if not tok.chat_template:
        raise StudentError(
            f"--model {model_dir}: the student's tokenizer has no chat template, so llama-server "
            "would render its prompts with a default template it was never trained on. Add the "
            "template it was trained with (chat_template.jinja, or chat_template in "
            "tokenizer_config.json) and export again"
        )
    if adapter:
        from .evaluate import load_trained

        run = json.loads((model_dir / "synthgen_train.json").read_text()) if (
            model_dir / "synthgen_train.json").is_file() else None
        if run is None:
            raise StudentError(f"--model {model_dir}: a LoRA adapter without synthgen_train.json "
                               "(its base model is unknown); merge it yourself and export the result")
        model, _ = load_trained(model_dir, run["config"])
        return model.merge_and_unload().float().eval(), tok, True
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    return model.eval(), tok, False


def check_prompts(model_dir: Path, db: str | None, count: int) -> tuple[list[list[dict[str, str]]], str]:
    """The prompts the check answers: held-out prompts of the student's own split when the
    store is given, else a few plain questions; and a word on which it was."""
    if db is None:
        return [[{"role": "user", "content": p}] for p in PLAIN_PROMPTS[:count]], "plain prompts"
    from .served import rows_for

    # The student's own held-out rows; a model that has no split (the teacher) gets
    # synthgen train's default one.
    own = model_dir if (model_dir / "split.json").is_file() else None
    rows, _ = rows_for(db, str(own) if own else None, None)
    seen: list[list[dict[str, str]]] = []
    for row in rows:
        if row.messages not in seen:
            seen.append(row.messages)
    return seen[:count], "held-out prompts"


@quiet()
def export_gguf(
    model_dir: str,
    out: str,
    quant: str = DEFAULT_QUANT,
    db: str | None = None,
    prompts: int = 4,
    max_new_tokens: int = 32,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Convert, quantize and check one student; returns the check's report (gguf_check)."""
    from ..teacher.gguf_tools import QUANTS, convert, quantize

    target = Path(out)
    # The flags first: a typo is named before anything is imported, loaded or installed.
    if quant not in QUANTS:
        raise StudentError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    if target.suffix != ".gguf":
        raise StudentError(f"--out {out}: the file name must end in .gguf")
    if prompts < 0 or max_new_tokens < 1:
        raise StudentError("--prompts must be 0 or more and --max-new-tokens at least 1")
    require_train_extra()
    require_converter_modules()
    from .gguf_check import check_gguf

    echo = echo_or_log(echo)
    source = source_dir(model_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    model, tok, merged = load_for_export(source)
    messages, where = check_prompts(source, db, prompts) if prompts else ([], "")
    outtype, qtype = QUANTS[quant]
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as tmp:
        work = Path(tmp)
        hf_dir = source
        if merged:
            hf_dir = work / "merged"
            echo(f"export: merging the LoRA adapter into its base -> {hf_dir}")
            model.save_pretrained(str(hf_dir))
            tok.save_pretrained(str(hf_dir))
        staged = work / target.name
        if qtype is None:
            convert(hf_dir, staged, outtype or "f16", echo)
        else:
            full = convert(hf_dir, work / f"{target.stem}.f32.gguf", "f32", echo)
            quantize(full, staged, qtype, threads, echo)
        os.replace(staged, target)
    echo(f"export: wrote {target} ({target.stat().st_size / 1e6:.1f} MB, {quant})")
    report = check_gguf(target, model, tok, messages, max_new_tokens, threads, echo)
    report.update(model_dir=str(model_dir), quant=quant, merged_lora=merged, prompts_from=where)
    return report
