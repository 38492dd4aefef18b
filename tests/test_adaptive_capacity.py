"""--concurrency auto against a teacher with `capacity` slots (latency grows beyond them).

Throughput is measured where the teacher sees it, after the ramp (the first 40% of the
run); the best fixed concurrency for such a teacher is its capacity (more only queues),
measured in the same test so that both figures share the machine's noise.
"""

from __future__ import annotations

import asyncio
import io
import re

import duckdb
import pytest
from limited_teacher import CapacityTeacher
from teacher_server import answer, make_prompts, write_jsonl

from synthgen.engine import adaptive
from synthgen.run import generate

LIMIT = re.compile(r"in flight \d+/(\d+)")


def run(teacher: CapacityTeacher, tmp_path, n: int, concurrency, **options) -> list[int]:
    """Run n prompts; check every one is stored with its answer; return the limits shown."""
    db = tmp_path / f"c-{concurrency}.duckdb"
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(n)])
    out = io.StringIO()
    summary = generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url],
                       concurrency=concurrency, progress=out, progress_interval=0.05, **options)
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT messages->>'$[0].content', response FROM corpus").fetchall()
    con.close()
    assert summary.status == "done" and len(rows) == n
    assert all(resp == answer(prompt) for prompt, resp in rows)
    return [int(x) for x in LIMIT.findall(out.getvalue())]


def test_auto_reaches_the_throughput_of_the_best_fixed_concurrency(tmp_path):
    capacity, n = 48, 1000
    with CapacityTeacher(capacity, latency=0.3) as teacher:
        run(teacher, tmp_path, n, capacity)
        fixed = teacher.throughput()
    with CapacityTeacher(capacity, latency=0.3) as teacher:
        limits = run(teacher, tmp_path, n, "auto")
        auto = teacher.throughput()
        peak = teacher.peak
    print(f"capacity {capacity}: fixed {fixed:.0f}/s, auto {auto:.0f}/s, limits {limits[::4]}")
    assert adaptive.INITIAL < capacity <= max(limits), "auto never grew to the capacity"
    assert peak >= capacity
    assert auto >= 0.9 * fixed


@pytest.mark.parametrize("status", [429, 503])
def test_auto_backs_off_when_the_teacher_says_too_much(tmp_path, status):
    async def quick(seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.02))

    with CapacityTeacher(64, latency=0.05, overload=(500, 300, status), retry_after=0.02) as teacher:
        limits = run(teacher, tmp_path, 1000, "auto", retry_sleep=quick, max_attempts=20)
    before = max(limits[: len(limits) // 2])
    after = min(limits[limits.index(before):])
    print(f"{status}: limit {before} before the refusals, down to {after}; {limits}")
    assert teacher.refused == 300
    assert after <= before / 2
    assert max(limits[limits.index(after):]) >= before / 4, "never grew back once healed"
