"""bench/vllm_client.py, small, against the session's real server: so that the comparison
with `vllm bench serve` that bench/RESULTS.md quotes cannot rot unseen.

Both clients must have sent the same work: the server's own counters (/metrics) over each
run say how many tokens it generated and read, and they must agree between the clients.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env

pytestmark = pytest.mark.vllm

BENCH = Path(__file__).resolve().parents[1] / "bench" / "vllm_client.py"


def test_both_clients_do_the_same_work_on_the_same_server(vllm_bin: str, vllm_teacher) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--vllm", vllm_bin, "--base-url", vllm_teacher.base_urls[0],
         "--model", vllm_teacher.model, "--prompts", "6", "--max-tokens", "8", "--concurrency", "3",
         "--rounds", "1"],
        capture_output=True, text=True, timeout=900, env=clean_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "median output tok/s: vllm bench serve" in done.stdout and "ratio" in done.stdout
    runs = json.loads(done.stdout.strip().splitlines()[-1])["runs"]
    every = runs["vllm bench serve"] + runs["synthgen"]
    assert len(runs["vllm bench serve"]) == len(runs["synthgen"]) == 2
    assert all(r["completed"] == 6 and r["output_tokens"] == 6 * 8 for r in every), every
    assert {r["server_generation_tokens_total"] for r in every} == {6 * 8}
    assert len({r["server_prompt_tokens_total"] for r in every}) == 1, every  # the same prompts
