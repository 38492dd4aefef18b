"""Run a command on a pseudo-terminal of a given size and read its screen as a person would
see it (pyte emulates the terminal), frame by frame as the output arrives."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time

import pyte


class Terminal:
    """A process on a `columns` x `rows` pseudo-terminal; `frames` are the screens seen."""

    def __init__(self, argv: list[str], columns: int, rows: int = 24, env: dict[str, str] | None = None):
        env = dict(env or os.environ)
        env.pop("COLUMNS", None)  # the terminal's own size, as a person's shell has it
        env.pop("LINES", None)
        env["TERM"] = "xterm-256color"
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     close_fds=True, start_new_session=True)
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(columns, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.frames: list[list[str]] = []
        self.raw = b""

    def read(self, timeout: float) -> None:
        """Read until the process exits (and its output is drained) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: the other end closed (the process exited)
                    break
                if not data:
                    break
                self.raw += data
                self.stream.feed(data)
                self.frames.append(list(self.screen.display))
            elif self.proc.poll() is not None:
                break

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code
