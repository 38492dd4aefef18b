"""Run a teacher server as a child process we own, from start to a clean stop.

Both backends (the bundled llama-server and `vllm serve`) are long-lived HTTP
servers that take seconds to minutes to become ready and may spawn workers of
their own. This module does the parts that are easy to get wrong once, here:

* a free loopback port, chosen by the kernel;
* stdout and stderr into one log file whose path the user is told, because a
  server that fails to start explains itself there and nowhere else;
* a health wait with a deadline that gives up early, with the log's last
  lines, when the child exits instead of becoming healthy;
* a stop that signals the whole process group (SIGTERM, a grace period, then
  SIGKILL), so a server's own workers (vLLM's engine core holds the GPU) never
  outlive it.

The child runs in its own session. Ctrl-C in a terminal therefore reaches only
synthgen, which then stops the child itself, in order, instead of both racing
to exit. On Linux a child started in the foreground also gets
PR_SET_PDEATHSIG, so even a SIGKILLed synthgen takes its server with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from ..errors import TeacherError

# How long a server gets to exit after SIGTERM before it is SIGKILLed. vLLM
# frees GPU memory on SIGTERM within a few seconds; waiting longer than this
# only delays the user.
DEFAULT_STOP_GRACE_S = 10.0
HEALTH_POLL_S = 0.25
LOG_TAIL_LINES = 20

Announce = Callable[[str], None]


def announce_log(message: str) -> None:
    """Default sink for the few lines a user must see (log path, base URL): the "synthgen"
    logger, which prints nothing unless the caller (the CLI) shows it."""
    logging.getLogger("synthgen.teacher").info(message)


def free_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel says are free now; all held open together so they differ."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, for error messages; empty if unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16_384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_logged(argv: list[str], log: IO[str], log_path: Path, what: str,
               on_line: Callable[[str], None] | None = None, env: Mapping[str, str] | None = None) -> None:
    """Run one tool (a build step, the GGUF converter, llama-quantize) with its output into
    `log`, each line also to `on_line`; a failure quotes the log's last lines."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=env)
    except OSError as exc:
        raise TeacherError(f"cannot run {argv[0]}: {exc}") from exc
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            log.write(line)
            if on_line:
                on_line(line)
    log.flush()
    if proc.returncode != 0:
        raise TeacherError(f"{what} failed (exit {proc.returncode}); log: {log_path}\n{tail(log_path)}")


def percent_announcer(say: Announce, percent_of: Callable[[str], int | None], step: int,
                      describe: Callable[[int, str], str]) -> Callable[[str], None]:
    """A line callback that says `describe(percent, line)` each time the output passes
    another `step` percent (a compile's progress, a quantizer's tensors)."""
    shown = -step

    def on_line(line: str) -> None:
        nonlocal shown
        percent = percent_of(line)
        if percent is not None and percent >= shown + step:
            shown = percent - percent % step
            say(describe(percent, line))

    return on_line


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def describe_exit(code: int) -> str:
    """'exited with code 1' or 'was killed by SIGILL' (Popen reports signals as -N)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _die_with_parent() -> None:
    """preexec hook: ask Linux to SIGTERM the child when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ServerProcess:
    """One server child: what was run, where it logs, and how to reach it."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    health_url: str
    base_url: str
    env: Mapping[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self, *, detached: bool = False) -> None:
        """Spawn the child in its own session, logging to `log_path`.

        `detached` children (for `synthgen teacher start`) must outlive us, so
        they are not tied to our lifetime with PDEATHSIG.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=None if detached or sys.platform != "linux" else _die_with_parent,
                )
            except FileNotFoundError as exc:
                raise TeacherError(f"{self.name}: executable not found: {self.argv[0]}") from exc
            except PermissionError as exc:
                raise TeacherError(f"{self.name}: cannot execute {self.argv[0]}: {exc}") from exc

    def wait_healthy(self, timeout: float, *, total: float | None = None) -> None:
        """Poll the health URL until it answers 200, the child exits, or time runs out.

        `total` is the whole budget the user chose, named in the error when
        several servers share one deadline.
        """
        assert self.popen is not None, "start() first"
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=httpx.Timeout(2.0), trust_env=False) as client:
            while True:
                code = self.popen.poll()
                if code is not None:
                    raise TeacherError(
                        f"{self.name} {describe_exit(code)} before it became healthy; "
                        f"log: {self.log_path}\n{tail(self.log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.health_url).status_code == 200:
                        return
                if time.monotonic() >= deadline:
                    raise TeacherError(
                        f"{self.name} did not become healthy at {self.health_url} within "
                        f"{total or timeout:g}s; log: {self.log_path}\n{tail(self.log_path)}"
                    )
                time.sleep(HEALTH_POLL_S)

    def stop(self, grace: float = DEFAULT_STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait up to `grace`, then SIGKILL it. Idempotent."""
        if self.popen is None:
            return
        stop_process_group(self.popen.pid, grace, wait=self.popen.wait)


def stop_process_group(
    pid: int, grace: float = DEFAULT_STOP_GRACE_S, wait: Callable[..., object] | None = None
) -> None:
    """Stop a session leader and everything in its group.

    `wait` reaps our own child (Popen.wait); for a server started by an earlier
    `synthgen teacher start` we are not the parent and poll the pid instead.
    """

    def gone_within(seconds: float) -> bool:
        if wait is not None:
            try:
                wait(timeout=seconds)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)

    for sig, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + seconds
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        if not gone_within(seconds):
            continue
        # Workers may outlive the leader a moment; the whole group must be gone.
        while True:
            if not _group_alive(pid):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    raise TeacherError(f"process group {pid} survived SIGKILL")


def left_behind(pid: int) -> bool:
    """Whether the session leader `pid` is gone but members of its process group still run
    (a server killed with SIGKILL leaves vLLM's engine-core workers). Linux never reuses a
    pid while it names a live process group, so that group is still the server's."""
    return not pid_alive(pid) and _group_alive(pid)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Members may all be zombies awaiting init; check them one by one.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while servers run, so `finally` stops them.

    Python's default SIGTERM action kills the interpreter without unwinding,
    which would orphan the server. Only the main thread may install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch_all(
    servers: Sequence[ServerProcess],
    *,
    health_timeout: float,
    detached: bool = False,
    stop_grace: float = DEFAULT_STOP_GRACE_S,
    announce: Announce | None = announce_log,
) -> None:
    """Start every server, then wait for all to be healthy; on any failure stop them all."""
    try:
        for server in servers:
            server.start(detached=detached)
            if announce:
                announce(f"{server.name}: starting (pid {server.pid}), log: {server.log_path}")
        deadline = time.monotonic() + health_timeout
        for server in servers:
            server.wait_healthy(max(0.0, deadline - time.monotonic()), total=health_timeout)
    except BaseException:
        stop_all(servers, stop_grace)
        raise


def stop_all(servers: Sequence[ServerProcess], grace: float = DEFAULT_STOP_GRACE_S) -> None:
    """Stop servers in parallel (each may take `grace`), raising the first failure."""
    errors: list[BaseException] = []

    def stop_one(server: ServerProcess) -> None:
        try:
            server.stop(grace)
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=stop_one, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
