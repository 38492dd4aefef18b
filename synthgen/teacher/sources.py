"""llama.cpp's sources, as the pinned llama-cpp-python sdist vendors them, fetched once per machine.

Two things need them: the source builds of llama.cpp's tools (build.py: llama-server,
llama-quantize) and llama.cpp's own GGUF converter (gguf_tools.py runs its
convert_hf_to_gguf.py). The sdist is a registry-hosted, pinned copy of llama.cpp, so one
`pip download` serves both, offline from PyPI's point of view afterwards: the tarball
(~77 MB) is kept in the cache, and the converter's Python files (~5 MB of the 176 MB
tree) are unpacked beside it, so a second export or build downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from ..errors import TeacherError
from .paths import cache_root

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
VENDOR = "vendor/llama.cpp"
# What convert_hf_to_gguf.py imports from its own tree: the per-architecture classes
# and the gguf-py it puts first on sys.path (the same version it was written against).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")


def sources_dir() -> Path:
    """Where the sdist and the unpacked converter live for this machine."""
    return cache_root() / "llama.cpp" / LLAMA_CPP_PYTHON_VERSION


def cached_sdist(log: IO[str] | None = None) -> Path:
    """The pinned sdist, downloaded with pip (the registry's ordinary client) the first time."""
    target = sources_dir() / SDIST_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdist-", dir=target.parent) as tmp:
        argv = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
            "--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", tmp,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace")
        if log is not None:
            log.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
            log.flush()
        found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not found:
            last = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise TeacherError(
                f"pip download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} failed "
                f"(exit {done.returncode}): {' / '.join(last) or 'no sdist produced'}"
            )
        os.replace(found[0], target)  # atomic: a concurrent reader sees none or all of it
    return target


def vendored_root(tar: tarfile.TarFile, tarball: Path) -> str:
    """The member prefix of vendor/llama.cpp inside the sdist (its top directory's, not the
    copy of the submodule's git data under .git/modules/)."""
    for name in tar.getnames():
        top, _, rest = name.partition("/")
        if rest.startswith(f"{VENDOR}/"):
            return f"{top}/{VENDOR}/"
    raise TeacherError(f"{tarball} has no {VENDOR} directory")


def converter_dir(sdist: Path | None = None) -> Path:
    """A directory holding llama.cpp's convert_hf_to_gguf.py and what it imports."""
    target = sources_dir() / "convert"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    tarball = sdist or cached_sdist()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="convert-", dir=target.parent))
    try:
        with tarfile.open(tarball) as tar:
            root = vendored_root(tar, tarball)
            members = []
            for member in tar.getmembers():
                rel = member.name[len(root) :] if member.name.startswith(root) else None
                if rel and any(rel == p or rel.startswith(p) for p in CONVERTER_PARTS):
                    member.name = rel
                    members.append(member)
            tar.extractall(tmp, members=members, filter="data")
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            raise TeacherError(f"{tarball} has no {VENDOR}/convert_hf_to_gguf.py")
        try:
            tmp.rename(target)  # atomic; a concurrent process may have won the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
