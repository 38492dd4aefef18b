"""llama.cpp's own GGUF tools, run as they ship: convert_hf_to_gguf.py and llama-quantize.

synthgen writes no converter: the one in llama.cpp's tree knows every architecture's
tensor names, the tokenizer's pre-tokenizer (by the hash of its output) and the chat
template, and it is the version of llama.cpp the bundled server runs. Its script comes
from the pinned sdist (sources.py) and runs with this interpreter, which has what it
imports through the [train] extra (torch, numpy, transformers, sentencepiece); it puts
its own gguf-py first on sys.path. It writes f32, f16 and q8_0 itself; the k-quants
(q4_k_m) need llama-quantize, compiled once per machine like llama-server (build.py).

Both write their full output to a log beside the other server logs; the caller hears
the steps (and the quantizer's progress, tensor by tensor, every 10%).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import TeacherError
from .build import QUANTIZE, build_llama_tool, cached_binary, default_jobs
from .paths import log_dir
from .process import Announce, percent_announcer, run_logged
from .sources import converter_dir

# --quant name -> (the converter's --outtype, or None, llama-quantize's type name)
QUANTS: dict[str, tuple[str | None, str | None]] = {
    "f32": ("f32", None),
    "f16": ("f16", None),
    "q8_0": ("q8_0", None),
    "q4_k_m": (None, "Q4_K_M"),
}
# "[  12/ 272]  blk.0.attn_k.weight - [...], type = f32, converting to q4_K .. size = ..."
TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
PERCENT_STEP = 10


def _run(argv: list[str], log_path: Path, what: str, on_line: Callable[[str], None] | None = None,
         env: dict[str, str] | None = None) -> None:
    """Run one tool, appending to its own log (process.run_logged)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        run_logged(argv, log, log_path, what, on_line, env)


def tensor_percent(line: str) -> int | None:
    """How far llama-quantize is, from one of its "[  12/ 272] ..." lines."""
    match = TENSOR_LINE.match(line)
    return 100 * int(match.group(1)) // int(match.group(2)) if match and int(match.group(2)) else None


def tool_log(out: Path) -> Path:
    return log_dir() / f"gguf-{out.stem}.log"


def convert(model_dir: Path, out: Path, outtype: str, announce: Announce | None = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: a Hugging Face directory -> one GGUF file."""
    say = announce or (lambda _msg: None)
    script = converter_dir() / "convert_hf_to_gguf.py"
    log = tool_log(out)
    say(f"converting {model_dir} to {outtype} with llama.cpp's {script.name}; log: {log}")
    # Never reach a model hub: everything the converter reads is in model_dir.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # its own gguf-py, the version it was written against
    argv = [sys.executable, str(script), str(model_dir), "--outfile", str(out), "--outtype", outtype]
    _run(argv, log, "convert_hf_to_gguf.py", env=env)
    if not out.is_file():
        raise TeacherError(f"convert_hf_to_gguf.py wrote no {out}; log: {log}")
    return out


def quantize_binary(announce: Announce | None = None) -> Path:
    """llama-quantize for this machine, compiled from the pinned sources the first time."""
    built = cached_binary(QUANTIZE)
    if built:
        return built
    if announce:
        announce("llama-quantize is not built on this machine yet: compiling it once (cached after)")
    return build_llama_tool(QUANTIZE, announce=announce)


def quantize(source: Path, out: Path, qtype: str, threads: int | None = None,
             announce: Announce | None = None) -> Path:
    """llama-quantize SOURCE OUT QTYPE, its progress announced tensor by tensor."""
    say = announce or (lambda _msg: None)
    binary = quantize_binary(announce)
    log = tool_log(out)
    say(f"quantizing to {qtype} with {binary}; log: {log}")

    def tensors(line: str) -> str:
        match = TENSOR_LINE.match(line)
        return f"tensor {match.group(1)} of {match.group(2)}" if match else ""

    on_line = percent_announcer(say, tensor_percent, PERCENT_STEP,
                                lambda p, line: f"      quantizing: {p:3d}% ({tensors(line)})")
    argv = [str(binary), str(source), str(out), qtype, str(threads or default_jobs())]
    _run(argv, log, "llama-quantize", on_line=on_line)
    return out
