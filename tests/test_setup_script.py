""".ci/setup says what it is doing: a long step (pip, the teacher build) prints its elapsed
time and the last line it wrote at least every PULSE seconds, and a failed one prints its
whole output (the function itself, run from the script's own text)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parent.parent / ".ci" / "setup"


def _with_pulse(command: str, pulse: int = 1) -> subprocess.CompletedProcess:
    text = SETUP.read_text()
    body = re.search(r"^with_pulse\(\) \{.*?^\}$", text, re.S | re.M)
    step = re.search(r"^step\(\) .*$", text, re.M)
    assert body and step, "the setup script lost its with_pulse() or step()"
    script = "\n".join(["set -euo pipefail", "started=$SECONDS", f"PULSE={pulse}", step.group(0),
                        body.group(0), command])
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_a_long_step_says_what_it_is_doing_every_pulse():
    long_step = "echo Collecting torch; sleep 3.5; echo Installing torch; sleep 3"
    done = _with_pulse(f"with_pulse bash -c '{long_step}'")
    assert done.returncode == 0, done.stderr
    pulses = [line for line in done.stdout.splitlines() if "] " in line]
    assert len(pulses) >= 2, done.stdout
    assert all(re.match(r"\[setup +\d+s\]   \.\.\. ", line) for line in pulses), pulses
    assert "Collecting torch" in pulses[0] and any("Installing torch" in p for p in pulses[1:])
    assert "Collecting" not in done.stderr  # the command's own output stays in its log


def test_a_failed_step_prints_its_output_and_fails_the_setup():
    failed = _with_pulse("with_pulse bash -c 'echo ERROR: no such distribution >&2; exit 3'\n"
                         "echo not reached")
    assert failed.returncode != 0 and "ERROR: no such distribution" in failed.stderr
    assert "not reached" not in failed.stdout
