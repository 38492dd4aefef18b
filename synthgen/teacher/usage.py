"""What a running server costs the machine: its resident memory, read from the kernel.

`synthgen compare` reports it for the servers `synthgen teacher start` recorded (the
launcher knows their pids; state.find_by_url finds them by URL). Resident memory (VmRSS)
counts the model's pages the server has touched, mapped from the GGUF file or not, so
it is what the server actually holds, not the file's size. The prebuilt server runs
inside a Python process (serve_prebuilt), whose interpreter is counted too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def resident_bytes(pid: int) -> int | None:
    """VmRSS of `pid` in bytes, or None when it cannot be read (gone, not ours)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc (macOS): ps reports RSS in KiB
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
        return int(out.stdout.strip()) * 1024 if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
