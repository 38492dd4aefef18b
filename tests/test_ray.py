"""The Ray room on a real local Ray cluster that this module starts (`ray.init(num_cpus=...)`).

The teacher fleet runs tests/fake_vllm.py as its `vllm serve` (a wrapper named `vllm` on
the PATH the cluster's workers inherit), on two logical GPUs Ray hands out itself; the
sharded clients talk to the in-process loopback teacher. synthgen is driven as a user
would, a `python -m synthgen` process that joins the cluster by its address. Everything
stays on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray use loopback).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import TeacherServer, answer, make_prompts, write_jsonl

from synthgen import sharding
from synthgen.store.live import ping
from synthgen.teacher.process import pid_alive

# Read by Ray when it is imported: on Linux it then picks loopback addresses, as it does on
# macOS, so the cluster and the replicas stay on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
pytestmark = pytest.mark.ray

FAKE = Path(__file__).with_name("fake_vllm.py")
LATENCY = 0.05  # each fake vLLM answer takes this long, so a run is in flight when we kill


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local cluster of 4 CPUs and 2 (logical) GPUs; its workers see the fake `vllm`."""
    home = tmp_path_factory.mktemp("ray")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "vllm"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        mp.setenv("XDG_CACHE_HOME", str(home / "cache"))  # the replicas' logs and port files
        mp.setenv("FAKE_VLLM_DELAY", "0.3")
        mp.setenv("FAKE_VLLM_LATENCY", str(LATENCY))
        context = ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False,
                           namespace="synthgen-tests", _node_ip_address="127.0.0.1")
        try:
            yield {"address": context.address_info["gcs_address"], "home": home,
                   "env": clean_env(PATH=os.environ["PATH"])}
        finally:
            ray.shutdown()


def actor_alive(name: str) -> bool:
    try:
        ray.get_actor(name, namespace="synthgen")
        return True
    except ValueError:
        return False


