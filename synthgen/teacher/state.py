"""What `synthgen teacher start` leaves behind so `stop` and `status` can find it.

A started teacher outlives the command that started it, so its pids, ports,
base URLs and log paths are written to a small JSON file. Before signalling a
recorded pid we check that it is still the server we started (its command
line names our port), because pids are reused after a reboot or a crash.

A fleet on Ray (`teacher start --ray`) is recorded the same way plus the cluster's
address and its actors' names: its servers run on other nodes, so it is stopped and
inspected through Ray (synthgen.cluster), never by pid.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .process import left_behind, pid_alive


def started_before_boot(started_at: str) -> bool | None:
    """Whether an ISO time is before this machine's last boot (None: unknown, no /proc)."""
    try:
        fields = dict(line.split(None, 1) for line in Path("/proc/stat").read_text().splitlines()
                      if line.startswith("btime "))
        booted = float(fields["btime"])
        return dt.datetime.fromisoformat(started_at).timestamp() < booted
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class ServerRecord:
    pid: int
    port: int
    base_url: str
    health_url: str
    log_path: str

    def orphans(self, started_at: str) -> bool:
        """True when this server's leader died and left workers in its process group (a
        record from before the last boot never does: its pids mean nothing now)."""
        return started_before_boot(started_at) is False and left_behind(self.pid)

    def running(self) -> bool:
        """True when the recorded pid is alive and is still our server."""
        if not pid_alive(self.pid):
            return False
        try:
            argv = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # no /proc (not Linux): trust the pid
        return str(self.port).encode() in argv


@dataclass
class TeacherRecord:
    name: str
    backend: str
    model: str
    servers: list[ServerRecord]
    started_at: str
    # A Ray fleet: where its cluster is and which named actors hold its replicas.
    ray_address: str | None = None
    ray_namespace: str | None = None
    actors: list[str] = field(default_factory=list)
    # The GGUF a local server serves (its file size is what `synthgen compare` reports).
    model_path: str | None = None
    # What its logprobs are ("raw", "processed"; None: unknown or logits), so that
    # `generate --teacher NAME` records the right --logprobs-mode without being told.
    logprobs_mode: str | None = None

    @property
    def base_urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    @property
    def on_ray(self) -> bool:
        return self.ray_address is not None


def state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


def save(state_dir: Path, record: TeacherRecord) -> Path:
    """Write the record atomically (a reader never sees half a file)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(state_dir, record.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load(state_dir: Path, name: str) -> TeacherRecord | None:
    path = state_path(state_dir, name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    servers = [ServerRecord(**s) for s in data.pop("servers")]
    return TeacherRecord(servers=servers, **data)


def find_by_url(state_dir: Path, base_url: str) -> tuple[TeacherRecord, ServerRecord] | None:
    """The recorded teacher (and its server) that answers at `base_url`, if one was started
    here by `synthgen teacher start`: how `compare` learns a server's pid and model file."""
    wanted = base_url.rstrip("/")
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            record = load(state_dir, path.stem)
        except (ValueError, TypeError, KeyError):
            continue  # not a record this version wrote: not ours to judge here
        for server in record.servers if record else []:
            if server.base_url.rstrip("/") == wanted:
                return record, server
    return None


def forget(state_dir: Path, name: str) -> None:
    state_path(state_dir, name).unlink(missing_ok=True)
