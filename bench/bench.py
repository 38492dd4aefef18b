"""The benchmark suite behind `bench/run`: every row of bench/RESULTS.md, regenerated.

Each client runs as its own process, pinned away from the teacher's core, against the same
local teacher (bench/teacher.py, its own process, pinned to the last core), the same prompt
file and the same concurrency. Request rates come from the teacher's own clock (first to
last request received), so every client is measured the same way; wall-clock rates (whole
process: start-up, planning, final commit) are shown beside them. Peak RSS is the sum over
the client's process tree, sampled every 20 ms.

These machines are shared and noisy: read the ratios, each to a baseline measured in the
same run, more than the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
VENVS = BENCH / ".venvs"
PY = sys.executable
NCPU = os.cpu_count() or 1
TEACHER_CORE = NCPU - 1
CLIENT_CORES = set(range(NCPU - 1)) or {0}
IDEAL_100MS = 256 / 0.1


# ---------------------------------------------------------------- processes and memory

def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


@dataclass
class Result:
    name: str
    cmd: list[str]
    wall: float = 0.0
    peak_rss: int = 0
    count: int = 0
    window: float = 0.0
    first_after_start: float | None = None
    first_abs: float | None = None
    rc: int = 0
    out: dict = field(default_factory=dict)
    err_tail: str = ""
    cpu: float = 0.0  # CPU seconds of the client process (user + system)

    @property
    def cpu_per_answer_us(self) -> float:
        """Client CPU per request the teacher answered, in microseconds."""
        return self.cpu / self.count * 1e6 if self.count else 0.0

    @property
    def rate(self) -> float:
        """Requests/s on the teacher's clock, first to last request."""
        return (self.count - 1) / self.window if self.window > 0 and self.count > 1 else 0.0

    @property
    def wall_rate(self) -> float:
        return self.count / self.wall if self.wall > 0 else 0.0


class Teacher:
    def __init__(self, latency_ms: float):
        self.latency_ms = latency_ms
        self.proc = subprocess.Popen(
            [PY, str(BENCH / "teacher.py"), "--latency-ms", str(latency_ms), "--core", str(TEACHER_CORE)],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT"):
            raise RuntimeError(f"bench teacher did not start: {line!r}")
        self.port = int(line.split()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def _call(self, method: str, path: str) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_client(name: str, cmd: list[str], teacher: Teacher | None, timeout: float = 3600,
               env: dict | None = None) -> Result:
    if teacher is not None:
        teacher.reset()
    res = Result(name, cmd)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env, preexec_fn=_pin_client)
    import threading

    out: dict = {}

    def drain() -> None:
        out["stdout"], out["stderr"] = proc.communicate()

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    while th.is_alive():
        res.peak_rss = max(res.peak_rss, tree_rss(proc.pid))
        th.join(0.02)
        if time.monotonic() - t0 > timeout:
            proc.kill()
    res.wall = time.monotonic() - t0
    res.rc = proc.returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the client, reaped by communicate()
    res.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    res.err_tail = (out.get("stderr") or "")[-2000:]
    for line in reversed((out.get("stdout") or "").splitlines()):
        if line.startswith("{"):
            try:
                res.out = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if teacher is not None:
        st = teacher.stats()
        res.count, res.window = st["count"], st["last"] - st["first"]
        if st["count"]:
            res.first_after_start = st["first"] - t0
            res.first_abs = st["first"]
    if res.rc != 0:
        print(f"  !! {name} exited {res.rc}: {res.err_tail[-800:]}", file=sys.stderr)
    print(f"  {name}: {res.count} req, {res.rate:,.0f} req/s (teacher clock), wall {res.wall:.1f}s, "
          f"peak RSS {res.peak_rss / 2**20:.0f} MB", file=sys.stderr)
    return res


def _pin_client() -> None:
    if hasattr(os, "sched_setaffinity") and NCPU > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, CLIENT_CORES)


