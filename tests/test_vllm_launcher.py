"""`synthgen teacher start --backend vllm` on the real engine, as a user runs it here: no GPU,
no environment override, vLLM in a venv of its own named with --vllm.

One scenario (`pair`, run once for the module) does what a user does; each test asserts
one thing about it: two replicas on distinct ports, both healthy and serving the bundled
teacher; `generate --teacher` with top-5 logprobs while one replica is killed with SIGKILL
mid-run, every answer still stored exactly once; `teacher stop` leaving no process. The
pair serves vLLM's *processed* logprobs (`--logprobs-mode processed_logprobs`), which the
record carries to `generate`, and which KD reads back at the run's temperature.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import write_jsonl
from vllm_tier import HEALTH_TIMEOUT, MAX_MODEL_LEN, chat, cpu_env

from synthgen.errors import TeacherError
from synthgen.teacher import LOCAL_MODEL_NAME, launch_teacher
from synthgen.teacher.process import left_behind

pytestmark = pytest.mark.vllm

PROMPTS = [f"In one sentence, why is the number {i} interesting?" for i in range(48)]
TEMPERATURE = 0.7
SERVED = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')


@dataclass
class Pair:
    """What the scenario saw, for the tests to assert on."""

    urls: list[str]
    pids: list[int]
    logs: list[Path]
    models: list[dict] = field(default_factory=list)
    healthy: list[int] = field(default_factory=list)
    status: str = ""
    killed_after: int = 0  # answers replica 1 had served when it was killed
    generate: str = ""
    generate_rc: int | None = None
    stop: str = ""
    db: Path = Path()


def cli_env() -> dict[str, str]:
    env = clean_env(**cpu_env())
    for name in ("SYNTHGEN_GPUS", "SYNTHGEN_VLLM"):  # as a user has it: no override at all
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def pair(vllm_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    tmp = tmp_path_factory.mktemp("pair")
    states, env = tmp / "teachers", cli_env()
    started = synthgen("teacher", "start", "--backend", "vllm", "--model", LOCAL_MODEL_NAME,
                       "--replicas", "2", "--max-model-len", str(MAX_MODEL_LEN), "--vllm", vllm_bin,
                       "--health-timeout", str(HEALTH_TIMEOUT), "--name", "pair", "--state-dir", states,
                       "--", "--logprobs-mode", "processed_logprobs", env=env, timeout=HEALTH_TIMEOUT + 60)
    assert started.returncode == 0, started.stderr
    record = json.loads((states / "pair.json").read_text())
    seen = Pair(urls=started.stdout.split(), pids=[s["pid"] for s in record["servers"]],
                logs=[Path(s["log_path"]) for s in record["servers"]], db=tmp / "corpus.duckdb")
    try:
        for url in seen.urls:
            seen.models.append(httpx.get(f"{url}/models", trust_env=False).json()["data"][0])
            seen.healthy.append(httpx.get(url.removesuffix("/v1") + "/health", trust_env=False).status_code)
        seen.status = synthgen("teacher", "status", "--name", "pair", "--state-dir", states, env=env).stdout
        write_jsonl(tmp / "in.jsonl", [{"prompt": p} for p in PROMPTS])
        run = start_synthgen("generate", "--teacher", "pair", "--teacher-state-dir", states,
                             "--input", tmp / "in.jsonl", "--db", seen.db, "--logprobs", "5",
                             "--max-tokens", "16", "--temperature", str(TEMPERATURE), "--seed", "0",
                             # no top_p (synthgen's default sends 0.9): processed logprobs are
                             # after top_p too, and the tokens outside the nucleus come back
                             # as -inf, which no tempering brings back
                             "--top-p", "none", "--concurrency", "8", env=env)
        # SIGKILL replica 1 once it has answered a few: mid-run, its requests in flight
        deadline = time.monotonic() + 600
        while (served := len(SERVED.findall(seen.logs[1].read_text()))) < 3 and run.poll() is None:
            assert time.monotonic() < deadline, "replica 1 served nothing in 10 minutes"
            time.sleep(0.2)
        seen.killed_after = served
        os.kill(seen.pids[1], signal.SIGKILL)
        out, err = run.communicate(timeout=900)
        seen.generate, seen.generate_rc = out + err, run.returncode
    finally:
        seen.stop = synthgen("teacher", "stop", "--name", "pair", "--state-dir", states, env=env).stdout
    return seen


def test_two_replicas_on_distinct_ports_serve_the_bundled_teacher(pair: Pair) -> None:
    assert len(pair.urls) == 2 and len(set(pair.urls)) == 2
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", u) for u in pair.urls)
    assert pair.healthy == [200, 200]
    assert [m["id"] for m in pair.models] == [LOCAL_MODEL_NAME] * 2
    assert all(m["owned_by"] == "vllm" and m["max_model_len"] == MAX_MODEL_LEN for m in pair.models)
    assert pair.status.count("healthy") == 2, pair.status
    logs = [p.read_text() for p in pair.logs]
    # the CPU engine, with the launcher's flags, each replica on its own core
    assert all("--dtype float32 --enforce-eager" in log for log in logs)
    assert all("device_config=cpu" in log for log in logs)
    if len(os.sched_getaffinity(0)) >= 2:
        assert "VLLM_CPU_OMP_THREADS_BIND='0'" in logs[0] and "VLLM_CPU_OMP_THREADS_BIND='1'" in logs[1]


def test_every_answer_is_stored_exactly_once_after_a_replica_is_killed(pair: Pair) -> None:
    assert pair.killed_after >= 3, "the kill must come mid-run"
    assert pair.generate_rc == 0, pair.generate
    con = duckdb.connect(str(pair.db), read_only=True)
    try:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT request_id) FROM responses").fetchone()
        failures = con.execute("SELECT count(*) FROM failures").fetchone()[0]
        by_endpoint = dict(con.execute("SELECT endpoint, count(*) FROM corpus GROUP BY 1").fetchall())
        top5 = con.execute("SELECT bool_and(len(logprobs) > 0 AND list_bool_and("
                           "[len(e.top_logprobs) = 5 FOR e IN logprobs])) FROM corpus").fetchone()[0]
    finally:
        con.close()
    assert (total, distinct, failures) == (len(PROMPTS), len(PROMPTS), 0)
    assert top5 is True
    # both replicas answered: the killed one before its death, the other the rest
    assert set(by_endpoint) == set(pair.urls), by_endpoint
    assert by_endpoint[pair.urls[0]] > by_endpoint[pair.urls[1]] >= 1


def test_every_logprob_token_id_is_stored(pair: Pair) -> None:
    """vLLM's logprobs carry ids only as `token_id:N` (return_tokens_as_token_ids), which
    synthgen asks for from a vLLM endpoint: KD lines the teacher's top-k up by id."""
    con = duckdb.connect(str(pair.db), read_only=True)
    try:
        missing, entries = con.execute(
            "SELECT count(*) FILTER (WHERE e.id IS NULL OR "
            "list_bool_or([t.id IS NULL FOR t IN e.top_logprobs])), count(*) "
            "FROM (SELECT unnest(logprobs) AS e FROM corpus)").fetchone()
    finally:
        con.close()
    assert entries > 0 and missing == 0, f"{missing} of {entries} positions lack a token id"


