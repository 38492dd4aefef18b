"""Run synthgen as a user would, through `synthgen.generate()` in this (sub)process, and
print one JSON line with the summary plus the writer's own counters.

    python bench/sg_run.py --input prompts.jsonl --db store.duckdb \
        --base-url http://127.0.0.1:PORT/v1 --concurrency 256 [--profile out.txt]

Default settings otherwise (full persistence, flush every 0.1 s, 5 attempts). The only
instrumentation is a wrapper around `Writer.close` that records `busy_seconds` (time the
writer thread spent inside its commits) and the number of commits.

    python bench/sg_run.py --writer-only 200000 --db store.duckdb

measures the writer alone: that many answers put as fast as Python can, then close().
`--threads-cpu` adds `threads_cpu`: CPU seconds by thread over the run (Linux /proc,
polled every 0.2 s by a watcher thread that reports its own), so bench/cpu.py can say
where the client's CPU goes; threads Python did not start (DuckDB's, the loop's resolver)
are summed as "other".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T_START = time.monotonic()
# The checkout first: run as `python bench/sg_run.py`, the script's folder would come first
# and an editable install's finder can then resolve `synthgen` as a bare namespace package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def writer_only(n: int, db: str) -> dict:
    from synthgen import store
    from synthgen.store.writer import Writer
    from synthgen.types import Answer

    con = store.connect(db)
    con.execute("INSERT INTO runs (run_id, status) VALUES (1, 'bench')")
    w = Writer(con.cursor(), 1).start()
    answers = [Answer(f"answer {i}", "stop", 12, 5, "bench", None, "http://x/v1") for i in range(1000)]
    ids = [f"{i:032x}" for i in range(n)]
    t0 = time.perf_counter()
    for i, rid in enumerate(ids):
        w.put_answer(rid, 0, answers[i % 1000], 1.0, 1)
    put = time.perf_counter() - t0
    w.close()
    elapsed = time.perf_counter() - t0
    stored = con.execute("SELECT count(*) FROM responses").fetchone()[0]
    con.close()
    return {"answers": n, "stored": stored, "seconds": elapsed, "put_seconds": put,
            "busy_seconds": w.busy_seconds, "cpu_seconds": w.cpu_seconds, "commits": w.commits}


class ThreadsCpu:
    """CPU seconds by thread name, from /proc/self/task: the last value seen for each thread,
    less what it had used when `start` was called (the main thread's imports stay out)."""

    def __init__(self) -> None:
        import os
        import threading

        self._os, self._threading = os, threading
        self.tick = os.sysconf("SC_CLK_TCK")
        self.seen: dict[tuple[str, str], float] = {}
        self.base: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()

    def _poll(self) -> None:
        names = {t.native_id: t.name for t in self._threading.enumerate()}
        for tid in self._os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the thread ended between listing and reading
            self.seen[(tid, names.get(int(tid), "other"))] = (int(fields[11]) + int(fields[12])) / self.tick

    def start(self) -> ThreadsCpu:
        self._poll()
        self.base = dict(self.seen)
        self._threading.Thread(target=self._loop, name="watcher", daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._poll()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._poll()
        out: dict[str, float] = {}
        for key, cpu in self.seen.items():
            out[key[1]] = out.get(key[1], 0.0) + cpu - self.base.get(key, 0.0)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input")
    ap.add_argument("--db", required=True)
    ap.add_argument("--base-url")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--profile", help="write cProfile stats of the whole run here")
    ap.add_argument("--writer-only", type=int, default=0)
    ap.add_argument("--threads-cpu", action="store_true", help="report CPU seconds by thread")
    args = ap.parse_args()
    if args.writer_only:
        print(json.dumps(writer_only(args.writer_only, args.db)))
        return

    import synthgen
    from synthgen.store import writer as writer_mod

    seen: dict = {}
    close = writer_mod.Writer.close

    def close_and_record(self):
        try:
            close(self)
        finally:
            # Where DuckDB's memory is at the end of the run, by kind: the profile that
            # explains the memory target's figures.
            seen["duckdb_memory_mb"] = dict(self._con.execute(
                "SELECT tag, round(memory_usage_bytes / 2**20, 1) FROM duckdb_memory() "
                "WHERE memory_usage_bytes > 0 ORDER BY memory_usage_bytes DESC").fetchall())
            seen["duckdb_memory_limit"] = self._con.execute(
                "SELECT current_setting('memory_limit')").fetchone()[0]
            seen.update(busy_seconds=self.busy_seconds, cpu_seconds=self.cpu_seconds, commits=self.commits,
                        committed=self.committed_answers)

    writer_mod.Writer.close = close_and_record
    opts = {"input": args.input, "db": args.db, "model": args.model, "base_urls": [args.base_url]}
    if args.concurrency:
        opts["concurrency"] = args.concurrency
    t_import = time.monotonic() - T_START
    t_call = time.monotonic()  # system-wide clock: the bench compares it with the teacher's
    threads = ThreadsCpu().start() if args.threads_cpu else None
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        s = prof.runcall(synthgen.generate, progress=sys.stderr, **opts)
        with open(args.profile, "w") as fh:
            pstats.Stats(prof, stream=fh).sort_stats("tottime").print_stats(30)
    else:
        s = synthgen.generate(progress=sys.stderr, **opts)
    if threads is not None:
        seen["threads_cpu"] = threads.stop()
    print(json.dumps({"status": s.status, "total": s.total, "already_done": s.already_done,
                      "answered": s.answered, "failed": s.failed, "pending": s.pending,
                      "elapsed": s.elapsed, "plan_reused": s.plan_reused,
                      "import_seconds": t_import, "t_call": t_call, **seen}))


if __name__ == "__main__":
    main()