def median_of(results: list[Result]) -> Result:
    """The run with the median teacher-clock rate (its RSS and wall come with it)."""
    ordered = sorted(results, key=lambda r: r.rate)
    return ordered[len(ordered) // 2]


# ---------------------------------------------------------------- inputs

def prompts_file(n: int) -> Path:
    path = WORK / f"prompts_{n}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            for i in range(n):
                fh.write(f'{{"prompt": "prompt {i}: what is {i} + {i}? Answer briefly."}}\n')
        tmp.rename(path)
    return path


def fresh_db(name: str) -> Path:
    path = WORK / f"{name}.duckdb"
    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------- the clients

def cmd_synthgen(inp: Path, db: Path, url: str, conc: int, profile: Path | None = None,
                 threads_cpu: bool = False) -> list[str]:
    cmd = [PY, "bench/sg_run.py", "--input", str(inp), "--db", str(db), "--base-url", url,
           "--concurrency", str(conc)]
    return cmd + (["--profile", str(profile)] if profile else []) + (["--threads-cpu"] if threads_cpu else [])


def cmd_cli(inp: Path, db: Path, url: str, conc: int) -> list[str]:
    return [str(Path(PY).parent / "synthgen"), "generate", "--input", str(inp), "--db", str(db),
            "--model", "bench", "--base-url", url, "--concurrency", str(conc)]


def cmd_baseline(kind: str, inp: Path, url: str, conc: int) -> list[str]:
    return [PY, "bench/baselines.py", kind, "--input", str(inp), "--base-url", url,
            "--concurrency", str(conc)]


PEERS = {
    "curator": ("bespokelabs-curator==0.1.31", "bench/peer_curator.py"),
    "distilabel": ("distilabel[openai]==1.5.3", "bench/peer_distilabel.py"),
}
PEER_EXTRAS = {"distilabel": ["requests"]}  # imported by distilabel 1.5.3, not declared


def peer_python(name: str) -> Path | None:
    """The peer's own venv (created on first use); None if it cannot be installed."""
    spec, _ = PEERS[name]
    venv = VENVS / name
    py = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return py
    VENVS.mkdir(parents=True, exist_ok=True)
    print(f"  installing {spec} into {venv} ...", file=sys.stderr)
    try:
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", spec, "orjson",
                        *PEER_EXTRAS.get(name, [])], check=True,
                       timeout=1200)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"  !! could not install {spec}: {exc}", file=sys.stderr)
        return None
    marker.write_text(spec)
    return py


def cmd_peer(name: str, py: Path, inp: Path, url: str, conc: int) -> list[str]:
    return [str(py), PEERS[name][1], "--input", str(inp), "--base-url", url, "--concurrency", str(conc),
            "--workdir", str(WORK / f"peer_{name}")]


# ---------------------------------------------------------------- report helpers

def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def shell(cmd: list[str]) -> str:
    return " ".join(str(c).replace(str(ROOT) + "/", "") for c in cmd)


def machine() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal")), 0)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return [f"- nproc {NCPU}, CPU {model}, memory {mem / 2**30:.1f} GiB, "
            f"load average at start {load[0]:.2f}",
            f"- {platform.platform()}, Python {platform.python_version()}",
            f"- teacher pinned to core {TEACHER_CORE}; clients pinned to cores "
            f"{','.join(map(str, sorted(CLIENT_CORES)))}"]


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("synthgen", "aiohttp", "duckdb", "pyarrow", "orjson", "tenacity", "httpx", "openai"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{pkg} {version(pkg)}")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return ", ".join(out) + f"; synthgen commit {git.stdout.strip() or '?'}" + (
        " (+ uncommitted changes)" if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "synthgen"],
                                                      cwd=ROOT).returncode else "")


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# ---------------------------------------------------------------- the suite

