"""The config walk of issue 28: follow `generate`'s configuration through the calls.

Runs `synthgen.generate()` once on a loopback teacher (one prompt) under `sys.setprofile`
and keeps every call into synthgen's own code whose arguments hold the run's configuration
(the GenerateConfig, or one of its parts: any object the config hands out). The calls, in
order, give the walk a newcomer makes following one parameter: how many files it enters,
how many stays (a run of calls in one file), how many returns to a file already left.

    .venv/bin/python bench/config_walk.py [--show]
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from teacher_server import TeacherServer, write_jsonl  # noqa: E402

import synthgen  # noqa: E402
from synthgen.config import GenerateConfig  # noqa: E402

ROOT = Path(synthgen.__file__).resolve().parent
RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _carries_config(frame, parts: set[int]) -> bool:
    code = frame.f_code
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    for name in names:
        value = frame.f_locals.get(name)
        if isinstance(value, GenerateConfig):
            parts.update(id(getattr(value, p, None)) for p in getattr(value, "PARTS", ()))
            return True
        if id(value) in parts and value is not None:
            return True
        if name == "self" and value is not None and any(
                isinstance(v, GenerateConfig) or id(v) in parts for v in vars(value).values()
                if not callable(v)) if hasattr(value, "__dict__") else False:
            return True
    return False


def walk() -> list[str]:
    files: list[str] = []
    parts: set[int] = set()
    entered: dict[int, object] = {}  # frames of generators and coroutines already entered

    def profile(frame, event, arg):
        if event != "call":
            return
        if frame.f_code.co_flags & RESUMABLE:  # a generator or coroutine: its first entry only
            if id(frame) in entered:
                return
            entered[id(frame)] = frame
        path = Path(frame.f_code.co_filename)
        if ROOT not in path.parents or not _carries_config(frame, parts):
            return
        rel = str(path.relative_to(ROOT.parent))
        files.append(f"{rel}:{frame.f_code.co_name}")

    with tempfile.TemporaryDirectory() as tmp, TeacherServer() as teacher:
        write_jsonl(Path(tmp) / "in.jsonl", [{"prompt": "hello"}])
        sys.setprofile(profile)
        try:
            synthgen.generate(input=Path(tmp) / "in.jsonl", db=Path(tmp) / "c.duckdb", model="m",
                              base_urls=[teacher.base_url])
        finally:
            sys.setprofile(None)
    return files


def measure(calls: list[str]) -> dict[str, int]:
    stays: list[str] = []
    for call in calls:
        f = call.split(":")[0]
        if not stays or stays[-1] != f:
            stays.append(f)
    seen: set[str] = set()
    returns = 0
    for f in stays:
        if f in seen:
            returns += 1
        seen.add(f)
    return {"calls": len(calls), "stays": len(stays), "files": len(seen), "returns": returns}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--show", action="store_true", help="print every call of the walk")
    args = ap.parse_args()
    calls = walk()
    if args.show:
        print("\n".join(calls))
    m = measure(calls)
    print(f"config walk: {m['calls']} calls, {m['stays']} stays in {m['files']} files, "
          f"{m['returns']} returns to a file already left")


if __name__ == "__main__":
    main()
