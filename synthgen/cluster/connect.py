"""Reaching a Ray cluster from this process: the one place synthgen calls `ray.init`.

A command that must leave work running after it exits (`teacher start --ray`) needs a
cluster that outlives it, so it only connects (`ray start --head` made one, or RAY_ADDRESS
names one). A command that waits for its own work (`generate --ray`) may instead start a
local cluster for its lifetime, which is how one machine with many cores runs shards.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError
from ..hints import pip_install

NAMESPACE = "synthgen"
LOOPBACK = "127.0.0.1"
log = logging.getLogger("synthgen.cluster")


def import_ray() -> ModuleType:
    """`ray`, or a clear error saying how to install it (the extra, from where synthgen came)."""
    imported_before = "ray" in sys.modules
    told = False
    if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").is_file():
        # Ray turns token auth on for the clusters it starts (and keeps the token there),
        # but a driver given an explicit address uses it only when told to; without it the
        # connect retries for ~20 s and fails.
        os.environ["RAY_AUTH_MODE"] = "token"
        told = True
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, the [ray] extra: {pip_install('ray')}") from None
    if told and imported_before:
        # Ray read its config when something imported it before us: re-read it, or this
        # process stays in "disabled" mode while the processes it starts use the token,
        # and a cluster it starts refuses its own driver ("InvalidAuthToken").
        from ray._raylet import Config

        Config.initialize("")
    return ray


def connect(address: str | None, *, must_exist: bool, local_cpus: int | None = None) -> str:
    """Join a cluster (once per process) and return its address, for other processes.

    `address` None: the cluster RAY_ADDRESS names, or the one `ray start` made on this
    machine; without either, a local cluster for this process's lifetime with `local_cpus`
    CPUs (Ray's default: the machine's cores), unless `must_exist`.
    """
    ray = import_ray()
    if not ray.is_initialized():
        options = {"namespace": NAMESPACE, "log_to_driver": False, "configure_logging": False}
        try:
            ray.init(address=address or "auto", **options)
        except ConnectionError as exc:
            if address is not None or must_exist:
                where = f"at {address}" if address else "on this machine"
                raise ConfigError(
                    f"--ray: no Ray cluster is running {where} ({exc}); start one with "
                    "`ray start --head` (and `ray start --address HEAD:6379` on each other node), "
                    "or pass its address: --ray HOST:6379 (a cluster with token auth also needs "
                    "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
                ) from None
            # A cluster of this process's own: on loopback only. Ray turns 127.0.0.1 into
            # the machine's address (and its servers listen on every interface) unless it
            # runs as a single-machine cluster, which it decides from this variable, read
            # when it is imported; the processes it starts inherit the variable.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
            ray.init(num_cpus=local_cpus, include_dashboard=False, _node_ip_address=LOOPBACK, **options)
    return ray.get_runtime_context().gcs_address
