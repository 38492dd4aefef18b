"""The seams hold: what each room may import, a silent library, a tested public API.

The architecture's "lines that must never exist" are checked here from the source itself
(an import graph built with `ast`), so a shortcut across rooms fails the suite.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env
from teacher_server import make_prompts, write_jsonl

import synthgen

PACKAGE = Path(synthgen.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports, at any depth of the file (lazy imports count too)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {name: imports_of(name, path) for name, path in modules().items()}


def imported_by(room: str) -> dict[str, set[str]]:
    return {n: deps for n, deps in GRAPH.items() if n == room or n.startswith(room + ".")}


def reaches(deps: set[str], forbidden: str) -> set[str]:
    return {d for d in deps if d == forbidden or d.startswith(forbidden + ".")}


@pytest.mark.parametrize(("room", "forbidden"), [
    ("synthgen.engine", "duckdb"),
    ("synthgen.engine", "aiohttp"),
    ("synthgen.engine", "synthgen.store"),
    ("synthgen.engine", "synthgen.plan"),
    ("synthgen.engine", "synthgen.student"),
    ("synthgen.engine", "torch"),
    ("synthgen.engine", "openai"),
    ("synthgen.store", "aiohttp"),
    ("synthgen.store", "httpx"),
    ("synthgen.store", "synthgen.backends"),
    ("synthgen.store", "synthgen.engine"),
    ("synthgen.backends", "duckdb"),
    ("synthgen.backends", "synthgen.store"),
    ("synthgen.backends", "synthgen.engine"),
    ("synthgen.engine", "synthgen.batch"),
    ("synthgen.store", "synthgen.batch"),
    ("synthgen.backends", "synthgen.batch"),
    ("synthgen.batch", "aiohttp"),
    ("synthgen.batch", "synthgen.engine"),
    ("synthgen.batch", "synthgen.run"),
    ("synthgen.batch", "synthgen.cli"),
    ("synthgen.types", "aiohttp"),
    ("synthgen.types", "duckdb"),
    ("synthgen.run", "synthgen.student"),
    ("synthgen.run", "torch"),
    # recipes are a use of the engine through run.generate(): no HTTP, no engine parts of
    # their own; the store knows stages, not recipes; filters see rows, not the database
    ("synthgen.recipes", "aiohttp"),
    ("synthgen.recipes", "httpx"),
    ("synthgen.recipes", "synthgen.backends"),
    ("synthgen.recipes", "synthgen.engine"),
    ("synthgen.recipes", "synthgen.student"),
    ("synthgen.recipes.filters", "duckdb"),
    ("synthgen.recipes.filters", "synthgen.store"),
    ("synthgen.store", "synthgen.recipes"),
    # the Ray room is reached from the CLI only, when a command asks for Ray
    ("synthgen.engine", "synthgen.cluster"),
    ("synthgen.store", "synthgen.cluster"),
    ("synthgen.plan", "synthgen.cluster"),
    ("synthgen.run", "synthgen.cluster"),
    ("synthgen.sharding", "synthgen.cluster"),
    ("synthgen.teacher", "synthgen.cluster"),
    # the report and the viewer read the store and nothing else
    *[(room, forbidden) for room in ("synthgen.report", "synthgen.view")
      for forbidden in ("synthgen.engine", "synthgen.backends", "synthgen.run", "synthgen.plan",
                        "synthgen.student", "synthgen.teacher", "aiohttp", "httpx", "torch", "openai")],
    ("synthgen.view", "matplotlib"),
    # teacher scoring drives the engine with a transport (backends) and a sink (store): no
    # HTTP or SQL of its own; nothing below it knows scoring exists
    ("synthgen.scoring", "aiohttp"),
    ("synthgen.scoring", "httpx"),
    ("synthgen.scoring", "duckdb"),
    ("synthgen.store", "synthgen.scoring"),
    ("synthgen.engine", "synthgen.scoring"),
    ("synthgen.backends", "synthgen.scoring"),
    ("synthgen.backends", "torch"),
    ("synthgen.run", "synthgen.scoring"),
    # what generate checks before a teacher starts is read from the input and the store only
    *[("synthgen.precheck", forbidden) for forbidden in ("aiohttp", "httpx", "synthgen.backends",
                                                        "synthgen.engine", "synthgen.teacher")],
    ("synthgen.store", "synthgen.report"),
    ("synthgen.store", "synthgen.view"),
    # the config in parts: below the run layer, a module takes the part it needs (the
    # engine its limits, a batch its settings), never the whole GenerateConfig
    *[(room, "synthgen.config") for room in ("synthgen.engine", "synthgen.store", "synthgen.backends",
                                             "synthgen.batch", "synthgen.inputs", "synthgen.types")],
])
def test_a_room_never_imports_what_it_must_not(room, forbidden):
    offenders = {n: reaches(deps, forbidden) for n, deps in imported_by(room).items()}
    assert not {n: d for n, d in offenders.items() if d}, f"{room} must not import {forbidden}"


def test_only_the_cluster_room_imports_ray():
    """Ray is the [ray] extra: any other module importing it (lazily or not) would break a
    command for everyone who installed synthgen without it."""
    offenders = {n: reaches(deps, "ray") for n, deps in GRAPH.items()
                 if n != "synthgen.cluster" and not n.startswith("synthgen.cluster.")}
    assert not {n: d for n, d in offenders.items() if d}, "only synthgen.cluster may import ray"
    assert any(reaches(deps, "ray") for deps in imported_by("synthgen.cluster").values())


def test_no_two_modules_import_each_other():
    names = set(GRAPH)
    pairs = set()
    for a, deps in GRAPH.items():
        for b in deps & names:
            if b != a and a in GRAPH[b] and not (b.startswith(a + ".") or a.startswith(b + ".")):
                pairs.add(tuple(sorted((a, b))))
    assert not pairs


def test_library_code_never_prints():
    printing = []
    for name, path in modules().items():
        if name.startswith("synthgen.cli") or name in ("synthgen.__main__", "synthgen.sandbox.boot"):
            continue  # the CLI and its entry point, and the sandbox's child program, own their output
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.append(f"{name}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") \
                    and getattr(node.value, "id", None) == "sys":
                printing.append(f"{name}:{node.lineno} sys.{node.attr}")
    assert not printing


# What one run holds (its store handle, config, plan, progress, transports, signal flag...):
# a function handed more than five of these is a hub every feature gets attached to, as
# run.py's ten private functions were (issue 28). Synonyms count: `given` transports too.
RUN_STATE = {"con", "cfg", "config", "run_id", "plan_key", "planner", "plan", "summary", "stats",
             "started", "transports", "transport", "given", "reporting", "stop", "client", "writer",
             "governor", "sender", "sink", "limit", "template", "checked", "api_key"}


def test_no_function_carries_more_than_five_pieces_of_run_state():
    heavy = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                state = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg in RUN_STATE]
                if len(state) > 5:
                    heavy.append(f"{name}:{node.lineno} {node.name}({', '.join(state)})")
    assert not heavy


def test_the_store_commits_from_one_batching_thread():
    """Both store writers (answers, teacher scores) are made of store/batches.py's thread:
    a third queue-flush-commit loop would be a third place for a lost-batch bug to hide."""
    starters = []
    for name, path in modules().items():
        if not name.startswith("synthgen.store") or name in ("synthgen.store.batches", "synthgen.store.live"):
            continue  # live.py's thread serves reads during a run; it commits nothing
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("Thread", "SimpleQueue", "Queue") \
                    and getattr(node.value, "id", None) in ("threading", "queue"):
                starters.append(f"{name}:{node.lineno}")
    assert not starters


def test_only_the_http_backend_reads_status_codes():
    """A reaction decided by status code anywhere else is a second, diverging policy.
    The backends room reads them (chat requests in `http`, the Batch API's control calls
    and file lines in `openai_batch`, which maps them with http's own `fault_for_status`)."""
    def numeric(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, int)
        if isinstance(node, ast.Tuple | ast.Set | ast.List):
            return any(numeric(e) for e in node.elts)
        return isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("range", "frozenset")

    suspects = []
    for name, path in modules().items():
        if name.startswith("synthgen.backends.") or name == "synthgen.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            parts = (node.left, *node.comparators)
            if any(isinstance(p, ast.Attribute) and p.attr in ("status_code", "status") for p in parts) \
                    and any(numeric(p) for p in parts):
                suspects.append(f"{name}:{node.lineno}")
    # the teacher launcher's health checks of its own servers are not teacher faults
    assert all(s.startswith(("synthgen.teacher", "synthgen.cli.teacher")) for s in suspects), suspects


def test_the_public_api_is_what_all_says():
    for name in synthgen.__all__:
        assert getattr(synthgen, name) is not None, name
    with pytest.raises(AttributeError):
        synthgen.no_such_name  # noqa: B018


def test_generate_from_python_writes_nothing_to_stdout_or_stderr(teacher, tmp_path, capfd):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(40)] +
                [{"prompt": "x #always=400"}])
    summary = synthgen.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m",
                                base_urls=[teacher.base_url, "http://127.0.0.1:9/v1"])
    assert (summary.answered, summary.failed) == (40, 1)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    # ... unless asked: a stream gets the warning (the dead endpoint) and progress lines
    stream = io.StringIO()
    synthgen.generate(input=tmp_path / "in.jsonl", db=tmp_path / "d.duckdb", model="m",
                      base_urls=[teacher.base_url, "http://127.0.0.1:9/v1"], progress=stream,
                      progress_interval=0.01)
    assert "warning: http://127.0.0.1:9/v1 is unreachable" in stream.getvalue()
    assert capfd.readouterr() == ("", "")


