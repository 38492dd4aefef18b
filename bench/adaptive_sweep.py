"""Sweep fixed --concurrency against a teacher with a known capacity, then run `auto`.

The teacher (tests/limited_teacher.py CapacityTeacher) has `capacity` slots of `latency`
seconds each: beyond `capacity` requests in flight, latency grows and throughput does not.
Throughput is counted where the teacher sees it, after the first 40% of each run (the
ramp). Prints a Markdown table and, with --out, writes the figures as JSON.

    .venv/bin/python bench/adaptive_sweep.py --capacity 48 --latency 0.3 --prompts 1500

Teacher and engine share this process (and its GIL): keep capacity / latency well below
what one core serves (a few hundred requests/s), or the sweep measures the CPU instead.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from limited_teacher import CapacityTeacher
from teacher_server import make_prompts, write_jsonl

from synthgen.run import generate

LIMIT = re.compile(r"in flight \d+/(\d+)")


def one(concurrency: int | str, capacity: int, latency: float, prompts: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        write_jsonl(path / "in.jsonl", [{"prompt": p} for p in make_prompts(prompts)])
        out = io.StringIO()
        with CapacityTeacher(capacity, latency) as teacher:
            started = time.monotonic()
            summary = generate(input=path / "in.jsonl", db=path / "c.duckdb", model="m",
                               base_urls=[teacher.base_url], concurrency=concurrency,
                               progress=out, progress_interval=0.1)
            elapsed = time.monotonic() - started
            limits = [int(x) for x in LIMIT.findall(out.getvalue())]
            tail = limits[len(limits) * 2 // 5:] or [0]
            return {"concurrency": concurrency, "status": summary.status,
                    "steady_per_s": round(teacher.throughput(), 1),
                    "overall_per_s": round(prompts / elapsed, 1), "peak_in_flight": teacher.peak,
                    "limit_median": sorted(tail)[len(tail) // 2], "limit_max": max(limits or [0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", type=int, default=48)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--prompts", type=int, default=1500)
    ap.add_argument("--sweep", default="8,16,32,48,64,96,128")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    rows = [one(int(c), args.capacity, args.latency, args.prompts) for c in args.sweep.split(",")]
    best = max(rows, key=lambda r: r["steady_per_s"])
    auto = one("auto", args.capacity, args.latency, args.prompts)
    rows.append(auto)
    print(f"teacher: capacity {args.capacity}, {args.latency}s per request "
          f"(ceiling {args.capacity / args.latency:.0f}/s); {args.prompts} prompts per run\n")
    print("| concurrency | steady req/s | overall req/s | peak in flight | limit (median) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['steady_per_s']} | {r['overall_per_s']} | "
              f"{r['peak_in_flight']} | {r['limit_median']} |")
    ratio = auto["steady_per_s"] / best["steady_per_s"] if best["steady_per_s"] else 0.0
    print(f"\nauto: {ratio:.0%} of the best fixed concurrency ({best['concurrency']}, "
          f"{best['steady_per_s']}/s)")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "rows": rows, "auto_vs_best": round(ratio, 3)}, indent=2))


if __name__ == "__main__":
    main()
