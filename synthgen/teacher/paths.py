"""Per-user locations for the teacher's build cache, logs and running-server state.

Everything lives under the XDG cache directory (default ~/.cache/synthgen):
it is per machine, safe to delete, and rebuilt on demand.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$XDG_CACHE_HOME/synthgen, falling back to ~/.cache/synthgen."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "synthgen"


def log_dir() -> Path:
    """Where server logs go; the path of each is printed when it starts."""
    return cache_root() / "logs"


def state_dir() -> Path:
    """Where `synthgen teacher start` records servers that outlive the command."""
    return cache_root() / "teachers"
