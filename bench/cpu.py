"""Client CPU per stored answer (issue 28): synthgen (on uvloop, and on asyncio's own loop)
against a bare aiohttp client with no storage at all, at a 100 ms teacher, 20,000 prompts,
256 in flight, taking turns (ABC CBA) so that the machine's load falls on all alike. CPU is the client process's own user +
system time (getrusage of the reaped child), divided by the requests the teacher answered.
With `--threads`, synthgen's runs also say where that CPU goes, by thread (bench/sg_run.py
--threads-cpu): the event loop (HTTP, parsing, the engine), the writer, the planner, and
the threads Python did not start (DuckDB's own); the rest is start-up (imports, opening the
store) before generate() is called.

    .venv/bin/python bench/cpu.py [--prompts 20000] [--rounds 2] [--threads]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Teacher, cmd_baseline, cmd_synthgen, fresh_db, prompts_file, run_client


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--threads", action="store_true", help="synthgen's CPU by thread (Linux)")
    args = ap.parse_args()
    inp = prompts_file(args.prompts)
    teacher = Teacher(100)
    clients = {"bare aiohttp": [], "synthgen": [], "synthgen, asyncio's loop": []}
    try:
        for r in range(args.rounds):
            names = list(clients) if r % 2 == 0 else list(reversed(clients))
            for name in names:
                env = None
                if name == "bare aiohttp":
                    cmd = cmd_baseline("aiohttp", inp, teacher.base_url, args.concurrency)
                else:
                    cmd = cmd_synthgen(inp, fresh_db("cpu"), teacher.base_url, args.concurrency,
                                       threads_cpu=args.threads)
                    if "asyncio" in name:
                        env = {**os.environ, "SYNTHGEN_EVENT_LOOP": "asyncio"}
                res = run_client(name, cmd, teacher, env=env)
                clients[name].append(res)
                print(f"  {name}: {res.cpu_per_answer_us:.0f} us CPU per answer ({res.cpu:.2f} s CPU, "
                      f"{res.count:,} answers, wall {res.wall:.2f} s)", file=sys.stderr)
    finally:
        teacher.close()
    ideal = args.prompts / (args.concurrency / 0.1)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.prompts:,} prompts, {args.concurrency} in flight, "
          f"100 ms teacher, {args.rounds} rounds, medians; ideal whole process {ideal:.2f} s")
    bare_us = statistics.median(r.cpu_per_answer_us for r in clients["bare aiohttp"])
    for name, results in clients.items():
        us = statistics.median(r.cpu_per_answer_us for r in results)
        wall = statistics.median(r.wall for r in results)
        print(f"{name:>26}: {us:4.0f} us CPU per answer ({us / bare_us:.2f}x bare aiohttp), "
              f"whole process {wall:.2f} s ({ideal / wall:.2f} of the ideal)")
        if args.threads and name != "bare aiohttp":
            by_thread(results)


def by_thread(results: list) -> None:
    """The median, over rounds, of each thread's CPU per answer; start-up is the rest."""
    names = sorted({k for r in results for k in r.out.get("threads_cpu", {})})
    parts = {n: statistics.median(r.out.get("threads_cpu", {}).get(n, 0.0) / r.count * 1e6 for r in results)
             for n in names}
    parts["start-up (imports, before generate())"] = statistics.median(
        (r.cpu - sum(r.out.get("threads_cpu", {}).values())) / r.count * 1e6 for r in results)
    for n, us in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"{'':>28}{us:4.0f} us  {n}")


if __name__ == "__main__":
    main()