def wait_for(check, seconds: float = 60.0, every: float = 0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {seconds}s: {check}")


def start_fleet(cluster, state: Path, replicas: int = 2):
    started = synthgen("teacher", "start", "--backend", "vllm", "--model", "org/m", "--ray",
                       cluster["address"], "--replicas", str(replicas), "--state-dir", state,
                       env=cluster["env"], timeout=180)
    assert started.returncode == 0, started.stderr
    return started


def stop_fleet(cluster, state: Path) -> None:
    synthgen("teacher", "stop", "--state-dir", state, env=cluster["env"], timeout=120)


def corpus(db: Path) -> list[tuple[str, str, str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, messages->>'$[0].content', response, endpoint "
                           "FROM corpus").fetchall()
    finally:
        con.close()


LISTENERS = """
import os
def tree(root):
    kids = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            ppid = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1]
        except OSError:
            continue
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [str(root)]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out
def listeners(root):
    inodes = set()
    for pid in tree(root):
        try:
            for fd in os.listdir(f'/proc/{pid}/fd'):
                link = os.readlink(f'/proc/{pid}/fd/{fd}')
                if link.startswith('socket:['):
                    inodes.add(link[8:-1])
        except OSError:
            pass
    found = set()
    for table in ('tcp', 'tcp6'):
        for line in open(f'/proc/net/{table}').read().splitlines()[1:]:
            cols = line.split()
            if cols[3] == '0A' and cols[9] in inodes:  # 0A: LISTEN
                found.add(cols[1].split(':')[0])
    return found
"""
# Loopback as /proc/net writes it: 127.0.0.1 in IPv4, and in IPv6 as ::ffff:127.0.0.1.
LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F"}


def test_a_cluster_synthgen_starts_for_itself_listens_on_loopback_only(tmp_path):
    """Issue 24 #12: `generate --ray` with no cluster starts a local one; every server of it
    listens on 127.0.0.1 only, not on the machine's address or every interface, with the
    environment a user has (not this module's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER), and with
    or without a Ray token already made (the second run finds the first one's).
    (First in the module: no cluster of the tests runs yet.)"""
    code = ("import ray, os\nfrom synthgen.cluster.connect import connect\n" + LISTENERS +
            "connect(None, must_exist=False, local_cpus=1)\n"
            "print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}))\n"
            "print(sorted(listeners(os.getpid())))\nray.shutdown()\n")
    env = clean_env(RAY_ADDRESS="", HOME=str(tmp_path))
    env.pop("RAY_ADDRESS")
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # this module's own setting, not a user's
    for attempt in ("no token yet", "the token the first run made"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=env, timeout=180, cwd=tmp_path)
        assert result.returncode == 0, (attempt, result.stderr[-3000:])
        nodes, bound = result.stdout.strip().splitlines()[-2:]
        assert nodes == "['127.0.0.1']", attempt
        bound = eval(bound)  # a list of hex addresses, printed by the code above
        assert bound and set(bound) <= LOOPBACK_HEX, (attempt, bound)


def test_the_fleet_starts_replicas_on_ray_serves_a_run_and_stop_leaves_no_process(cluster, tmp_path):
    state = tmp_path / "state"
    started = start_fleet(cluster, state)
    urls = started.stdout.split()
    assert len(urls) == 2 and len(set(urls)) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert "--teacher fleet" in started.stderr and "teacher stop --name fleet" in started.stderr
    record = json.loads((state / "fleet.json").read_text())
    assert record["ray_address"] == cluster["address"] and len(record["actors"]) == 2
    assert [s["base_url"] for s in record["servers"]] == urls
    # each replica is the launcher's own `vllm serve`, on a GPU of its own that Ray chose
    logs = [Path(s["log_path"]).read_text() for s in record["servers"]]
    assert all("serve org/m --host 127.0.0.1 --port" in log for log in logs)
    assert sorted(line for log in logs for line in log.splitlines() if "CUDA_VISIBLE_DEVICES=" in line) \
        == ["INFO: CUDA_VISIBLE_DEVICES=0 tp=1", "INFO: CUDA_VISIBLE_DEVICES=1 tp=1"]
    status = synthgen("teacher", "status", "--state-dir", state, env=cluster["env"])
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy") == 2 and "on the Ray cluster at" in status.stdout
    # a second fleet under the same name is refused, the first left as it is
    again = synthgen("teacher", "start", "--backend", "vllm", "--model", "org/m", "--ray",
                     cluster["address"], "--state-dir", state, env=cluster["env"])
    assert again.returncode == 2 and "stop it first" in again.stderr

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(40)])
    run = synthgen("generate", "--teacher", "fleet", "--teacher-state-dir", state, "--input",
                   tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb", "--concurrency", "8",
                   env=cluster["env"])
    assert run.returncode == 0, run.stderr
    rows = corpus(tmp_path / "c.duckdb")
    assert len(rows) == len({r[0] for r in rows}) == 40
    assert all(response == f"echo: {prompt}" for _, prompt, response, _ in rows)
    assert {r[3] for r in rows} == set(urls)  # least-busy routing used both replicas

    infos = [ray.get(ray.get_actor(n, namespace="synthgen").info.remote()) for n in record["actors"]]
    pids = [i["pid"] for i in infos] + [i["actor_pid"] for i in infos]
    stopped = synthgen("teacher", "stop", "--state-dir", state, env=cluster["env"], timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("stopped teacher-fleet-") == 2
    wait_for(lambda: not any(pid_alive(p) for p in pids), 20)
    assert not any(actor_alive(n) for n in record["actors"])
    assert not (state / "fleet.json").exists()
    for url in urls:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/models", timeout=2, trust_env=False)


def test_a_fleet_that_cannot_start_says_why_and_leaves_nothing_behind(cluster, tmp_path):
    state = tmp_path / "state"
    base = ["teacher", "start", "--backend", "vllm", "--model", "org/m", "--ray", cluster["address"],
            "--state-dir", state]
    too_many = synthgen(*base, "--replicas", "3", env=cluster["env"])
    assert too_many.returncode == 2, too_many.stderr
    assert "3 replica(s) x 1 GPU(s) need 3 GPUs; the Ray cluster at" in too_many.stderr
    assert "has 2 GPUs" in too_many.stderr or "has 2 " in too_many.stderr
    # the server itself refuses (vllm's argparse: exit 2): its own words, and no actor left
    refused = synthgen(*base, "--replicas", "2", "--", "--no-such-flag", env=cluster["env"], timeout=180)
    assert refused.returncode == 2, refused.stderr
    assert "a replica failed to start" in refused.stderr and "exited with code 2" in refused.stderr
    assert "unrecognized arguments: --no-such-flag" in refused.stderr
    assert "Traceback" not in refused.stderr.split("a replica failed to start")[0]
    wait_for(lambda: not any(actor_alive(f"teacher-fleet-{i}") for i in range(2)), 30)
    assert not (state / "fleet.json").exists()
    not_vllm = synthgen("teacher", "start", "--ray", cluster["address"], "--state-dir", state,
                        env=cluster["env"])
    assert not_vllm.returncode == 2 and "add --backend vllm" in not_vllm.stderr


def test_a_killed_replica_is_restarted_by_ray_and_no_prompt_is_lost(cluster, tmp_path):
    state = tmp_path / "state"
    urls = start_fleet(cluster, state).stdout.split()
    try:
        record = json.loads((state / "fleet.json").read_text())
        victim = record["servers"][0]
        prompts = make_prompts(400)
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
        db = tmp_path / "c.duckdb"
        proc = start_synthgen("generate", "--teacher", "fleet", "--teacher-state-dir", state,
                              "--input", tmp_path / "in.jsonl", "--db", db, "--concurrency", "8",
                              env=cluster["env"])
        wait_for(lambda: ping(db) is not None, 60)

        def some_answers() -> bool:
            import synthgen as sg

            with sg.open_store(db) as con:
                return con.execute("SELECT count(*) FROM responses").fetchone()[0] >= 40

        wait_for(some_answers, 60)
        os.kill(victim["pid"], signal.SIGKILL)  # the replica's vllm server dies mid-run
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        rows = corpus(db)
        assert len(rows) == len({r[0] for r in rows}) == 400
        assert sorted(r[1] for r in rows) == sorted(prompts)
        assert all(response == f"echo: {prompt}" for _, prompt, response, _ in rows)

        # Ray restarted the replica: a new server, on the same URL, healthy, answering
        def restarted():
            info = ray.get(ray.get_actor(record["actors"][0], namespace="synthgen").info.remote())
            return info if info["restarted"] and info["pid"] != victim["pid"] else None

        info = wait_for(restarted, 60)
        assert info["base_url"] == victim["base_url"] == urls[0]
        status = synthgen("teacher", "status", "--state-dir", state, env=cluster["env"])
        assert status.returncode == 0, status.stdout
        assert "restarted by Ray" in status.stdout and status.stdout.count("healthy") == 2
        reply = httpx.post(f"{urls[0]}/chat/completions", timeout=10, trust_env=False,
                           json={"model": "org/m", "messages": [{"role": "user", "content": "back?"}]})
        assert reply.json()["choices"][0]["message"]["content"] == "echo: back?"
    finally:
        stop_fleet(cluster, state)


def sharded(cluster, tmp_path, teacher, *extra: str, start: bool = False):
    args = ["generate", "--ray", cluster["address"], "--shards", "2", "--base-url", teacher.base_url,
            "--model", "m", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "main.duckdb",
            "--concurrency", "4", *extra]
    if start:
        return start_synthgen(*args, env=cluster["env"])
    return synthgen(*args, env=cluster["env"], timeout=300)


def test_two_shards_store_every_prompt_once_and_merge_twice_changes_nothing(cluster, tmp_path):
    prompts = make_prompts(200)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    with TeacherServer() as teacher:
        run = sharded(cluster, tmp_path, teacher, "--keep-shards")
        assert run.returncode == 0, run.stderr
        assert "shard 1/2: done" in run.stderr and "shard 2/2: done" in run.stderr
        assert sum(teacher.received.values()) == 200 and set(teacher.received.values()) == {1}
        rows = corpus(tmp_path / "main.duckdb")
        assert len(rows) == len({r[0] for r in rows}) == 200
        assert all(response == answer(prompt) for _, prompt, response, _ in rows)
        shards = sharding.shard_paths(tmp_path / "main.duckdb", 2)
        for i, path in enumerate(shards):  # each actor wrote only its own hash range
            ids = [r[0] for r in corpus(path)]
            assert ids and all(sharding.shard_of(rid, 2) == i for rid in ids)
        # the same command again: nothing pending, no actor needed, nothing sent
        again = sharded(cluster, tmp_path, teacher, "--keep-shards")
        assert again.returncode == 0, again.stderr
        assert sum(teacher.received.values()) == 200

    con = duckdb.connect(str(tmp_path / "main.duckdb"), read_only=True)
    before = con.execute("SELECT * FROM responses ORDER BY request_id").fetchall()
    con.close()
    for _ in range(2):
        merged = synthgen("merge", "--db", tmp_path / "main.duckdb", *shards)
        assert merged.returncode == 0, merged.stderr
        assert "nothing to merge" in merged.stderr
    con = duckdb.connect(str(tmp_path / "main.duckdb"), read_only=True)
    assert con.execute("SELECT * FROM responses ORDER BY request_id").fetchall() == before
    con.close()


def test_a_rerun_after_a_shard_actor_was_killed_stores_every_prompt_once(cluster, tmp_path):
    prompts = make_prompts(400)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    first_shard = sharding.shard_paths(tmp_path / "main.duckdb", 2)[0]
    with TeacherServer(latency=LATENCY) as teacher:
        proc = sharded(cluster, tmp_path, teacher, start=True)
        info = wait_for(lambda: ping(first_shard), 90)

        def some_answers() -> bool:
            import synthgen as sg

            with sg.open_store(first_shard) as con:
                return con.execute("SELECT count(*) FROM responses").fetchone()[0] >= 20

        wait_for(some_answers, 60)
        os.kill(info["pid"], signal.SIGKILL)  # the shard actor's process: its run dies with it
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 3, err
        assert "shard 1/2: ended without finishing" in err and "Resume with" in err
        partial = corpus(tmp_path / "main.duckdb")
        assert 20 <= len(partial) < 400

        rerun = sharded(cluster, tmp_path, teacher)
        assert rerun.returncode == 0, rerun.stderr
        rows = corpus(tmp_path / "main.duckdb")
        assert len(rows) == len({r[0] for r in rows}) == 400
        assert sorted(r[1] for r in rows) == sorted(prompts)
        assert all(response == answer(prompt) for _, prompt, response, _ in rows)
        # only what was in flight (or received, not yet committed) at the kill was sent twice
        resent = sum(teacher.received.values()) - 400
        assert 0 <= resent <= 4 + 40, resent
        assert not first_shard.exists()  # folded and removed once the job was done


def shard_runs(path: Path) -> list[tuple[str, int]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT status, answered FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()


def test_ctrl_c_of_the_driver_is_ctrl_c_of_every_shard_and_a_rerun_finishes(cluster, tmp_path):
    prompts = make_prompts(400)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    shards = sharding.shard_paths(tmp_path / "main.duckdb", 2)
    # Slow enough (400 x 0.25 s over 8 slots: 12 s) that the run is still going when the
    # Ctrl-C reaches the shards: Ray starts a worker to deliver it, seconds on 2 busy cores.
    with TeacherServer(latency=0.25) as teacher:
        proc = sharded(cluster, tmp_path, teacher, start=True)
        wait_for(lambda: all(ping(p) for p in shards), 90)
        wait_for(lambda: sum(teacher.received.values()) >= 40, 60)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Interrupted with" in err and "Resume with" in err
        # each shard's own run stopped as a Ctrl-C stops a run: drained and closed, not killed
        assert [shard_runs(p)[0][0] for p in shards] == ["interrupted", "interrupted"]
        sent = sum(teacher.received.values())
        assert len(corpus(tmp_path / "main.duckdb")) == sent  # every answer received is stored

        rerun = sharded(cluster, tmp_path, teacher)
        assert rerun.returncode == 0, rerun.stderr
        rows = corpus(tmp_path / "main.duckdb")
        assert len(rows) == len({r[0] for r in rows}) == 400
        assert sum(teacher.received.values()) == 400  # nothing paid for twice


def test_a_rerun_after_the_driver_was_killed_stores_every_prompt_once(cluster, tmp_path):
    prompts = make_prompts(400)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    shards = sharding.shard_paths(tmp_path / "main.duckdb", 2)
    with TeacherServer(latency=LATENCY) as teacher:
        proc = sharded(cluster, tmp_path, teacher, start=True)
        pids = [wait_for(lambda p=p: ping(p), 90)["pid"] for p in shards]
        wait_for(lambda: sum(teacher.received.values()) >= 40, 60)
        proc.kill()  # the driver, kill -9: Ray ends the actors it owned
        proc.communicate(timeout=60)
        wait_for(lambda: not any(pid_alive(p) for p in pids), 60)
        assert len(corpus(tmp_path / "main.duckdb")) == 0  # nothing folded yet: the shards hold it

        rerun = sharded(cluster, tmp_path, teacher)
        assert rerun.returncode == 0, rerun.stderr
        assert "folded" in rerun.stderr  # what the shards had stored came first
        rows = corpus(tmp_path / "main.duckdb")
        assert len(rows) == len({r[0] for r in rows}) == 400
        assert all(response == answer(prompt) for _, prompt, response, _ in rows)
        resent = sum(teacher.received.values()) - 400
        assert 0 <= resent <= 2 * (4 + 40), resent


def test_a_second_generate_during_a_sharded_run_is_refused_and_nothing_is_paid_twice(cluster, tmp_path):
    """Issue 24 #2: during `generate --ray --shards 3` a second `generate` on the main store
    answered every prompt itself (the teacher paid twice), and `status` called the live
    run killed. The driver now holds the main store until it has folded the shards."""
    prompts = make_prompts(300)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "main.duckdb"
    shards = sharding.shard_paths(db, 3)
    with TeacherServer(latency=0.1) as teacher:
        proc = sharded(cluster, tmp_path, teacher, "--shards", "3", start=True)
        wait_for(lambda: all(ping(p) for p in shards), 120)
        second = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                          "--base-url", teacher.base_url, "--concurrency", "8", env=cluster["env"])
        assert second.returncode == 2 and "is writing this store" in second.stderr, second.stderr
        status = synthgen("status", "--db", db, env=cluster["env"])
        assert status.returncode == 0 and "killed" not in status.stdout, status.stdout
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    rows = corpus(db)
    assert len(rows) == len({r[0] for r in rows}) == 300
    assert sum(teacher.received.values()) == 300 and set(teacher.received.values()) == {1}

