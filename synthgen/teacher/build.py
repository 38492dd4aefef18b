"""llama.cpp's tools compiled from the sources in the llama-cpp-python sdist (sources.py).

llama-server is the fallback server: used when the prebuilt one (prebuilt.py) cannot
run here, or on request (`synthgen teacher build --from-source`) for a binary tuned to
this CPU. llama-quantize is what `synthgen student export --quant q4_k_m` needs (the
converter writes f16 and q8_0 itself, not the k-quants), and no registry package ships
it. Each compile takes minutes on 2 cores, so every step, and the compile's percentage,
is announced as it happens (the full output goes to the build log beside the binary).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from ..errors import TeacherError
from .paths import cache_root
from .process import Announce, announce_log, percent_announcer, run_logged
from .sources import LLAMA_CPP_PYTHON_VERSION, SDIST_NAME, cached_sdist, sources_dir

SERVER, QUANTIZE = "llama-server", "llama-quantize"
# What each compile costs on the 2 shared cores these were measured on (docs/teacher.md).
COMPILE_TIME = {SERVER: "8-14 min on 2 cores", QUANTIZE: "4-8 min on 2 cores"}
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    # The binary is cached per machine and never copied elsewhere, so let the
    # compiler use every instruction set this CPU has.
    "-DGGML_NATIVE=ON",
]
# ggml's AMX kernels (picked by -march=native on Sapphire Rapids) die with SIGILL
# on Q4_1 weights there (tilezero in an OpenMP worker, see docs/teacher.md); GCC
# lets an explicit -mno-* win over -march=native, so native minus AMX.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if platform.machine().lower() in ("x86_64", "amd64"):
    CMAKE_FLAGS += [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]
STEPS = 4
# `make` prints "[ 42%] Building ...", ninja "[123/456] Building ...".
MAKE_PERCENT = re.compile(r"^\[\s*(\d+)%\]")
NINJA_COUNT = re.compile(r"^\[(\d+)/(\d+)\]")
PERCENT_STEP = 5  # announce the compile every 5%


def default_jobs() -> int:
    """All usable cores: the compile is CPU-bound."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cached_binary_path(tool: str = SERVER) -> Path:
    """Where a source build puts `tool` for this machine (both tools share the directory
    that `synthgen teacher build --from-source` has always used)."""
    return cache_root() / "llama-server" / LLAMA_CPP_PYTHON_VERSION / tool


def cached_binary(tool: str = SERVER) -> Path | None:
    path = cached_binary_path(tool)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def build_llama_server(
    *,
    jobs: int | None = None,
    sdist: Path | None = None,
    force: bool = False,
    announce: Announce | None = announce_log,
) -> Path:
    """Compile llama-server from the pinned llama-cpp-python sdist into the cache."""
    return build_llama_tool(SERVER, jobs=jobs, sdist=sdist, force=force, announce=announce)


def build_llama_tool(
    tool: str,
    *,
    jobs: int | None = None,
    sdist: Path | None = None,
    force: bool = False,
    announce: Announce | None = announce_log,
) -> Path:
    """Compile one llama.cpp tool (a cmake target) from the pinned sdist into the cache.

    Idempotent: an existing cached binary is returned at once unless `force`.
    `sdist` lets an offline machine use a tarball fetched elsewhere.
    """
    say = announce or (lambda _msg: None)
    target = cached_binary_path(tool)
    if cached_binary(tool) and not force:
        say(f"{tool} already built: {target}")
        return target
    for needed in ("cmake", "c++"):
        if shutil.which(needed) is None:
            raise TeacherError(
                f"building {tool} needs `{needed}`; install it (Debian/Ubuntu: apt-get install cmake g++)"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / ("build.log" if tool == SERVER else f"build-{tool}.log")
    jobs = jobs or default_jobs()
    started = time.monotonic()

    def step(n: int, what: str) -> None:
        say(f"[{n}/{STEPS}] {what} ({_elapsed(started)})")

    say(f"building {tool} {LLAMA_CPP_PYTHON_VERSION} from source with {jobs} jobs; log: {log_path}")
    with tempfile.TemporaryDirectory(prefix="synthgen-llama-") as tmp, open(log_path, "w") as log:
        work = Path(tmp)
        cached = sources_dir() / SDIST_NAME
        fetch = cached if cached.is_file() else f"pip download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
        step(1, f"sources: {sdist or fetch}")
        tarball = sdist or cached_sdist(log)
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
        if source is None:
            raise TeacherError(f"{tarball} has no vendor/llama.cpp directory")
        build = work / "build"
        step(2, "configure (cmake)")
        configure = ["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS]
        run_logged(configure, log, log_path, "`cmake -S ...`")
        step(3, f"compile {tool} ({COMPILE_TIME.get(tool, 'minutes')}; -j {jobs})")
        run_logged(
            ["cmake", "--build", str(build), "--target", tool, "-j", str(jobs)], log, log_path,
            "`cmake --build ...`",
            on_line=percent_announcer(say, compile_percent, PERCENT_STEP,
                                      lambda p, _line: f"      compiling: {p:3d}% ({_elapsed(started)})"),
        )
        step(4, "install into the cache")
        built = build / "bin" / tool
        staging = target.with_suffix(".tmp")
        shutil.copy2(built, staging)
        os.chmod(staging, 0o755)
        os.replace(staging, target)  # atomic: a concurrent reader sees old or new
    say(f"{tool} built in {_elapsed(started)}: {target}")
    return target


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def compile_percent(line: str) -> int | None:
    """The build's progress in a make or ninja output line, or None if it carries none."""
    match = MAKE_PERCENT.match(line)
    if match:
        return int(match.group(1))
    match = NINJA_COUNT.match(line)
    if match and int(match.group(2)):
        return 100 * int(match.group(1)) // int(match.group(2))
    return None