def main() -> None:
    ap = argparse.ArgumentParser(description="Run the synthgen benchmarks; write bench/RESULTS.md.")
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat: a sanity run")
    ap.add_argument("--no-peers", action="store_true", help="skip bespokelabs-curator and distilabel")
    ap.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    args = ap.parse_args()
    q = args.quick
    n_main = 5_000 if q else 20_000          # targets 1-3
    n_slow = 2_000 if q else 5_000           # the ~250 req/s clients (openai SDK, httpx, peers)
    n_slow100 = 500 if q else 1_000          # the same at 100 ms, where httpx manages ~20-70 req/s
    n_small, n_big = (20_000, 100_000) if q else (100_000, 1_000_000)  # target 4
    reps = 1 if q else 3
    conc = 256
    started = time.time()
    md: list[str] = []
    targets: list[tuple[str, str, str]] = []  # (target, figure, verdict)

    # ---- 0 ms teacher: engine overhead (target 1), writer at full speed (target 6b)
    print("== 0 ms teacher", file=sys.stderr)
    t0ms = Teacher(0)
    inp, slow_inp = prompts_file(n_main), prompts_file(n_slow)
    rows0: dict[str, Result] = {}
    bare = []
    sg = []
    for _i in range(reps):  # interleaved, so drift in machine load hits both alike
        bare.append(run_client("aiohttp", cmd_baseline("aiohttp", inp, t0ms.base_url, conc), t0ms))
        sg.append(run_client("synthgen", cmd_synthgen(inp, fresh_db("sg0"), t0ms.base_url, conc), t0ms))
    rows0["aiohttp"], rows0["synthgen"] = median_of(bare), median_of(sg)
    rows0["synthgen CLI"] = run_client("synthgen CLI", cmd_cli(inp, fresh_db("cli0"), t0ms.base_url, conc), t0ms)
    rows0["openai"] = run_client("openai", cmd_baseline("openai", slow_inp, t0ms.base_url, conc), t0ms)
    rows0["httpx"] = run_client("httpx", cmd_baseline("httpx", slow_inp, t0ms.base_url, conc), t0ms)
    peers0: dict[str, Result | str] = {}
    peer_py: dict[str, Path | None] = {}
    if not args.no_peers:
        for name in PEERS:
            peer_py[name] = peer_python(name)
            if peer_py[name] is None:
                peers0[name] = "could not be installed (see the bench log)"
                continue
            r = run_client(name, cmd_peer(name, peer_py[name], slow_inp, t0ms.base_url, conc), t0ms)
            peers0[name] = r if r.rc == 0 and r.count >= n_slow else (
                f"failed (exit {r.rc}, {r.count} requests reached the teacher): "
                + " ".join(r.err_tail.strip().splitlines()[-2:])[:300])

    # ---- concurrency 1,024 (target 3)
    print("== 1,024 in flight", file=sys.stderr)
    sg1024 = median_of([run_client("synthgen@1024", cmd_synthgen(inp, fresh_db("sg1024"), t0ms.base_url, 1024), t0ms)
                        for _ in range(reps)])
    bare1024 = run_client("aiohttp@1024", cmd_baseline("aiohttp", inp, t0ms.base_url, 1024), t0ms)

    # ---- profile of the hot path at full speed
    print("== profile", file=sys.stderr)
    prof_path = WORK / "profile.txt"
    run_client("synthgen (cProfile)", cmd_synthgen(inp, fresh_db("sgprof"), t0ms.base_url, conc, prof_path), t0ms)
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    pyspy_top = None
    if Path(pyspy).exists():
        raw = WORK / "pyspy.txt"
        r = run_client("synthgen (py-spy)", [pyspy, "record", "-r", "200", "-f", "raw", "-o", str(raw), "--",
                                             *cmd_synthgen(inp, fresh_db("sgspy"), t0ms.base_url, conc)], t0ms)
        if r.rc == 0 and raw.exists():
            pyspy_top = pyspy_summary(raw)

    # ---- memory at 100k / 1M (target 4), then resume on the 1M store (target 5)
    print("== memory", file=sys.stderr)
    small = run_client(f"synthgen {n_small:,}", cmd_synthgen(prompts_file(n_small), fresh_db("mem_small"),
                                                              t0ms.base_url, conc), t0ms)
    big_db = fresh_db("mem_big")
    big_cmd = cmd_synthgen(prompts_file(n_big), big_db, t0ms.base_url, conc)
    big = run_client(f"synthgen {n_big:,}", big_cmd, t0ms)
    print("== resume", file=sys.stderr)
    resume_all = run_client("resume (all answered)", big_cmd, t0ms)
    import duckdb

    gap = 1000
    con = duckdb.connect(str(big_db))
    con.execute(f"DELETE FROM responses WHERE request_id IN "
                f"(SELECT request_id FROM responses USING SAMPLE {gap} ROWS)")
    con.close()
    resume_gap = run_client(f"resume ({gap:,} missing)", big_cmd, t0ms)
    t0ms.close()

    # ---- 100 ms teacher: saturation (target 2)
    print("== 100 ms teacher", file=sys.stderr)
    t100 = Teacher(100)
    bare100 = median_of([run_client("aiohttp 100ms", cmd_baseline("aiohttp", inp, t100.base_url, conc), t100)
                         for _ in range(reps)])
    sg100 = median_of([run_client("synthgen 100ms", cmd_synthgen(inp, fresh_db("sg100"), t100.base_url, conc), t100)
                       for _ in range(reps)])
    slow100_inp = prompts_file(n_slow100)
    openai100 = run_client("openai 100ms", cmd_baseline("openai", slow100_inp, t100.base_url, conc), t100)
    httpx100 = run_client("httpx 100ms", cmd_baseline("httpx", slow100_inp, t100.base_url, conc), t100)
    peers100: dict[str, Result | str] = {}
    for name, py in peer_py.items():
        if py is None or isinstance(peers0.get(name), str):
            peers100[name] = "-"
            continue
        r = run_client(f"{name} 100ms", cmd_peer(name, py, slow100_inp, t100.base_url, conc), t100)
        peers100[name] = r if r.rc == 0 and r.count >= n_slow100 else f"failed (exit {r.rc})"
    t100.close()

    # ---- writer alone (target 6a)
    print("== writer alone", file=sys.stderr)
    n_w = 200_000
    wr = []
    for _ in range(reps):
        r = run_client("writer alone", [PY, "bench/sg_run.py", "--writer-only", str(n_w), "--db",
                                        str(fresh_db("writer"))], None)
        wr.append(r.out)
    wr.sort(key=lambda o: o.get("seconds", 1e9))
    w_med = wr[len(wr) // 2]
    w_rate = w_med["answers"] / w_med["seconds"]

    # ================================================================ RESULTS.md
    base = rows0["aiohttp"].rate
    md += ["# synthgen benchmarks", "",
           f"Generated by `bench/run{' --quick' if q else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} "
           f"in {(time.time() - started) / 60:.0f} min.", "", "## Machine", "", *machine(),
           f"- versions: {versions()}", "",
           "## How to read this", "",
           "- **req/s** is measured on the teacher's clock: requests received, first to last. Every client is "
           "timed the same way, and start-up (imports, planning) is excluded; **wall req/s** is requests / the "
           "whole process's wall time (synthgen's includes planning the input into DuckDB and the final commit).",
           "- Every figure is also given as a ratio to a baseline measured in the same run "
           f"(median of {reps} interleaved runs where marked): this machine is shared and noisy.",
           "- synthgen runs as a user would: `synthgen.generate()` in its own process through `bench/sg_run.py` "
           "(default settings, full DuckDB persistence; it only adds a wrapper that reads the writer's counters), "
           "and once through the `synthgen generate` CLI to show they agree.",
           "- Peak RSS is summed over the client's process tree, sampled every 20 ms.", ""]

    # targets summary filled below, inserted at the top
    def row(label: str, r: Result, ref: float, cmd: list[str], n: int) -> str:
        return (f"| {label} | {n:,} | {r.rate:,.0f} | {r.rate / ref:.2f} | {r.wall_rate:,.0f} | {mb(r.peak_rss)} | "
                f"`{shell(cmd)}` |")

    md += ["## Throughput, 0 ms teacher, 256 in flight", "",
           "| client | prompts | req/s | ratio to bare aiohttp | wall req/s | peak RSS | command |",
           "|---|---|---|---|---|---|---|",
           row(f"bare aiohttp + semaphore, no storage (median of {reps})", rows0["aiohttp"], base, rows0["aiohttp"].cmd, n_main),
           row(f"**synthgen** generate() (median of {reps})", rows0["synthgen"], base, rows0["synthgen"].cmd, n_main),
           row("synthgen generate CLI (1 run)", rows0["synthgen CLI"], base, rows0["synthgen CLI"].cmd, n_main),
           row("openai SDK AsyncOpenAI + semaphore", rows0["openai"], base, rows0["openai"].cmd, n_slow),
           row("bare httpx AsyncClient + semaphore", rows0["httpx"], base, rows0["httpx"].cmd, n_slow)]
    best_peer = None
    for name, r in peers0.items():
        if isinstance(r, Result):
            md.append(row(f"{PEERS[name][0]}", r, base, r.cmd, n_slow))
            if best_peer is None or r.rate > best_peer[1].rate:
                best_peer = (name, r)
        else:
            md.append(f"| {PEERS[name][0]} | {n_slow:,} | - | - | - | - | {r} |")
    md.append("")
    sg_r = rows0["synthgen"]
    ratio1 = sg_r.rate / base
    t1 = f"{ratio1:.2f}x bare aiohttp ({sg_r.rate:,.0f} vs {base:,.0f} req/s)"
    ok1 = ratio1 >= 0.70
    if best_peer is not None:
        rp = sg_r.rate / best_peer[1].rate
        t1 += f"; {rp:.1f}x the best peer ({best_peer[0]}, {best_peer[1].rate:,.0f} req/s)"
        ok1 = ok1 and rp >= 5
    else:
        t1 += "; no peer figure (see the peers section)"
    targets.append(("1. engine overhead: >=0.70x bare aiohttp and >=5x the best peer", t1, verdict(ok1)))

    ratio2 = sg100.rate / IDEAL_100MS
    md += ["## Throughput, 100 ms teacher, 256 in flight (ideal 2,560 req/s)", "",
           "| client | prompts | req/s | ratio to ideal 2,560 | ratio to bare aiohttp | wall req/s | peak RSS | command |",
           "|---|---|---|---|---|---|---|---|"]
    for label, r, n in [(f"bare aiohttp + semaphore (median of {reps})", bare100, n_main),
                        (f"**synthgen** generate() (median of {reps})", sg100, n_main),
                        ("openai SDK AsyncOpenAI + semaphore", openai100, n_slow100),
                        ("bare httpx AsyncClient + semaphore", httpx100, n_slow100)]:
        md.append(f"| {label} | {n:,} | {r.rate:,.0f} | {r.rate / IDEAL_100MS:.3f} | {r.rate / bare100.rate:.2f} | "
                  f"{r.wall_rate:,.0f} | {mb(r.peak_rss)} | `{shell(r.cmd)}` |")
    for name, r in peers100.items():
        if isinstance(r, Result):
            md.append(f"| {PEERS[name][0]} | {n_slow100:,} | {r.rate:,.0f} | {r.rate / IDEAL_100MS:.3f} | "
                      f"{r.rate / bare100.rate:.2f} | {r.wall_rate:,.0f} | {mb(r.peak_rss)} | `{shell(r.cmd)}` |")
    md.append("")
    targets.append(("2. saturation, 100 ms teacher: >=0.95 of 2,560 req/s",
                    f"{ratio2:.3f} of ideal ({sg100.rate:,.0f} req/s; bare aiohttp {bare100.rate:,.0f})",
                    verdict(ratio2 >= 0.95)))

    # Whole process, as a user times it: start-up (imports, preflight, validating and planning
    # the input), sending, the final commit and exit, against the ideal time of the sends alone.
    ideal_s = n_main / IDEAL_100MS
    whole = ideal_s / sg100.wall
    whole_bare = ideal_s / bare100.wall
    md += ["## Whole process, 100 ms teacher, 256 in flight", "",
           f"The ideal is {n_main:,} requests at 2,560/s = {ideal_s:.2f} s; the figure is ideal / the process's "
           "wall time from spawn to exit (imports, preflight, planning and the final commit included).", "",
           "| client | wall | ideal / wall | first request after process start | client CPU per answer | command |",
           "|---|---|---|---|---|---|",
           f"| bare aiohttp + semaphore, no storage | {bare100.wall:.2f} s | {whole_bare:.3f} | "
           f"{bare100.first_after_start or float('nan'):.2f} s | {bare100.cpu_per_answer_us:.0f} µs | "
           f"`{shell(bare100.cmd)}` |",
           f"| **synthgen** generate() | {sg100.wall:.2f} s | {whole:.3f} | "
           f"{sg100.first_after_start or float('nan'):.2f} s | {sg100.cpu_per_answer_us:.0f} µs "
           f"({sg100.cpu_per_answer_us / max(bare100.cpu_per_answer_us, 1):.2f}x) | `{shell(sg100.cmd)}` |",
           "", "Client CPU per answer: the client process's user + system time (all its threads, "
           "the writer's included) over the requests the teacher answered; bench/cpu.py measures it "
           "alone, in alternating rounds.", ""]
    targets.append(("issue 28: client CPU per stored answer at a 100 ms teacher: <=300 µs",
                    f"{sg100.cpu_per_answer_us:.0f} µs (bare aiohttp, no storage: {bare100.cpu_per_answer_us:.0f} µs)",
                    verdict(sg100.cpu_per_answer_us <= 300)))
    targets.append(("7. whole process at a 100 ms teacher: >=0.90 of the ideal",
                    f"{whole:.3f} ({sg100.wall:.2f} s for an ideal {ideal_s:.2f} s; bare aiohttp's own {whole_bare:.3f})",
                    verdict(whole >= 0.90)))
    f_small = sg100.first_after_start or float("nan")
    f_big = big.first_after_start or float("nan")
    md += ["## Time to the first request on a new input (every line validated before anything is sent)", "",
           f"| input | first request after process start | ratio to the {n_main:,}-line run | command |",
           "|---|---|---|---|",
           f"| {n_main:,} lines, new store | {f_small:.2f} s | 1.00 | `{shell(sg100.cmd)}` |",
           f"| {n_big:,} lines, new store | {f_big:.2f} s | {f_big / f_small:.2f} | `{shell(big.cmd)}` |", ""]
    targets.append((f"8. first request on a new {n_big:,}-line input: <=0.5 s after process start",
                    f"{f_big:.2f} s ({f_big / f_small:.2f}x the {n_main:,}-line run's {f_small:.2f} s)",
                    verdict(f_big <= 0.5)))

    ratio3 = sg1024.rate / sg_r.rate
    md += ["## Concurrency 1,024 vs 256, 0 ms teacher", "",
           "| client | in flight | req/s | ratio to the same client at 256 | peak RSS | command |", "|---|---|---|---|---|---|",
           f"| synthgen (median of {reps}) | 1,024 | {sg1024.rate:,.0f} | {ratio3:.2f} | {mb(sg1024.peak_rss)} | `{shell(sg1024.cmd)}` |",
           f"| bare aiohttp (1 run) | 1,024 | {bare1024.rate:,.0f} | {bare1024.rate / base:.2f} | {mb(bare1024.peak_rss)} | "
           f"`{shell(bare1024.cmd)}` |", ""]
    targets.append(("3. 1,024 in flight >=0.90x 256", f"{ratio3:.2f} ({sg1024.rate:,.0f} vs {sg_r.rate:,.0f} req/s; "
                    f"bare aiohttp's own: {bare1024.rate / base:.2f})",
                    verdict(ratio3 >= 0.90)))

    ratio4 = big.peak_rss / small.peak_rss if small.peak_rss else 0
    md += ["## Memory: prompts from a JSONL file, 0 ms teacher, 256 in flight", "",
           "| prompts | peak RSS | ratio to the smaller run | answered | wall | req/s | command |", "|---|---|---|---|---|---|---|"]
    for r, n in ((small, n_small), (big, n_big)):
        md.append(f"| {n:,} | {mb(r.peak_rss)} | {r.peak_rss / small.peak_rss:.2f} | {r.out.get('answered', '?'):,} | "
                  f"{r.wall:.0f} s | {r.rate:,.0f} | `{shell(r.cmd)}` |")
    md += ["", "DuckDB's own memory when each run's writer closed (`duckdb_memory()`, MB, by kind; "
           "the profile behind this target):", ""]
    for r, n in ((small, n_small), (big, n_big)):
        kinds = ", ".join(f"{k} {v:g}" for k, v in r.out.get("duckdb_memory_mb", {}).items())
        md.append(f"- {n:,} prompts: {kinds or '?'} (memory_limit {r.out.get('duckdb_memory_limit', '?')})")
    md.append("")
    ok4 = big.peak_rss <= 300 * 2**20 and ratio4 <= 1.3 and big.out.get("answered") == n_big
    targets.append((f"4. {n_big:,} prompts: peak RSS <=300 MB and <=1.3x the {n_small:,} run",
                    f"{mb(big.peak_rss)}, {ratio4:.2f}x ({mb(small.peak_rss)})", verdict(ok4)))

    ta = resume_all.wall
    tg = resume_gap.first_after_start
    tc = _first_after_call(resume_gap)
    md += [f"## Resume on the {n_big:,}-prompt store, the same command again", "",
           "| case | requests sent | synthgen's summary | time | command |", "|---|---|---|---|---|",
           f"| everything answered | {resume_all.count:,} | {_summary(resume_all.out)} | {ta:.2f} s, whole process "
           f"(nothing to send) | `{shell(big_cmd)}` |",
           f"| {gap:,} answers deleted first | {resume_gap.count:,} | {_summary(resume_gap.out)} | "
           f"{tg if tg is not None else float('nan'):.2f} s from process start to the teacher receiving the first "
           f"request, of which {resume_gap.out.get('import_seconds', float('nan')):.2f} s interpreter start and "
           f"imports and {tc:.2f} s from the generate() call (whole process {resume_gap.wall:.2f} s) | same |", ""]
    ok5 = (resume_all.count == 0 and resume_gap.count == gap and resume_gap.out.get("answered") == gap
           and tg is not None and tg <= 5)  # the all-answered case's wall time also counts its exit
    targets.append(("5. resume on 1,000,000 answered: sends nothing answered, <=5 s to the first request"
                    if not q else f"5. resume on {n_big:,} answered (quick: not the 1M target)",
                    f"sent {resume_all.count} when all answered; {resume_gap.count:,} of {gap:,} missing sent; "
                    f"first request {tg if tg is not None else float('nan'):.2f} s after process start "
                    f"({tc:.2f} s after the generate() call)", verdict(ok5)))

    busy = sg_r.out.get("busy_seconds", 0.0)
    cpu = sg_r.out.get("cpu_seconds", 0.0)
    share = cpu / sg_r.window if sg_r.window else 0
    busy_share = busy / sg_r.window if sg_r.window else 0
    md += ["## Store: the DuckDB writer", "",
           "| case | figure | ratio to target | command |", "|---|---|---|---|",
           f"| writer alone, {n_w:,} answers into a new store (median of {reps}) | {w_rate:,.0f} answers/s "
           f"({w_med['commits']} commits; writer thread CPU {w_med.get('cpu_seconds', 0):.2f} s) | "
           f"{w_rate / 50_000:.2f} of 50,000 | "
           f"`{PY.replace(str(ROOT) + '/', '')} bench/sg_run.py --writer-only {n_w} --db bench/.work/writer.duckdb` |",
           f"| writer at full engine speed (the median synthgen run above, {sg_r.rate:,.0f} req/s) | writer thread "
           f"CPU {cpu:.2f} s over a {sg_r.window:.2f} s run = **{share:.1%} of a core**; wall time inside commits "
           f"{busy:.2f} s = {busy_share:.1%} ({sg_r.out.get('commits', '?')} commits) | {share / 0.10:.2f} of the "
           f"10% budget | as the synthgen row |", "",
           "The writer's CPU is `time.thread_time()` of its thread (`Writer.cpu_seconds`); `busy_seconds` is wall "
           "time inside commits, which also counts waiting for the GIL and for fsync, so it overstates CPU on a "
           "loaded machine.", ""]
    targets.append(("6. writer alone >=50,000 answers/s; <=10% of a core at full speed",
                    f"{w_rate:,.0f} answers/s; {share:.1%} of a core (CPU time of the writer thread)",
                    verdict(w_rate >= 50_000 and share <= 0.10)))

    md += ["## Profile of the hot path (synthgen, 0 ms teacher, 256 in flight)", ""]
    if pyspy_top:
        md += ["py-spy (`py-spy record -r 200 -f raw -- <the synthgen command>`, all threads): the share of "
               "samples in each phase of the run, then the event loop's top functions by own samples (self) and "
               "by samples with the function on the stack (total):", "", "```", *pyspy_top, "```", ""]
    if prof_path.exists():
        text = prof_path.read_text().splitlines()
        start = next((i for i, line in enumerate(text) if "ncalls" in line), 0)
        md += ["cProfile of the main thread (`bench/sg_run.py --profile`; it slows the loop several times, so "
               "read it for what is called how often), top 25 by own time:", "", "```",
               *[line.replace(str(ROOT) + "/", "") for line in text[start:start + 26]], "```", ""]
    notes = BENCH / "NOTES.md"  # the analysis that goes with the figures (gaps, changes, causes)
    if notes.exists():
        md += ["", *notes.read_text().splitlines()]
    head = ["| target | figure | verdict |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in targets], ""]
    md = [*md[:2], md[2], "", "## Targets", "", *head, *md[3:]]
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


def _first_after_call(r: Result) -> float:
    """Seconds from synthgen's generate() call to the teacher's first request (both on the
    system-wide monotonic clock)."""
    if r.first_abs is None or "t_call" not in r.out:
        return float("nan")
    return r.first_abs - r.out["t_call"]


def _summary(out: dict) -> str:
    if not out:
        return "?"
    return (f"{out.get('total', 0):,} planned, {out.get('already_done', 0):,} already done, "
            f"{out.get('answered', 0):,} answered now, plan reused: {out.get('plan_reused')}")


PHASES = (  # (label, a frame that marks it), first match wins, checked leaf-first
    ("writer thread", "Writer._loop"),
    ("feed: pending query batches (DuckDB, worker thread)", "_next_batch"),
    ("event loop (engine, client, aiohttp)", "BaseEventLoop._run_once"),
    ("planning the input into DuckDB", "make_plan"),
    ("imports", "_find_and_load"),
)


def pyspy_summary(raw: Path, top: int = 20) -> list[str]:
    """Aggregate py-spy's collapsed stacks: the share of each phase, then the top functions
    of the event loop by own samples (self) and with the function on the stack (total)."""
    from collections import Counter

    phases, own, total = Counter(), Counter(), Counter()
    n = loop_n = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            c = int(count)
        except ValueError:
            continue
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        n += c
        names = [f.split(" (")[0] for f in frames]
        phase = next((label for label, mark in PHASES if mark in names), "other")
        phases[phase] += c
        if phase.startswith("event loop"):
            loop_n += c
            own[frames[-1]] += c
            for f in set(frames):
                total[f] += c
    out = [f"{n} samples; by phase:"]
    out += [f"{100 * c / n:6.1f}%  {p}" for p, c in phases.most_common()]
    out += ["", f"event loop only ({loop_n} samples), self % of the event loop:"]
    out += [f"{100 * c / loop_n:6.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "event loop only, total % (function on the stack):"]
    skip = ("BaseEventLoop.", "Runner.run", "run (asyncio", "Handle._run", "_generate", "generate (",
            "main (", "<module>", "_drive", "Engine.run")
    out += [f"{100 * c / loop_n:6.1f}%  {f}" for f, c in total.most_common(top + 20)
            if not f.startswith(skip)][:top]
    return out


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return f"{name} ({path})"


if __name__ == "__main__":
    main()
