"""Teacher-written code runs sandboxed (synthgen/sandbox): each guard proven by a program
that tries to get past it, on this machine where every guard is available."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from synthgen.recipes.filters.verify import check
from synthgen.sandbox import _BOOT, Limits, _readable, run_python

ALL = ("network namespace", "rlimits", "landlock", "no tcp", "scoped", "audit hooks")


@pytest.fixture(scope="module")
def listener():
    """A TCP server on this machine's loopback: reachable from anything but the sandbox."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[object] = []

    def accept():
        while True:
            try:
                accepted.append(server.accept())
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def test_this_machine_gives_every_guard():
    assert run_python("pass").guards == ALL


@pytest.mark.parametrize("code", [
    "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('{sock}')",
    "import ctypes; ctypes.CDLL(None).socket(2, 1, 0)",
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
])
def test_no_network(listener, tmp_path, code):
    port, accepted = listener
    before = len(accepted)
    result = run_python(code.format(port=port, sock=tmp_path / "s.sock"))
    assert not result.ok and "PermissionError" in result.stderr, result
    assert len(accepted) == before


@pytest.mark.parametrize("code", [
    "open('{target}', 'w').write('x')",
    "import os; os.close(os.open('{target}', os.O_CREAT | os.O_WRONLY))",
    "import pathlib; pathlib.Path('{target}').write_text('x')",
    "import shutil; shutil.copy(__file__, '{target}')",
    "import os; os.rename(__file__, '{target}')",
    "import os; os.system('touch {target}')",
    "import subprocess; subprocess.run(['touch', '{target}'])",
])
def test_nothing_written_outside_its_directory(tmp_path, code):
    target = tmp_path / "escaped"
    result = run_python(code.format(target=target))
    assert not result.ok and not target.exists(), result


def test_landlock_alone_stops_writes_and_reads(tmp_path):
    """Without the audit hooks (the second line), the kernel itself refuses: Landlock."""
    work = tmp_path / "work"
    work.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("the store")
    program = work / "main.py"
    program.write_text(f"import sys\ntry:\n    open({str(tmp_path / 'out')!r}, 'w')\n"
                       f"except PermissionError:\n    print('write refused')\n"
                       f"try:\n    open({str(secret)!r}).read()\nexcept PermissionError:\n"
                       f"    print('read refused')\nopen('inside', 'w').write('ok')\n")
    config = {"workdir": str(work), "read": _readable(), "memory": 512 << 20, "cpu": 5,
              "fsize": 1 << 20, "nofile": 64, "audit": False}
    done = subprocess.run([sys.executable, "-I", str(_BOOT), json.dumps(config), str(program)],
                          capture_output=True, text=True, timeout=60, cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["write", "refused", "read", "refused"]
    assert (work / "inside").read_text() == "ok" and not (tmp_path / "out").exists()


def test_no_reading_home_or_the_project(tmp_path):
    home = Path.home()
    for target in (home, Path(__file__).parent, Path.cwd()):
        result = run_python(f"import os; print(os.listdir({str(target)!r}))")
        assert not result.ok and "Permission denied" in result.stderr, (target, result)


def test_bounded_memory_time_and_output():
    assert "MemoryError" in run_python("x = bytearray(4 * 2**30)").stderr
    loop = run_python("while True: pass", limits=Limits(seconds=1))
    assert loop.timed_out and loop.returncode is None
    flood = run_python("print('x' * 50_000_000)", limits=Limits(file_mb=1))
    assert not flood.ok and len(flood.stdout) <= 20_000


def test_a_program_may_use_its_own_directory_and_stdin():
    result = run_python("import sys, helper\nopen('a.txt', 'w').write(sys.stdin.read())\n"
                        "print(helper.double(open('a.txt').read()))",
                        files={"helper.py": "def double(s):\n    return s * 2\n"}, stdin="ab")
    assert result.ok and result.stdout == "abab\n", result
    with pytest.raises(ValueError, match="outside the work directory"):
        run_python("pass", files={"../x.py": ""})


def test_the_environment_holds_nothing_of_the_users(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-abcdefghijklmnop")
    result = run_python("import os; print(sorted(os.environ)); print(os.environ['HOME'])")
    assert result.ok and "OPENAI_API_KEY" not in result.stdout
    assert os.environ["HOME"] not in result.stdout.splitlines()[-1]


def test_the_best_of_n_verifier_runs_code_in_the_sandbox(tmp_path, listener):
    """Issue 30: a test answer wrote a file as root and still passed. Now a solution that
    writes outside its directory or reaches the network fails, and a plain one passes."""
    port, accepted = listener
    params = {"method": "python", "timeout": 10.0}
    tests = "assert add(2, 3) == 5"
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    assert check(good, tests, params) == (True, "")
    target = tmp_path / "pwned"
    writer = f"```python\nopen({str(target)!r}, 'w').write('x')\ndef add(a, b):\n    return a + b\n```"
    ok, why = check(writer, tests, params)
    assert not ok and "outside the work directory" in why and not target.exists()
    caller = (f"```python\nimport socket\nsocket.create_connection(('127.0.0.1', {port}))\n"
              "def add(a, b):\n    return a + b\n```")
    before = len(accepted)
    ok, why = check(caller, tests, params)
    assert not ok and "not allowed" in why and len(accepted) == before
