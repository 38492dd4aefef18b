"""`synthgen teacher build`: make the bundled teacher ready on this machine, and prove it answers.

Ready means: the GGUF is on disk (model.py fetches it once) and a llama.cpp
server that runs on this CPU is found. A server is proven by serving the GGUF
and asking for two samples with top-5 logprobs, because the failure that
matters, an instruction this CPU lacks (SIGILL), shows only once it computes.
The prebuilt server is tried first (seconds); if it is missing or fails, the
source build (minutes, with its progress on screen) is the fallback.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import httpx

from ..errors import TeacherError
from . import model, prebuilt
from .build import build_llama_server
from .local import LocalOptions, ServerCommand, find_llama_server, local_server
from .paths import log_dir as default_log_dir
from .process import Announce, describe_exit, launch_all, stop_all, tail

CHECK_REQUEST = {
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 4,
    "temperature": 0.7,
    "seed": 0,
    "n": 2,
    "logprobs": True,
    "top_logprobs": 5,
}


def check_server(command: ServerCommand, log_dir: Path | None = None) -> str | None:
    """Serve the bundled GGUF with `command`; None if it answered n=2 with top-5 logprobs, else why not."""
    options = LocalOptions(parallel=2, ctx_size=1024)
    server = local_server(options, log_dir or default_log_dir(), server=command)
    try:
        launch_all([server], health_timeout=120.0, announce=None)
    except TeacherError as exc:
        return str(exc)
    try:
        url = f"{server.base_url}/chat/completions"
        reply = httpx.post(url, json=CHECK_REQUEST, timeout=120.0, trust_env=False)
        body = reply.json() if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        code = server.popen.poll() if server.popen else None
        died = f"the server {describe_exit(code)}" if code is not None else f"{type(exc).__name__}: {exc}"
        return f"{died} while answering; log: {server.log_path}\n{tail(server.log_path)}"
    finally:
        stop_all([server])
    if body is None:
        return f"HTTP {reply.status_code}: {reply.text[:300]}; log: {server.log_path}"
    choices = body.get("choices") or []
    steps = [c.get("logprobs", {}).get("content") or [] for c in choices]
    if len(choices) != 2 or not all(s and all(len(t.get("top_logprobs", [])) == 5 for t in s) for s in steps):
        return f"the answer lacks 2 choices with top-5 logprobs: {str(body)[:300]}"
    return None


def command_line(command: ServerCommand) -> str:
    return shlex.join(command.argv)


def prepare_local_teacher(
    *,
    from_source: bool = False,
    jobs: int | None = None,
    sdist: Path | None = None,
    force: bool = False,
    announce: Announce | None = None,
) -> ServerCommand:
    """Fetch the model, find or build a server that passes `check_server`, and return it."""
    say = announce or (lambda _msg: None)
    gguf = model.ensure_gguf(announce)
    say(f"teacher model: {gguf}")
    if not (from_source or sdist or force):
        try:
            command: ServerCommand | None = find_llama_server()
        except TeacherError as exc:
            command = None
            say(f"no usable prebuilt server ({prebuilt.unusable_reason() or exc}); compiling one instead")
        if command is not None:
            say(f"checking the {command.describe()} (2 samples, top-5 logprobs)")
            why = check_server(command)
            if why is None:
                say(f"server ready: {command.describe()}")
                return command
            if command.kind != "prebuilt":
                raise TeacherError(f"the {command.describe()} failed its check: {why}")
            say(f"the prebuilt server failed its check on this machine, so compiling one instead: {why}")
    binary = build_llama_server(jobs=jobs, sdist=sdist, force=force, announce=announce)
    command = ServerCommand((str(binary),), "source build", str(binary))
    say(f"checking the {command.describe()} (2 samples, top-5 logprobs)")
    why = check_server(command)
    if why is not None:
        raise TeacherError(f"the llama-server built from source failed its check: {why}")
    say(f"server ready: {command.describe()}")
    return command
