"""`vllm serve` children: one per replica, each pinned to its own GPUs.

vLLM binds its HTTP port only after the model is loaded, and answers
`GET /health` with 200 once the engine runs (503 if it died); `/v1/models`
lists the served name, which is the model argument unless
`--served-model-name` says otherwise. A replica is a whole `vllm serve` with
`--tensor-parallel-size` GPUs of its own (CUDA_VISIBLE_DEVICES), so N replicas
need N * tp GPUs and give N base URLs that the engine feeds together.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import TeacherError
from ..hints import pip_install
from .process import ServerProcess, free_ports

# Overrides what nvidia-smi reports, as a comma-separated list of GPU ids
# ("0,1") or a count ("2"). Tests use it to run the stand-in on a CPU machine;
# users rarely need it.
ENV_GPUS = "SYNTHGEN_GPUS"
def install_hint() -> str:
    """What to do without vLLM or a GPU, with an install command that runs as printed."""
    return (
        f"install vLLM on a machine with an NVIDIA GPU ({pip_install('vllm')}), "
        "or use the bundled CPU teacher (--backend local), or point --base-url at a running server"
    )


@dataclass(frozen=True)
class VllmOptions:
    """The `vllm serve` knobs synthgen exposes; anything else goes in `extra_args`."""

    model: str
    replicas: int = 1
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    served_model_name: str | None = None
    port: int | None = None
    extra_args: tuple[str, ...] = ()
    executable: str = "vllm"


def visible_gpus() -> list[str]:
    """GPU ids this process may use: $SYNTHGEN_GPUS, else CUDA_VISIBLE_DEVICES ∩ nvidia-smi."""
    override = os.environ.get(ENV_GPUS)
    if override is not None:
        override = override.strip()
        if override.isdigit():
            return [str(i) for i in range(int(override))]
        return [g.strip() for g in override.split(",") if g.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    listed = [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        wanted = [g.strip() for g in cuda.split(",") if g.strip()]
        return wanted[: len(listed)]
    return listed


def vllm_servers(options: VllmOptions, log_dir: Path) -> list[ServerProcess]:
    """Describe (not start) the replicas; fail early with what to install or change."""
    if options.replicas < 1 or options.tensor_parallel_size < 1:
        raise TeacherError("--replicas and --tensor-parallel-size must be at least 1")
    executable = shutil.which(options.executable)
    if executable is None:
        raise TeacherError(f"`{options.executable}` was not found on PATH; {install_hint()}")
    gpus = visible_gpus()
    if not gpus:
        raise TeacherError(f"no NVIDIA GPU found (nvidia-smi lists none); {install_hint()}")
    needed = options.replicas * options.tensor_parallel_size
    if needed > len(gpus):
        raise TeacherError(
            f"{options.replicas} replica(s) x tensor-parallel-size "
            f"{options.tensor_parallel_size} need {needed} GPUs; only {len(gpus)} visible "
            f"({','.join(gpus)})"
        )
    if options.port is not None:
        ports = [options.port + i for i in range(options.replicas)]
    else:
        ports = free_ports(options.replicas)
    tp = options.tensor_parallel_size
    return [
        replica_server(
            options,
            executable=executable,
            host="127.0.0.1",
            port=port,
            log_dir=log_dir,
            name=f"vllm[{i}]" if options.replicas > 1 else "vllm",
            env=dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(gpus[i * tp : (i + 1) * tp])),
        )
        for i, port in enumerate(ports)
    ]


def serve_argv(options: VllmOptions, executable: str, host: str, port: int) -> list[str]:
    """The `vllm serve` command line of one replica (the same wherever it runs)."""
    argv = [executable, "serve", options.model, "--host", host, "--port", str(port)]
    argv += ["--tensor-parallel-size", str(options.tensor_parallel_size)]
    if options.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if options.max_model_len is not None:
        argv += ["--max-model-len", str(options.max_model_len)]
    if options.served_model_name:
        argv += ["--served-model-name", options.served_model_name]
    return argv + list(options.extra_args)


def replica_server(
    options: VllmOptions,
    *,
    executable: str,
    host: str,
    port: int,
    log_dir: Path,
    name: str = "vllm",
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """One replica as a ServerProcess: here (one per GPU slice) or inside a Ray actor on
    whatever node Ray chose, which sets CUDA_VISIBLE_DEVICES itself (`env` None)."""
    return ServerProcess(
        name=name,
        argv=serve_argv(options, executable, host, port),
        port=port,
        log_path=log_dir / f"vllm-{port}.log",
        health_url=f"http://{host}:{port}/health",
        base_url=f"http://{host}:{port}/v1",
        env=env,
    )
