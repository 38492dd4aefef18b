"""`--concurrency auto` against the real engine: vLLM's own queue is the backpressure signal.

The session's server runs at most MAX_NUM_SEQS requests at once and queues the rest; it
never answers 429. `--concurrency auto` starts at 16 in flight, so requests wait at once
on the server: synthgen reads that on /metrics (`vllm:num_requests_waiting`, KV-cache
usage), shows it on the progress line, and brings its limit down to what the server runs.
"""

from __future__ import annotations

import pytest
from teacher_server import write_jsonl
from vllm_tier import MAX_NUM_SEQS

import synthgen as sg
from synthgen.engine.adaptive import INITIAL
from synthgen.engine.progress import describe
from synthgen.types import Stats

pytestmark = pytest.mark.vllm


def test_the_limit_follows_the_servers_queue_down_to_what_it_runs(vllm_teacher, tmp_path) -> None:
    assert INITIAL > MAX_NUM_SEQS  # so a queue forms at the server from the first requests
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"Count from {i} to {i + 5}."} for i in range(64)])
    seen: list[tuple[int, float | None, float | None]] = []
    lines: list[str] = []

    def watch(stats: Stats) -> None:
        seen.append((stats.limit, stats.server_waiting, stats.server_kv))
        lines.append(describe(stats))

    summary = sg.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model=vllm_teacher.model,
                          base_urls=vllm_teacher.base_urls, concurrency="auto", max_tokens=12,
                          temperature=0.7, seed=0, on_progress=watch, progress_interval=0.2)
    assert (summary.answered, summary.failed) == (64, 0), summary
    read = [(limit, waiting, kv) for limit, waiting, kv in seen if waiting is not None]
    assert read, "the server's /metrics was never read"
    assert max(waiting for _, waiting, _ in read) > 0, "no queue was seen at the server"
    assert all(kv is not None and 0 <= kv <= 1 for _, _, kv in read)
    assert any("server queue" in line and "KV cache" in line for line in lines)
    # down from 16 to about what the server runs at once, and never back up past it for long
    assert min(limit for limit, _, _ in seen) <= MAX_NUM_SEQS + 1, seen
    assert seen[-1][0] < INITIAL, seen