def test_stop_leaves_no_process_of_either_replica(pair: Pair) -> None:
    assert "had died; stopped the workers it left" in pair.stop, pair.stop
    assert f"stopped pid {pair.pids[0]}" in pair.stop, pair.stop
    deadline = time.monotonic() + 10
    while any(left_behind(p) for p in pair.pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(left_behind(p) for p in pair.pids)


def test_processed_logprobs_are_recorded_and_kd_reads_them_at_the_runs_temperature(
        pair: Pair, vllm_teacher) -> None:
    """The pair served processed logprobs (after temperature): `generate --teacher` recorded
    that without being told; KD tempers them back, and they agree with the raw logprobs of the
    session's server (vLLM's default) for the same first token, whose context is the prompt."""
    import torch

    from synthgen.student.kd import teacher_buckets
    from synthgen.student.rows import load_rows
    from synthgen.student.targets import stored_temperature

    rows = load_rows(pair.db, "SELECT * FROM corpus")
    assert rows and all(r.logprobs_mode == "processed" for r in rows)
    assert all(stored_temperature(r) == pytest.approx(TEMPERATURE) for r in rows)
    row = rows[0]
    raw = chat(vllm_teacher, messages=row.messages, max_tokens=1, temperature=TEMPERATURE,
               logprobs=True, top_logprobs=5)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    processed = sorted((t["logprob"] for t in row.logprobs[0]["top_logprobs"]), reverse=True)
    raw_lp = sorted((t["logprob"] for t in raw), reverse=True)
    valid = torch.ones(1, 5, dtype=torch.bool)
    # KD's own tempering: processed at T, divided by 1/T, is the raw distribution's shape
    as_raw, _ = teacher_buckets(torch.tensor([processed]), valid, 1 / TEMPERATURE)
    from_raw, _ = teacher_buckets(torch.tensor([raw_lp]), valid, 1.0)
    gaps = (as_raw[0, :5] - as_raw[0, 0]).tolist(), (from_raw[0, :5] - from_raw[0, 0]).tolist()
    assert gaps[0] == pytest.approx(gaps[1], abs=2e-3), gaps
    assert processed[1] - processed[0] < raw_lp[1] - raw_lp[0]  # sharper at T < 1


def test_a_server_that_crashes_at_start_is_reported_with_its_log(vllm_bin: str, tmp_path: Path,
                                                                 monkeypatch) -> None:
    """A model vLLM cannot load (an empty directory): the child's exit, at once, with the
    last lines of its log; and an unknown flag, refused by vLLM's own argument parser."""
    for key, value in cpu_env().items():
        monkeypatch.setenv(key, value)
    (tmp_path / "empty-model").mkdir()
    started = time.monotonic()
    with pytest.raises(TeacherError, match=r"vllm exited with code 1 before it became healthy; "
                                           r"log: \S+\n(.|\n)*(Error|error)") as err:
        launch_teacher("vllm", model=str(tmp_path / "empty-model"), vllm_executable=vllm_bin,
                       health_timeout=HEALTH_TIMEOUT, log_dir=tmp_path, announce=None)
    assert time.monotonic() - started < HEALTH_TIMEOUT / 2
    assert str(tmp_path / "empty-model") in str(err.value)
    with pytest.raises(TeacherError, match=r"code 2(.|\n)*unrecognized arguments: --no-such-flag"):
        launch_teacher("vllm", model=str(tmp_path / "empty-model"), vllm_executable=vllm_bin,
                       extra_args=["--no-such-flag"], log_dir=tmp_path, announce=None)
