"""`synthgen teacher start|status|stop` with the vllm stand-in, driven like a user would."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from synthgen.cli.teacher import teacher
from synthgen.teacher.process import left_behind, pid_alive

FAKE = Path(__file__).with_name("fake_vllm.py")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "vllm"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SYNTHGEN_GPUS", "2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.3")
    monkeypatch.delenv("SYNTHGEN_VLLM", raising=False)  # the stand-in, even where a real one is named
    return tmp_path


def test_start_status_stop_detached(env: Path) -> None:
    runner = CliRunner()
    states = ["--state-dir", str(env / "state")]
    started = runner.invoke(
        teacher,
        [
            "start",
            "--backend",
            "vllm",
            "--model",
            "org/m",
            "--replicas",
            "2",
            *states,
            "--",
            "--dtype",
            "half",
        ],
    )
    assert started.exit_code == 0, started.output
    urls = started.stdout.split()
    assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert "log: " in started.stderr and "--base-url" in started.stderr
    assert f"synthgen teacher stop --state-dir {env / 'state'}" in started.stderr
    record = json.loads((env / "state" / "default.json").read_text())
    pids = [s["pid"] for s in record["servers"]]
    assert "--dtype half" in Path(record["servers"][0]["log_path"]).read_text()

    # The servers outlive the command that started them.
    for url in urls:
        assert httpx.get(f"{url}/models").json()["data"][0]["id"] == "org/m"
    again = runner.invoke(teacher, ["start", "--backend", "vllm", "--model", "x", *states])
    assert again.exit_code != 0 and "already running" in str(again.exception)

    status = runner.invoke(teacher, ["status", *states])
    assert status.exit_code == 0 and status.stdout.count("healthy") == 2, status.output

    stopped = runner.invoke(teacher, ["stop", *states])
    assert stopped.exit_code == 0 and stopped.stdout.count("stopped pid") == 2
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids)

    after = runner.invoke(teacher, ["status", *states])
    assert after.exit_code == 1 and "not running" in after.stdout
    assert runner.invoke(teacher, ["stop", *states]).exit_code == 0  # idempotent


def test_stop_clears_the_workers_a_killed_server_left(env: Path, monkeypatch) -> None:
    """A server SIGKILLed by someone else leaves its workers (vLLM's engine core) in its
    process group: `stop` finds the group by the recorded pid and stops them too."""
    monkeypatch.setenv("FAKE_VLLM_WORKER", "1")
    runner = CliRunner()
    states = ["--state-dir", str(env / "state")]
    started = runner.invoke(teacher, ["start", "--backend", "vllm", "--model", "m", *states,
                                      "--", "--logprobs-mode", "processed_logprobs"])
    assert started.exit_code == 0, started.output
    record = json.loads((env / "state" / "default.json").read_text())
    assert record["logprobs_mode"] == "processed"  # `generate --teacher` records it
    pid = record["servers"][0]["pid"]
    log = Path(record["servers"][0]["log_path"])
    deadline = time.monotonic() + 10
    while "EngineCore pid=" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(log.read_text().split("EngineCore pid=")[1].split()[0])
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_alive(worker) and left_behind(pid)
    stopped = runner.invoke(teacher, ["stop", *states])
    assert stopped.exit_code == 0 and "had died; stopped the workers it left" in stopped.stdout
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(worker) and not left_behind(pid)


def test_start_failure_is_reported_and_nothing_recorded(env: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_CRASH", "1")
    states = env / "state"
    result = CliRunner().invoke(
        teacher, ["start", "--backend", "vllm", "--model", "m", "--state-dir", str(states)]
    )
    assert result.exit_code != 0 and "exited with code 1" in str(result.exception)
    assert not (states / "default.json").exists()


def test_local_without_binary_says_how_to_build(env: Path, monkeypatch) -> None:
    from synthgen.teacher import prebuilt

    monkeypatch.delenv("SYNTHGEN_LLAMA_SERVER", raising=False)
    monkeypatch.setattr(prebuilt, "installed_version", lambda: None)  # no [local] extra
    result = CliRunner().invoke(teacher, ["start", "--state-dir", str(env / "s")])
    assert "synthgen teacher build" in str(result.exception)


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name in ["start", "stop", "status", "build"]:
        result = runner.invoke(teacher, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
