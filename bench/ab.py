"""A/B of two synthgen checkouts on the same teacher, interleaved (used for the engine
changes' before/after figures in RESULTS.md).

    python bench/ab.py OLD_CHECKOUT NEW_CHECKOUT [--n 20000] [--reps 3] [--latency-ms 0]

Each checkout must hold bench/sg_run.py; its own synthgen is imported (sg_run puts its
checkout first on sys.path).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[256, 1024])
    args = ap.parse_args()
    teacher = bench.Teacher(args.latency_ms)
    inp = bench.prompts_file(args.n)
    rates: dict[str, list[float]] = {}
    try:
        for conc in args.concurrency:
            for _ in range(args.reps):
                r = bench.run_client(f"aiohttp@{conc}", bench.cmd_baseline("aiohttp", inp, teacher.base_url, conc), teacher)
                rates.setdefault(f"aiohttp@{conc}", []).append(r.rate)
                for label, tree in (("old", args.old), ("new", args.new)):
                    cmd = [bench.PY, f"{tree}/bench/sg_run.py", "--input", str(inp), "--db",
                           str(bench.fresh_db(f"ab_{label}")), "--base-url", teacher.base_url,
                           "--concurrency", str(conc)]
                    r = bench.run_client(f"{label}@{conc}", cmd, teacher)
                    rates.setdefault(f"{label}@{conc}", []).append(r.rate)
    finally:
        teacher.close()
    for k, v in rates.items():
        print(f"{k}: median {statistics.median(v):,.0f} req/s  runs {[round(x) for x in v]}")


if __name__ == "__main__":
    main()
