"""`synthgen batch write` -> `vllm run-batch` -> `synthgen batch ingest`, on the real engine.

The offline path for a GPU box synthgen does not reach: the files synthgen writes are what
vLLM's own batch runner reads (it starts its own engine: no server), and what it writes
back is stored once, by custom_id, next to each prompt; ingesting the same file again
stores nothing.
"""

from __future__ import annotations

import subprocess

import duckdb
import pytest
from conftest import clean_env, synthgen
from teacher_server import write_jsonl
from vllm_tier import HEALTH_TIMEOUT, MAX_MODEL_LEN, cpu_env

from synthgen.teacher import LOCAL_MODEL_NAME
from synthgen.teacher.vllm_cpu import bundled_hf_dir

pytestmark = pytest.mark.vllm

PROMPTS = [f"Say one word about the colour number {i}." for i in range(6)]


def count(db, sql: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_batch_files_run_by_vllm_are_ingested_exactly_once(vllm_bin: str, tmp_path) -> None:
    db, out = tmp_path / "c.duckdb", tmp_path / "batches"
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    wrote = synthgen("batch", "write", "--db", db, "--out", out, "--input", tmp_path / "in.jsonl",
                     "--model", LOCAL_MODEL_NAME, "--max-tokens", "8", "--temperature", "0",
                     "--logprobs", "3")
    assert wrote.returncode == 0, wrote.stderr
    assert f"wrote {len(PROMPTS)} requests in 1 files" in wrote.stderr
    answers = tmp_path / "out.jsonl"
    ran = subprocess.run(
        [vllm_bin, "run-batch", "-i", str(out / "batch-00001.jsonl"), "-o", str(answers),
         "--model", str(bundled_hf_dir()), "--served-model-name", LOCAL_MODEL_NAME,
         "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN)],
        capture_output=True, text=True, timeout=HEALTH_TIMEOUT, env=clean_env(**cpu_env()))
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert len(answers.read_text().splitlines()) == len(PROMPTS)

    first = synthgen("batch", "ingest", "--db", db, answers)
    assert first.returncode == 0, first.stderr
    assert f"{len(PROMPTS)} answers stored, 0 stored before, 0 failed" in first.stdout
    again = synthgen("batch", "ingest", "--db", db, answers)
    assert again.returncode == 0, again.stderr
    assert f"0 answers stored, {len(PROMPTS)} stored before, 0 failed" in again.stdout
    assert count(db, "SELECT count(*) FROM responses") == len(PROMPTS)
    assert count(db, "SELECT count(DISTINCT request_id) FROM corpus WHERE len(logprobs) > 0") == len(PROMPTS)
    # nothing is left to send: the plan has no pending request
    rest = synthgen("batch", "write", "--db", db, "--out", tmp_path / "rest")
    assert rest.returncode == 0 and "nothing pending: no file written" in rest.stderr, rest.stderr
