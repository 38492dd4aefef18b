"""`teacher start|status --ray`: the click side of a fleet on Ray (synthgen.cluster does the work).

Kept apart from cli/teacher.py so that the one-machine commands never read Ray's part and
the Ray room is imported only when a command asks for it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from ..teacher.state import ServerRecord, TeacherRecord, save


def start_fleet(
    backend: str,
    model: str | None,
    replicas: int,
    tensor_parallel_size: int,
    gpus_per_replica: int | None,
    max_restarts: int,
    gpu_memory_utilization: float | None,
    max_model_len: int | None,
    port: int | None,
    health_timeout: float | None,
    extra_args: tuple[str, ...],
    name: str,
    ray_address: str,
) -> TeacherRecord:
    """`start --ray`: the replicas as Ray actors, recorded with the cluster and actor names."""
    if backend != "vllm":
        raise click.UsageError("--ray starts vLLM replicas: add --backend vllm (the bundled local "
                               "teacher runs on this machine only)")
    if not model:
        raise click.UsageError("--backend vllm needs --model (a Hugging Face id or a local path)")
    from ..cluster.fleet import start_fleet
    from ..teacher import HEALTH_TIMEOUT_S
    from ..teacher.vllm import VllmOptions

    options = VllmOptions(
        model=model,
        replicas=replicas,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        port=port,
        extra_args=tuple(extra_args),
    )
    fleet = start_fleet(
        options,
        name=name,
        address=None if ray_address == "auto" else ray_address,
        replicas=replicas,
        gpus_per_replica=gpus_per_replica or tensor_parallel_size,
        max_restarts=max_restarts,
        health_timeout=health_timeout or HEALTH_TIMEOUT_S["vllm"],
        announce=lambda line: click.echo(line, err=True),
    )
    return TeacherRecord(
        name=name,
        backend="vllm",
        model=model,
        servers=[_server_record(r) for r in fleet.replicas],
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        ray_address=fleet.address,
        ray_namespace=fleet.namespace,
        actors=fleet.actors,
    )


def _server_record(info: dict) -> ServerRecord:
    return ServerRecord(info["pid"] or 0, info["port"], info["base_url"], info["health_url"],
                        info["log_path"])


def fleet_status(record: TeacherRecord, states: Path) -> bool:
    """Each replica as its actor reports it now; the record follows a replica that moved."""
    import httpx

    from ..cluster.fleet import describe

    assert record.ray_address is not None
    healthy = True
    servers = list(record.servers)
    for i, info in enumerate(describe(record.ray_address, record.ray_namespace or "synthgen",
                                      record.actors)):
        actor = record.actors[i]
        if isinstance(info, str):
            healthy = False
            click.echo(f"  {actor}  {info}")
            continue
        try:
            code = httpx.get(info["health_url"], timeout=2.0, trust_env=False).status_code
            state = "healthy" if code == 200 else f"unhealthy (HTTP {code})"
        except httpx.HTTPError as exc:
            state = f"unreachable ({type(exc).__name__})"
        healthy = healthy and state == "healthy"
        again = ", restarted by Ray" if info["restarted"] else ""
        click.echo(f"  {info['base_url']}  {actor} on node {info['node']}, pid {info['pid']}, "
                   f"GPUs {info['gpus'] or '-'}{again}  {state}  log: {info['log_path']}")
        if i < len(servers):
            servers[i] = _server_record(info)
    if servers != record.servers:
        record.servers = servers
        save(states, record)
    return healthy
