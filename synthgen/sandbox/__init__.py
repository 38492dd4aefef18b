"""Run code a teacher wrote where it can do no harm: `run_python(code)`.

Teacher-written code is untrusted input (a verifier's test run, a tool call). It runs in a
child Python process that the parent and the child confine together:

    parent   a fresh, empty temporary work directory (removed after); an environment with
             nothing of the user's (HOME is the work directory, no keys, no PYTHONPATH);
             a network namespace of its own (`unshare --net`, where the kernel allows);
             a wall-clock limit, then the whole process group is killed; output to files
             capped by the file-size limit, read back cut to OUTPUT_CHARS
    child    sandbox/boot.py: rlimits (memory, CPU, file size, open files), Landlock
             (read-only Python and system libraries, the work directory read-write,
             nothing else: not the store, not HOME; no TCP), and Python audit hooks (no
             sockets, subprocesses, ctypes or writes outside the work directory)

`Result.guards` names the guards that held: on a kernel without Landlock or network
namespaces the others still do, and the caller can see (and say) the difference.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

OUTPUT_CHARS = 20_000
_BOOT = Path(__file__).with_name("boot.py")


@dataclass(frozen=True)
class Limits:
    """What one run may use. The wall-clock limit is the one a caller usually sets."""

    seconds: float = 10.0
    memory_mb: int = 512  # address space: a 4 GB allocation fails with MemoryError
    file_mb: int = 16  # any one file written, stdout and stderr included
    open_files: int = 64


@dataclass
class Result:
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    timed_out: bool
    guards: tuple[str, ...]  # the guards that held: "network namespace", "landlock", ...

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def reason(self) -> str:
        """Why it did not pass, in one line (the last line of its stderr, usually)."""
        if self.timed_out:
            return "timed out"
        last = self.stderr.strip().splitlines()
        return last[-1] if last else f"exit status {self.returncode}"


def run_python(code: str, *, files: Mapping[str, str] | None = None, stdin: str = "",
               limits: Limits = Limits()) -> Result:
    """Run `code` as a Python program in the sandbox; `files` are written beside it first."""
    with tempfile.TemporaryDirectory(prefix="synthgen-sandbox-") as tmp:
        base = Path(tmp)
        work, out = base / "work", base / "out"
        work.mkdir()
        out.mkdir()
        for name, text in (files or {}).items():
            path = (work / name).resolve()
            if work.resolve() not in path.parents:
                raise ValueError(f"sandbox: file name {name!r} is outside the work directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        program = work / "main.py"
        program.write_text(code)
        config = {"workdir": str(work), "read": _readable(), "memory": limits.memory_mb << 20,
                  "cpu": max(1, int(limits.seconds) + 1), "fsize": limits.file_mb << 20,
                  "nofile": limits.open_files}
        argv = [*_netns(), sys.executable, "-I", "-X", "utf8", str(_BOOT), json.dumps(config), str(program)]
        return _run(argv, work, out, stdin, limits.seconds)


def _run(argv: list[str], work: Path, out: Path, stdin: str, seconds: float) -> Result:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    with open(out / "stdout", "wb+") as so, open(out / "stderr", "wb+") as se:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.PIPE, stdout=so, stderr=se,
                                start_new_session=True, close_fds=True)
        timed_out = False
        try:
            proc.communicate(stdin.encode(), timeout=seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stdout, stderr = _read(so), _read(se)
    guards, stderr = _said_guards(stderr)
    if _netns():
        guards = ("network namespace", *guards)
    return Result(None if timed_out else proc.returncode, stdout, stderr, timed_out, guards)


def _read(fh) -> str:
    fh.seek(0)
    return fh.read(4 * OUTPUT_CHARS).decode("utf-8", "replace")[:OUTPUT_CHARS]


def _said_guards(stderr: str) -> tuple[tuple[str, ...], str]:
    first, _, rest = stderr.partition("\n")
    if first.startswith("#sandbox: "):
        return tuple(first.removeprefix("#sandbox: ").split(", ")), rest
    return (), stderr


def _readable() -> list[str]:
    """What the child may read: its Python (stdlib, and the environment's packages) and the
    system libraries those load; not HOME, not the store, not /etc beyond the loader's cache."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
             os.path.dirname(os.path.realpath(sys.executable)), str(_BOOT.parent)}
    paths |= {"/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64", "/usr/share/zoneinfo",
              "/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/urandom"}
    return sorted(p for p in paths if p and os.path.exists(p))


@functools.cache
def _netns() -> tuple[str, ...]:
    """The prefix that gives the child a network namespace of its own (no interface but a
    down loopback), or () where this kernel or user may not make one."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return ()
    for prefix in ((unshare, "--net"), (unshare, "--user", "--map-root-user", "--net")):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
    return ()


def guards() -> tuple[str, ...]:
    """The guards a run gets on this machine (runs a trivial program to find out)."""
    return run_python("pass", limits=Limits(seconds=30)).guards
