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
