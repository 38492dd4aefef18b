"""Teachers that synthgen starts and stops itself.

    with start_teacher("local") as t:          # bundled SmolLM2 on llama-server
        generate(..., base_urls=t.base_urls, model=t.model)

    with start_teacher("vllm", model="Qwen/Qwen2.5-7B-Instruct", replicas=2) as t:
        ...                                      # two `vllm serve`, one GPU each

    with start_teacher("vllm", model=LOCAL_MODEL_NAME) as t:
        ...                                      # the bundled teacher on vLLM (its CPU
                                                 # engine where no GPU is)

The servers run on free loopback ports, log to files named on stderr, and are
stopped (SIGTERM, then SIGKILL, whole process group) when the block exits for
any reason, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TeacherError
from .local import MODEL_NAME as LOCAL_MODEL_NAME
from .local import LocalOptions, build_llama_server, local_server
from .paths import log_dir as default_log_dir
from .process import (
    DEFAULT_STOP_GRACE_S,
    Announce,
    ServerProcess,
    announce_log,
    launch_all,
    sigterm_as_interrupt,
    stop_all,
)
from .vllm import VllmOptions, find_vllm, on_cpu, vllm_servers
from .vllm_cpu import bundled_hf_dir, is_bundled

__all__ = [
    "BACKENDS",
    "LOCAL_MODEL_NAME",
    "Teacher",
    "build_llama_server",
    "launch_teacher",
    "start_teacher",
]

BACKENDS = ("local", "vllm")
# The local model loads in about a second; vLLM may first download weights.
HEALTH_TIMEOUT_S = {"local": 120.0, "vllm": 1800.0}


@dataclass
class Teacher:
    """Running teacher servers and what a client needs to use them."""

    backend: str
    model: str
    servers: list[ServerProcess]
    stop_grace: float = DEFAULT_STOP_GRACE_S
    startup_s: float = 0.0
    model_path: str | None = None  # the GGUF a local server serves
    # Requests worth keeping in flight: twice the local server's slots keeps every
    # slot busy without a long queue (a queued request waits on a slow CPU, and a
    # Ctrl-C waits for all in flight). None: no useful cap (vLLM batches hundreds).
    concurrency_hint: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def base_urls(self) -> list[str]:
        """One OpenAI base URL (ending in /v1) per replica."""
        return [s.base_url for s in self.servers]

    @property
    def log_path(self) -> Path:
        """The first replica's log (the only one unless --replicas > 1)."""
        return self.servers[0].log_path

    @property
    def log_paths(self) -> list[Path]:
        return [s.log_path for s in self.servers]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers if s.pid is not None]

    def stop(self) -> None:
        """Stop every replica; safe to call twice."""
        if not self._stopped:
            self._stopped = True
            stop_all(self.servers, self.stop_grace)

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def local_gguf(model: str | None) -> Path | None:
    """What the local backend serves: None for the bundled teacher, else a .gguf file."""
    if model in (None, LOCAL_MODEL_NAME):
        return None
    assert model is not None
    if not model.endswith(".gguf"):
        raise TeacherError(
            f"--model {model}: the local backend serves the bundled {LOCAL_MODEL_NAME} or a .gguf file "
            "(synthgen student export writes one); use --backend vllm for other models"
        )
    path = Path(model).expanduser()
    if not path.is_file():
        raise TeacherError(f"--model {model}: no such GGUF file")
    return path


def launch_teacher(
    backend: str = "local",
    *,
    model: str | None = None,
    replicas: int = 1,
    port: int | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    ctx_size: int | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
    vllm_executable: str | None = None,
    health_timeout: float | None = None,
    stop_grace: float = DEFAULT_STOP_GRACE_S,
    log_dir: Path | None = None,
    detached: bool = False,
    announce: Announce | None = announce_log,
) -> Teacher:
    """Start a teacher and return once every replica is healthy.

    The caller owns the result and must `stop()` it; prefer `start_teacher`.
    `detached` servers are meant to outlive this process (`teacher start`).
    `vllm_executable` is `--vllm`: the `vllm` to run or its venv (default: $SYNTHGEN_VLLM,
    else PATH).
    """
    logs = Path(log_dir) if log_dir else default_log_dir()
    model_path: str | None = None
    if backend == "local":
        gguf = local_gguf(model)
        if replicas != 1:
            raise TeacherError("the local backend runs one server; use --parallel for slots")
        local = LocalOptions(
            threads=threads,
            parallel=parallel or LocalOptions.parallel,
            ctx_size=ctx_size,
            port=port,
            extra_args=tuple(extra_args),
            model=gguf,
            alias=served_model_name,
        )
        servers = [local_server(local, logs, announce=announce)]
        served = local.served_name
        model_path = str(gguf.resolve()) if gguf else None
        hint: int | None = 2 * local.parallel
    elif backend == "vllm":
        if not model:
            raise TeacherError(
                f"--backend vllm needs --model (a Hugging Face id, a local path, or {LOCAL_MODEL_NAME} "
                "for the bundled teacher)")
        executable = find_vllm(vllm_executable)
        served_path = model
        if is_bundled(model):  # vLLM serves its Hugging Face copy, under the same name
            served_path = str(bundled_hf_dir(announce))
            served_model_name = served_model_name or model
        options = VllmOptions(
            model=served_path,
            replicas=replicas,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            served_model_name=served_model_name,
            port=port,
            extra_args=tuple(extra_args),
            executable=executable,
        )
        servers = vllm_servers(options, logs, executable)
        if announce and on_cpu():
            announce("no NVIDIA GPU: running vLLM's CPU engine (float32, eager, a 2 GiB KV cache "
                     "per replica unless set; see docs/teacher.md)")
        served = served_model_name or model
        hint = None
    else:
        raise TeacherError(f"unknown teacher backend {backend!r}; choose one of {BACKENDS}")

    started = time.monotonic()
    launch_all(
        servers,
        health_timeout=health_timeout or HEALTH_TIMEOUT_S[backend],
        detached=detached,
        stop_grace=stop_grace,
        announce=announce,
    )
    teacher = Teacher(backend, served, servers, stop_grace, time.monotonic() - started,
                      concurrency_hint=hint, model_path=model_path)
    if announce:
        urls = " ".join(teacher.base_urls)
        announce(f"teacher ready in {teacher.startup_s:.1f}s: model {served} at {urls}")
    return teacher


@contextlib.contextmanager
def start_teacher(backend: str = "local", **options: object) -> Iterator[Teacher]:
    """Run a teacher for the duration of a `with` block; see `launch_teacher` for options."""
    with sigterm_as_interrupt():
        teacher = launch_teacher(backend, **options)  # type: ignore[arg-type]
        try:
            yield teacher
        finally:
            teacher.stop()
