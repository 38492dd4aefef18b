"""Commands that synthgen prints for the user to run, spelled so they run as printed.

A hint that says `synthgen ...` fails when synthgen is not on PATH (a venv
not activated), and `pip install 'synthgen[x]'` installs an unrelated project
of that name from PyPI when synthgen came from a checkout. So hints are built
from how this process was started and how this synthgen was installed (the
`direct_url.json` pip records, PEP 610).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse


def _same_file(a: str | None, b: str) -> bool:
    if not a:
        return False
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def quote(arg: str) -> str:
    """A shell word for `arg`: double quotes when that is enough (SQL reads better), else shlex."""
    if arg and not any(c in arg for c in '"$`\\!') and shlex.quote(arg) != arg:
        return f'"{arg}"'
    return shlex.quote(arg)


def python_command() -> str:
    """`python` when that name finds this interpreter, else its full path."""
    return "python" if _same_file(shutil.which("python"), sys.executable) else shlex.quote(sys.executable)


def synthgen_command() -> str:
    """How to run this synthgen again: `synthgen`, the script's path as typed, or `python -m synthgen`."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "__main__.py" and Path(argv0).parent.name == "synthgen":
        return f"{python_command()} -m synthgen"
    if Path(argv0).name == "synthgen" and not _same_file(shutil.which("synthgen"), argv0):
        return shlex.quote(argv0)
    return "synthgen"


def install_origin() -> tuple[str, bool] | None:
    """(local directory or wheel, editable) when synthgen came from a path, else None (an index).

    Every `synthgen` metadata on sys.path is read, because a checkout's own
    `synthgen.egg-info` (from an editable install) shadows the venv's record
    when Python runs from the checkout; a checkout never installed counts too.
    """
    for dist in importlib.metadata.distributions(name="synthgen"):
        try:
            data = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = urlparse(data.get("url", ""))
        path = unquote(url.path)
        if url.scheme == "file" and Path(path).exists():
            return path, bool(data.get("dir_info", {}).get("editable"))
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / ".git").exists():
        return str(checkout), True
    return None


def pip_install(extra: str) -> str:
    """The command that adds synthgen's `extra` to this environment, from where synthgen came."""
    origin = install_origin()
    if origin is None:
        target = shlex.quote(f"synthgen[{extra}]")
    else:
        path, editable = origin
        target = ("-e " if editable else "") + shlex.quote(f"{path}[{extra}]")
    return f"{python_command()} -m pip install {target}"
