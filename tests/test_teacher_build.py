"""`synthgen teacher build` end to end on a tiny stand-in sdist (seconds, not minutes).

The real build compiles llama.cpp for ~10 minutes; what can break in our code is
around it: extracting the sdist, finding vendor/llama.cpp, the cmake calls, the
atomic copy into the per-machine cache, and returning early when cached.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from synthgen.cli.teacher import teacher
from synthgen.errors import TeacherError
from synthgen.teacher import model, ready
from synthgen.teacher.build import compile_percent
from synthgen.teacher.local import LLAMA_CPP_PYTHON_VERSION, build_llama_server

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("cc") is None, reason="needs cmake and cc"
)

CMAKELISTS = """\
cmake_minimum_required(VERSION 3.14)
project(fake_llama C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-server server.c)
"""
SERVER_C = '#include <stdio.h>\nint main(void) { puts("fake llama-server"); return 0; }\n'


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    root = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_build_caches_binary_and_is_idempotent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # The CLI also fetches the model and proves the server answers; neither fits a stand-in.
    monkeypatch.setattr(model, "ensure_gguf", lambda announce=None: tmp_path / "m.gguf")
    monkeypatch.setattr(ready, "check_server", lambda command, log_dir=None: None)
    sdist = make_sdist(
        tmp_path / "sdist.tar.gz",
        {"vendor/llama.cpp/CMakeLists.txt": CMAKELISTS, "vendor/llama.cpp/server.c": SERVER_C},
    )
    said: list[str] = []
    built = build_llama_server(sdist=sdist, jobs=1, announce=said.append)
    expected = tmp_path / "cache/synthgen/llama-server" / LLAMA_CPP_PYTHON_VERSION / "llama-server"
    assert built == expected and built.stat().st_mode & 0o111
    assert "-DGGML_NATIVE=ON" in (built.parent / "build.log").read_text()
    assert any("log:" in line for line in said)
    # Progress on screen: the four steps, and the compile's percentage (make prints it).
    assert [line.split("]")[0] for line in said if line.startswith("[")] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert any(line.strip().startswith("compiling: 100%") for line in said)

    mtime = built.stat().st_mtime_ns
    again = CliRunner().invoke(teacher, ["build", "--sdist", str(sdist)])
    assert again.exit_code == 0 and again.stdout.strip() == str(built)
    assert "already built" in again.stderr and built.stat().st_mtime_ns == mtime


def test_build_failure_quotes_the_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    broken = SERVER_C.replace("return 0;", "return syntax error")
    sdist = make_sdist(
        tmp_path / "sdist.tar.gz",
        {"vendor/llama.cpp/CMakeLists.txt": CMAKELISTS, "vendor/llama.cpp/server.c": broken},
    )
    with pytest.raises(TeacherError, match=r"failed \(exit \d+\); log: .*build\.log"):
        build_llama_server(sdist=sdist, jobs=1, announce=None)
    assert not (tmp_path / "cache/synthgen/llama-server" / LLAMA_CPP_PYTHON_VERSION / "llama-server").exists()


def test_sdist_without_vendored_llama_cpp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sdist = make_sdist(tmp_path / "sdist.tar.gz", {"README.md": "nothing here"})
    with pytest.raises(TeacherError, match=r"no vendor/llama\.cpp"):
        build_llama_server(sdist=sdist, announce=None)


def test_compile_percent_reads_make_and_ninja_lines() -> None:
    assert compile_percent("[ 42%] Building CXX object ggml/src/ggml.c.o") == 42
    assert compile_percent("[100%] Linking CXX executable bin/llama-server") == 100
    assert compile_percent("[12/48] Building CXX object common/arg.cpp.o") == 25
    assert compile_percent("-- Configuring done") is None


def test_build_falls_back_to_source_when_the_prebuilt_server_fails(tmp_path: Path, monkeypatch) -> None:
    """`teacher build`: a prebuilt server that fails its check (say SIGILL) leads to the compile."""
    from synthgen.teacher import local

    monkeypatch.setattr(model, "ensure_gguf", lambda announce=None: tmp_path / "m.gguf")
    monkeypatch.setattr(local, "cached_binary", lambda: None)
    monkeypatch.delenv("SYNTHGEN_LLAMA_SERVER", raising=False)
    monkeypatch.setattr(ready, "find_llama_server", local.prebuilt_command)
    checked: list[str] = []

    def check(command, log_dir=None):
        checked.append(command.kind)
        return "the server was killed by SIGILL" if command.kind == "prebuilt" else None

    monkeypatch.setattr(ready, "check_server", check)
    monkeypatch.setattr(ready, "build_llama_server", lambda **kw: tmp_path / "llama-server")
    result = CliRunner().invoke(teacher, ["build"])
    assert result.exit_code == 0, result.output
    assert checked == ["prebuilt", "source build"]
    assert "SIGILL" in result.stderr and "compiling one instead" in result.stderr
    assert result.stdout.strip() == str(tmp_path / "llama-server")


QUANTIZE_C = '#include <stdio.h>\nint main(void) { puts("fake llama-quantize"); return 0; }\n'


def test_llama_quantize_builds_from_the_cached_sdist_beside_llama_server(tmp_path: Path, monkeypatch) -> None:
    """`student export --quant q4_k_m` needs llama-quantize: the same four steps, its own log,
    cached beside llama-server; the sdist is downloaded once into the cache and reused."""
    from synthgen.teacher import build, sources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sdist = make_sdist(tmp_path / "sdist.tar.gz", {
        "vendor/llama.cpp/CMakeLists.txt": CMAKELISTS + "add_executable(llama-quantize quantize.c)\n",
        "vendor/llama.cpp/server.c": SERVER_C,
        "vendor/llama.cpp/quantize.c": QUANTIZE_C,
    })
    cached = sources.sources_dir() / sources.SDIST_NAME
    cached.parent.mkdir(parents=True)
    shutil.copy(sdist, cached)  # as if `pip download` had run once before
    said: list[str] = []
    built = build.build_llama_tool(build.QUANTIZE, jobs=1, announce=said.append)
    assert built == build.cached_binary_path(build.QUANTIZE) == built.parent / "llama-quantize"
    assert built.parent == build.cached_binary_path().parent and build.cached_binary() is None
    assert (built.parent / "build-llama-quantize.log").is_file()
    assert said[1].startswith(f"[1/4] sources: {cached}")
    assert any("compile llama-quantize (4-8 min" in line for line in said)
    assert build.cached_binary(build.QUANTIZE) == built


def test_the_converter_is_unpacked_from_the_top_vendor_tree_only(tmp_path: Path, monkeypatch) -> None:
    """The real sdist also holds the submodule's git data under .git/modules/vendor/llama.cpp/;
    the converter and what it imports come from the top-level vendor/llama.cpp, nothing else."""
    from synthgen.teacher import sources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sdist = make_sdist(tmp_path / "sdist.tar.gz", {
        ".git/modules/vendor/llama.cpp/config": "[core]",
        "vendor/llama.cpp/convert_hf_to_gguf.py": "print('converter')",
        "vendor/llama.cpp/conversion/__init__.py": "",
        "vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
        "vendor/llama.cpp/models/ggml-vocab-big.gguf": "x" * 1000,
        "vendor/llama.cpp/src/llama.cpp": "int x;",
    })
    got = sources.converter_dir(sdist)
    assert got == sources.sources_dir() / "convert"
    files = sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file())
    assert files == ["conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert sources.converter_dir() == got  # cached: no sdist needed the second time
    bad = make_sdist(tmp_path / "bad.tar.gz", {"README": ""})
    with tarfile.open(bad) as tar, pytest.raises(TeacherError, match=r"no vendor/llama\.cpp"):
        sources.vendored_root(tar, bad)


def test_quantizer_progress_lines_are_read() -> None:
    from synthgen.teacher.gguf_tools import TENSOR_LINE

    line = "[  12/ 272]                  blk.0.attn_k.weight - [  576,   192,     1,     1], type =    f32"
    assert TENSOR_LINE.match(line).groups() == ("12", "272")
    assert TENSOR_LINE.match("llama_model_quantize_impl: model size = 513.1 MB") is None
