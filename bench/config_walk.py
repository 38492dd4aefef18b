"""The config walk of issue 28: follow `generate`'s parameters through the calls.

Runs `synthgen.generate()` once on a loopback teacher (one prompt), each followed
parameter set to a value no default has, under `sys.setprofile`. A call is on a
parameter's walk when one of its arguments is that value, or an object holding it (the
config, a part of it, a transport, a policy...), or when it is a method whose object holds
the value and whose code reads that attribute. The calls in order are the walk a
newcomer makes following the parameter: the files entered, the stays (a run of calls in
one file) and the returns to a file already left. Without `--param`, every parameter
below is followed at once (the whole configuration's walk).

The issue does not say how its walk was made, and none of these reproduces its figures
for b9c2200 (56 stays in 26 files, 30 returns), so `--walk` gives the other readings
measured for the closing notes:

    values  the parameters above, by value (the default)
    wide    those and the input and store paths, the model name and the base URL
    config  the calls that receive the config object itself (or read it from self)
    every   every synthgen function, at its first call: the whole code a run goes through

`--checkout DIR` measures another tree's synthgen (e.g. `git worktree add /tmp/b9 b9c2200`).

    .venv/bin/python bench/config_walk.py [--param max_attempts] [--walk wide] [--show]
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from teacher_server import TeacherServer, write_jsonl

ROOT = Path(__file__).resolve().parent.parent / "synthgen"  # main() sets the tree measured
MODEL = "teacher-model-x"
RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
# Values no default has, so that meeting one means meeting the parameter.
FOLLOWED = {"max_attempts": 7, "timeout": 123.25, "temperature": 0.4375, "max_tokens": 77,
            "rate_limit_wait": 987.5, "price_in": 0.1234375, "flush_interval": 0.09375,
            "concurrency": 13}


def _holds(value: object, wanted: dict[str, object], depth: int = 0) -> set[str]:
    """The followed parameters `value` is, or holds (in its attributes, two levels deep)."""
    found = {name for name, v in wanted.items() if type(value) is type(v) and value == v}
    if depth < 2 and hasattr(value, "__dict__") and not inspect.ismodule(value) \
            and not isinstance(value, type):
        for attr in list(vars(value).values()):
            found |= _holds(attr, wanted, depth + 1)
    if depth < 2 and type(value).__name__ in ("GenerateConfig",):
        for name in wanted:
            if getattr(value, name, None) == wanted[name]:
                found.add(name)
    return found


def _reads(frame, wanted: dict[str, object]) -> str | None:
    """The argument through which the call meets a followed parameter (None: it does not)."""
    code = frame.f_code
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    for name in names:
        value = frame.f_locals.get(name)
        if name == "self":
            held = {k for k, v in getattr(value, "__dict__", {}).items() if _holds(v, wanted)}
            if held & set(code.co_names):
                return "self." + sorted(held & set(code.co_names))[0]
        elif _holds(value, wanted):
            return name
    return None


def _config(frame) -> str | None:
    """The argument through which the call receives the config object itself."""
    code = frame.f_code
    for name in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]:
        value = frame.f_locals.get(name)
        if type(value).__name__ == "GenerateConfig":
            return name
        if name == "self":
            for attr, held in getattr(value, "__dict__", {}).items():
                if type(held).__name__ == "GenerateConfig" and attr in code.co_names:
                    return "self." + attr
    return None


def walk(wanted: dict[str, object], how: str = "values") -> list[str]:
    import synthgen

    calls: list[str] = []
    entered: dict[int, object] = {}  # frames of generators and coroutines already entered
    first: set[object] = set()  # code objects already called (--walk every)

    def profile(frame, event, arg):
        if event != "call":
            return
        path = Path(frame.f_code.co_filename)
        if ROOT not in path.parents:
            return
        if frame.f_code.co_flags & RESUMABLE:  # a generator or coroutine: its first entry only
            if id(frame) in entered:
                return
            entered[id(frame)] = frame
        if how == "every":
            via = "" if frame.f_code not in first else None
            first.add(frame.f_code)
        else:
            via = _config(frame) if how == "config" else _reads(frame, wanted)
        if via is not None:
            calls.append(f"{path.relative_to(ROOT.parent)}:{frame.f_code.co_name}({via})")

    options = {k: v for k, v in FOLLOWED.items() if k != "price_in"} | {"price_in": FOLLOWED["price_in"]}
    with tempfile.TemporaryDirectory() as tmp, TeacherServer(models=(MODEL,)) as teacher:
        inp, db = Path(tmp) / "in.jsonl", Path(tmp) / "c.duckdb"
        write_jsonl(inp, [{"prompt": "hello"}])
        if how == "wide":
            wanted = wanted | {"input": inp, "db": db, "model": MODEL, "base_url": teacher.base_url}
        sys.setprofile(profile)
        try:
            synthgen.generate(input=inp, db=db, model=MODEL, base_urls=[teacher.base_url], **options)
        finally:
            sys.setprofile(None)
    return calls


def measure(calls: list[str]) -> dict[str, int]:
    stays: list[str] = []
    for call in calls:
        f = call.split(":")[0]  # path:function(argument)
        if not stays or stays[-1] != f:
            stays.append(f)
    seen: set[str] = set()
    returns = 0
    for f in stays:
        returns += f in seen
        seen.add(f)
    return {"calls": len(calls), "stays": len(stays), "files": len(seen), "returns": returns}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--param", choices=sorted(FOLLOWED), help="follow this one (default: all at once)")
    ap.add_argument("--walk", choices=("values", "wide", "config", "every"), default="values",
                    help="which reading of the walk (see the docstring)")
    ap.add_argument("--checkout", type=Path, help="measure the synthgen of this tree instead")
    ap.add_argument("--show", action="store_true", help="print every call of the walk")
    args = ap.parse_args()
    global ROOT
    if args.checkout:
        sys.path.insert(0, str(args.checkout.resolve()))
    import synthgen

    ROOT = Path(synthgen.__file__).resolve().parent
    print(f"synthgen at {ROOT}; --walk {args.walk}")
    single = args.param or args.walk in ("config", "every")
    followed = [args.param] if single else [None, *sorted(FOLLOWED)]
    for name in followed:
        wanted = {name: FOLLOWED[name]} if name else FOLLOWED
        calls = walk(wanted, args.walk)
        if args.show:
            print("\n".join(calls))
        m = measure(calls)
        label = args.walk if args.walk in ("config", "every") else name or "all parameters"
        print(f"{label:>16}: {m['calls']:3d} calls, {m['stays']:3d} stays in "
              f"{m['files']:2d} files, {m['returns']:3d} returns to a file already left")


if __name__ == "__main__":
    main()
