"""A teacher fleet: N vLLM replicas as detached, named Ray actors that outlive the command.

    start_fleet   check the cluster has the GPUs, create the actors (each on the node Ray
                  picks, with `gpus_per_replica` GPUs and `max_restarts`), wait until every
                  replica is healthy, return where they are
    describe      ask each actor where its replica is now (after a restart, say)
    stop_fleet    stop each server gracefully, then remove its actor for good

The client side needs nothing new: the fleet is a list of base URLs, and the engine's
least-busy routing and endpoint health (take a failing one out, probe it, put it back)
already cover a replica that dies and comes back.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import SynthgenError, TeacherError
from ..teacher.process import DEFAULT_STOP_GRACE_S, Announce
from ..teacher.vllm import VllmOptions
from .connect import NAMESPACE, connect, import_ray
from .replica import Replica

DEFAULT_MAX_RESTARTS = 3
# Time on top of the health wait for Ray to schedule the actors and start their workers.
SCHEDULE_SLACK_S = 120.0
GONE_WAIT_S = 20.0


@dataclass
class Fleet:
    address: str
    namespace: str
    actors: list[str]
    replicas: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_urls(self) -> list[str]:
        return [r["base_url"] for r in self.replicas]


def actor_names(name: str, replicas: int) -> list[str]:
    return [f"teacher-{name}-{i}" for i in range(replicas)]


def start_fleet(options: VllmOptions, *, name: str, address: str | None, replicas: int,
                gpus_per_replica: int, max_restarts: int = DEFAULT_MAX_RESTARTS,
                health_timeout: float = 1800.0, announce: Announce | None = None) -> Fleet:
    """Start `replicas` servers on the cluster and return once every one is healthy."""
    if replicas < 1 or gpus_per_replica < 1:
        raise TeacherError("--replicas and --gpus-per-replica must be at least 1")
    if options.tensor_parallel_size > gpus_per_replica:
        raise TeacherError(f"--tensor-parallel-size {options.tensor_parallel_size} needs as many GPUs "
                           f"per replica; --gpus-per-replica is {gpus_per_replica}")
    ray = import_ray()
    gcs = connect(address, must_exist=True)
    have = ray.cluster_resources().get("GPU", 0)
    needed = replicas * gpus_per_replica
    if have < needed:
        raise TeacherError(f"{replicas} replica(s) x {gpus_per_replica} GPU(s) need {needed} GPUs; the "
                           f"Ray cluster at {gcs} has {have:g} (add GPU nodes with `ray start "
                           f"--address {gcs}`, or ask for fewer --replicas)")
    names = actor_names(name, replicas)
    for n in names:
        if _lookup(ray, n) is not None:
            raise TeacherError(f"a replica named {n} already runs on the cluster at {gcs}; stop that "
                               "teacher first, or pick another --name")
    cls = ray.remote(Replica)
    handles = []
    for i, n in enumerate(names):
        port = None if options.port is None else options.port + i
        handles.append(cls.options(
            name=n, namespace=NAMESPACE, lifetime="detached", num_cpus=1, num_gpus=gpus_per_replica,
            max_restarts=max_restarts, max_task_retries=0,
        ).remote(options, i, n, port, health_timeout))
        if announce:
            announce(f"replica {i}: actor {n} asks Ray for {gpus_per_replica} GPU(s)")
    try:
        infos = ray.get([h.info.remote() for h in handles], timeout=health_timeout + SCHEDULE_SLACK_S)
    except BaseException as exc:
        for h in handles:
            _kill(ray, h)
        if isinstance(exc, ray.exceptions.GetTimeoutError):
            raise TeacherError(f"the fleet was not healthy within {health_timeout:g}s (plus "
                               f"{SCHEDULE_SLACK_S:g}s to schedule): see `ray status` for pending "
                               "actors and each node's ~/.cache/synthgen/logs") from None
        if isinstance(exc, ray.exceptions.RayError):
            raise TeacherError(f"a replica failed to start: {reason(exc)}") from None
        raise
    for info in infos:
        if announce:
            announce(f"replica {info['name']}: {info['base_url']} on node {info['node']} "
                     f"(GPUs {info['gpus'] or '-'}), log on that node: {info['log_path']}")
    return Fleet(gcs, NAMESPACE, names, infos)


def describe(address: str, namespace: str, actors: list[str],
             timeout: float = 10.0) -> list[dict[str, Any] | str]:
    """Each replica's info now, or why there is none ('not running', 'restarting ...')."""
    ray = import_ray()
    connect(address, must_exist=True)
    out: list[dict[str, Any] | str] = []
    for n in actors:
        handle = _lookup(ray, n, namespace)
        if handle is None:
            out.append("not running (no such actor)")
            continue
        try:
            out.append(ray.get(handle.info.remote(), timeout=timeout))
        except ray.exceptions.GetTimeoutError:
            out.append(f"not answering within {timeout:g}s (starting or restarting)")
        except ray.exceptions.RayError as exc:
            out.append(f"unavailable: {reason(exc)}")
    return out


def stop_fleet(address: str, namespace: str, actors: list[str],
               grace: float = DEFAULT_STOP_GRACE_S) -> list[str]:
    """Stop every replica's server, remove its actor (no restart), and wait until it is gone."""
    ray = import_ray()
    try:
        connect(address, must_exist=True)
    except SynthgenError:
        return [f"the Ray cluster at {address} is not reachable: its actors, and the servers tied "
                "to them, ended with it"]
    said, handles = [], []
    for n in actors:
        handle = _lookup(ray, n, namespace)
        if handle is None:
            said.append(f"{n} was not running")
            continue
        try:
            ray.get(handle.stop.remote(grace), timeout=grace + 30)
            said.append(f"stopped {n}")
        except ray.exceptions.RayError as exc:  # dead or restarting: killing it stops its server
            said.append(f"removed {n} ({reason(exc)})")
        _kill(ray, handle)
        handles.append(n)
    deadline = time.monotonic() + GONE_WAIT_S
    while handles and time.monotonic() < deadline:
        handles = [n for n in handles if _lookup(ray, n, namespace) is not None]
        time.sleep(0.1)
    if handles:
        raise TeacherError(f"Ray still lists {', '.join(handles)} {GONE_WAIT_S:g}s after removing them")
    return said


def _lookup(ray: Any, name: str, namespace: str = NAMESPACE) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _kill(ray: Any, handle: Any) -> None:
    with contextlib.suppress(ValueError):
        ray.kill(handle, no_restart=True)


_OUR_ERROR = re.compile(r"^synthgen\.errors\.\w+: ", re.MULTILINE)


def reason(exc: BaseException) -> str:
    """What went wrong inside a Ray error: the synthgen error an actor raised (a replica's
    constructor, a shard's run), whole (a start error quotes the server's log), else Ray's
    own first line. Ray hands the remote error over as text, after its traceback."""
    if isinstance(exc, SynthgenError) and not hasattr(exc, "cause"):
        return str(exc)
    text = str(exc).strip()
    found = list(_OUR_ERROR.finditer(text))
    if found:
        return text[found[-1].end():].strip()
    return text.splitlines()[0] if text else type(exc).__name__
