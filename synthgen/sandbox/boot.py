"""The sandboxed child's first code: confine this process, then run the program.

Run as `python -I boot.py CONFIG PROGRAM` by `synthgen.sandbox.run_python`; standard
library only (it runs before, and apart from, anything synthgen imports). In order:

    1. rlimits        address space, CPU seconds, file size, open files, no core files
    2. Landlock       (Linux >= 5.13) read-only access to what Python needs, read and
                      write in the work directory, nothing else; no TCP bind or connect
                      (ABI >= 4); no abstract unix sockets or signals out (ABI >= 6)
    3. audit hooks    a second line that cannot be removed: no sockets, no subprocess or
                      exec, no ctypes, no rlimit changes, no write outside the work dir
    4. the program    run as __main__ in the work directory

The network itself is taken away by the parent (a fresh network namespace) where it can.
Which guards held is written to stderr's first line as `#sandbox: ...`, for the parent.
"""

import ctypes
import json
import os
import resource
import runpy
import sys

_NR = {"create": 444, "add": 445, "restrict": 446}  # the same on x86_64 and aarch64
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1
_FS_FILE = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # rights a file rule may hold
_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_TCP = (1 << 0) | (1 << 1)  # bind, connect
_SCOPES = (1 << 0) | (1 << 1)  # abstract unix sockets, signals


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _limits(cfg):
    pairs = [(resource.RLIMIT_AS, cfg["memory"]), (resource.RLIMIT_CPU, cfg["cpu"]),
             (resource.RLIMIT_FSIZE, cfg["fsize"]), (resource.RLIMIT_NOFILE, cfg["nofile"]),
             (resource.RLIMIT_CORE, 0)]
    for which, value in pairs:
        resource.setrlimit(which, (value, value))


def _landlock(cfg):
    """Confine the process with Landlock; the guards it gave (none where unsupported)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_NR["create"], None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return []
    fs = _FS_BY_ABI[max(k for k in _FS_BY_ABI if k <= abi)]
    attr = _RulesetAttr(fs, _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(_NR["create"], ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return []
    try:
        for path, rights in [(p, _READ) for p in cfg["read"]] + [(cfg["workdir"], fs)]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                allowed = rights & fs & (_FS_FILE if not os.path.isdir(path) else fs)
                rule = _PathBeneath(allowed, fd)
                libc.syscall(_NR["add"], ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                             ctypes.byref(rule), ctypes.c_uint32(0))
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return []
        if libc.syscall(_NR["restrict"], ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return []
    finally:
        os.close(ruleset)
    return ["landlock"] + (["no tcp"] if abi >= 4 else []) + (["scoped"] if abi >= 6 else [])


_BLOCKED = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.forkpty", "pty.spawn", "ctypes.", "resource.setrlimit", "os.kill",
            "os.killpg", "signal.pthread_kill", "_posixsubprocess")
_WRITES = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
           "os.chown", "os.truncate", "os.utime", "shutil.")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(workdir):
    root = os.path.realpath(workdir) + os.sep

    def inside(path):
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(root)
        except (TypeError, ValueError):
            return False

    def hook(event, args):
        if event.startswith(_BLOCKED):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = ([*list(args), None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and path is not None and not isinstance(path, int) and not inside(path):
                raise PermissionError(f"sandbox: writing {os.fsdecode(path)!r} is outside the work directory")
        elif event.startswith(_WRITES):
            paths = [a for a in args if isinstance(a, str | bytes | os.PathLike)]
            if not paths or not all(inside(p) for p in paths):
                raise PermissionError(f"sandbox: {event} outside the work directory is not allowed")

    sys.addaudithook(hook)


def main():
    cfg = json.loads(sys.argv[1])
    program = sys.argv[2]
    _limits(cfg)
    guards = ["rlimits", *_landlock(cfg)]
    if cfg.get("audit", True):  # off only in the tests that prove Landlock holds on its own
        _audit(cfg["workdir"])
        guards.append("audit hooks")
    os.chdir(cfg["workdir"])
    sys.stderr.write(f"#sandbox: {', '.join(guards)}\n")
    sys.stderr.flush()
    sys.argv = [program]
    sys.path[0] = cfg["workdir"]
    runpy.run_path(program, run_name="__main__")


if __name__ == "__main__":
    main()
