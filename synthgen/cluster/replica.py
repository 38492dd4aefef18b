"""One vLLM replica as a Ray actor: the launcher's own `vllm serve`, on the node Ray picked.

The actor is the replica's lifetime. Its constructor runs exactly what `teacher start
--backend vllm` runs on one machine (teacher/vllm.py's command line, process.py's start,
log and health wait), bound to the node's address so the client reaches it. A thread
watches the server: if it exits without being asked to, the actor exits too, and Ray
restarts it (`max_restarts`), which runs the constructor again and so a fresh server on
the same port, where the client's endpoint probe finds it and puts it back in. The server
is started tied to the actor (PR_SET_PDEATHSIG): a killed actor takes its server along.

Ray sets CUDA_VISIBLE_DEVICES for an actor that asks for GPUs, and the server inherits it,
so no GPU bookkeeping happens here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import TeacherError
from ..teacher.paths import cache_root, log_dir
from ..teacher.process import DEFAULT_STOP_GRACE_S, free_ports, launch_all
from ..teacher.vllm import VllmOptions, install_hint, replica_server

log = logging.getLogger("synthgen.cluster")
WATCH_S = 0.5


def port_file(name: str) -> Path:
    """Where a replica remembers its port on its node, so a restart serves the same URL."""
    return cache_root() / "fleet" / f"{name}.port"


def _free(host: str, port: int) -> bool:
    """Whether a server could bind the port now. Servers set SO_REUSEADDR (uvicorn does), so
    the connections a killed server left in TIME_WAIT do not count against it here either."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(name: str, host: str, port: int | None) -> int:
    """The port asked for, else the one this replica used before on this node, else a free one."""
    if port is not None:
        return port
    remembered = port_file(name)
    with contextlib.suppress(OSError, ValueError):
        before = int(remembered.read_text())
        if _free(host, before):
            return before
    chosen = free_ports(1, host)[0]
    remembered.parent.mkdir(parents=True, exist_ok=True)
    remembered.write_text(f"{chosen}\n")
    return chosen


class Replica:
    """Runs one `vllm serve` for as long as the actor lives; see the module docstring."""

    def __init__(self, options: VllmOptions, index: int, name: str, port: int | None,
                 health_timeout: float):
        import ray

        context = ray.get_runtime_context()
        self.name = name
        self.index = index
        self.restarted = context.was_current_actor_reconstructed
        self.node = ray.util.get_node_ip_address()
        executable = shutil.which(options.executable)
        if executable is None:
            raise TeacherError(f"`{options.executable}` was not found on PATH on node {self.node}; "
                               f"{install_hint()}")
        self.server = replica_server(
            options, executable=executable, host=self.node,
            port=choose_port(name, self.node, port), log_dir=log_dir(), name=f"vllm[{index}]")
        self._stopping = False
        launch_all([self.server], health_timeout=health_timeout, announce=None)
        self.started_at = time.time()
        threading.Thread(target=self._watch, name="synthgen-replica-watch", daemon=True).start()

    def _watch(self) -> None:
        popen = self.server.popen
        assert popen is not None
        while popen.poll() is None:
            time.sleep(WATCH_S)
        if not self._stopping:
            log.warning("%s exited (%s); ending the actor so Ray restarts it", self.name, popen.returncode)
            os._exit(1)

    def info(self) -> dict[str, Any]:
        """Where the replica is and what runs it (what `teacher status` shows)."""
        return {
            "name": self.name,
            "base_url": self.server.base_url,
            "health_url": self.server.health_url,
            "port": self.server.port,
            "pid": self.server.pid,
            "actor_pid": os.getpid(),
            "node": self.node,
            "log_path": str(self.server.log_path),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "restarted": self.restarted,
        }

    def stop(self, grace: float = DEFAULT_STOP_GRACE_S) -> None:
        """Stop the server's whole process group (SIGTERM, grace, SIGKILL) and forget the port."""
        self._stopping = True
        self.server.stop(grace)
        port_file(self.name).unlink(missing_ok=True)
