"""Shared fixtures: a loopback teacher the test controls, and synthgen run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from teacher_server import TeacherServer
from vllm_tier import vllm_bin, vllm_teacher  # noqa: F401  (the `vllm` tier's fixtures)


@pytest.fixture
def teacher():
    with TeacherServer() as server:
        yield server


def require_bundled_teacher() -> None:
    """Skip a test of the real bundled teacher where it is not installed; in CI, where
    .ci/setup installs it, its absence is a failure."""
    from synthgen.errors import TeacherError
    from synthgen.teacher.local import find_llama_server
    from synthgen.teacher.model import find_gguf

    try:
        find_llama_server()
        if find_gguf() is None:
            raise TeacherError("the teacher model is not fetched yet")
    except TeacherError as exc:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"bundled teacher not installed: {exc}")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a synthgen subprocess: no inherited API keys, no colour."""
    env = {k: v for k, v in os.environ.items() if "API_KEY" not in k}
    env.update({"NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    env.update(extra)
    return env


def synthgen(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthgen", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env or clean_env(), cwd=cwd,
    )


def start_synthgen(*args: str, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "synthgen", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or clean_env(), cwd=cwd,
    )
