"""bench/distill_gpu.py waits for a lent GPU that may come for minutes only: its CPU smoke
run keeps it working in between (it once broke on a store column added after it was written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.train

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "distill_gpu.py"


def test_cpu_smoke_run_prints_both_trainers_and_their_ratio() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--tiny", "--steps", "2", "--rows", "16"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["steps"] == 2 and result["teacher_layers"] == 6 and len(result["kept"]) == 4
    for side in ("synthgen_kd", "trl_sft"):
        assert result[side]["tokens_per_s"] > 0, side
    assert result["tokens_per_s_ratio"] > 0