IMPORTS = """
import sys
from pathlib import Path
import synthgen
summary = synthgen.generate(input=Path(sys.argv[1]), db=Path(sys.argv[2]), model="m",
                            base_urls=[sys.argv[3]])
assert summary.answered == 5, summary
heavy = sorted(m for m in ("torch", "openai", "transformers", "rich", "pyarrow", "pandas", "jinja2", "ray")
               if m in sys.modules)
print(",".join(heavy))
"""


def test_the_generate_path_imports_neither_torch_nor_the_openai_sdk(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(5)])
    result = subprocess.run([sys.executable, "-c", IMPORTS, str(tmp_path / "in.jsonl"),
                             str(tmp_path / "c.duckdb"), teacher.base_url],
                            capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the generate path imported: {result.stdout}"


def test_install_hints_name_this_synthgens_own_source(monkeypatch):
    """`pip install 'synthgen[x]'` installs an unrelated PyPI project: every hint is
    hints.pip_install's, which names where this synthgen came from."""
    from synthgen.errors import ConfigError
    from synthgen.hints import pip_install
    from synthgen.recipes.filters import dedup, verify
    from synthgen.report import require_matplotlib

    spelled = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
               if path.name != "hints.py" and "pip install 'synthgen[" in path.read_text()]
    assert spelled == []
    for module, extra, call in (("matplotlib", "report", require_matplotlib),
                                ("datasketch", "recipes", lambda: dedup.near_duplicates(
                                    [("a", "x y z")], {"candidates": None, "threshold": 0.9, "num_perm": 8})),
                                ("math_verify", "recipes", lambda: verify._math("1", "1"))):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
        with pytest.raises(ConfigError) as caught:
            call()
        assert pip_install(extra) in str(caught.value), caught.value


def test_a_run_refused_before_it_sends_loads_no_http_client():
    """generate() checks its input before it needs aiohttp (0.2 s of import): importing the
    run, the CLI's generate command and the precheck must not load it."""
    code = ("import sys, synthgen.run, synthgen.cli.generate, synthgen.precheck; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'httpx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(),
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
