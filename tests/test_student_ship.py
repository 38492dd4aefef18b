"""Shipping a student: export to GGUF with llama.cpp's own tools, serve it with the bundled
teacher's launcher, score it through its logprobs, and compare two servers.

The student is a test-sized tiny Llama trained for a few steps on the test store, so its
greedy answers are words ("The sun is nice...") with clear margins between the best token
and the next, not a random model's near-ties; the servers are real llama-servers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from conftest import synthgen
from test_student_support import TEST_TINY, make_store

from synthgen.store import connect
from synthgen.student.presets import teacher_tokenizer
from synthgen.student.train import TrainConfig, train
from synthgen.teacher.build import QUANTIZE, cached_binary
from synthgen.teacher.local import find_llama_server

pytestmark = [pytest.mark.train, pytest.mark.e2e]


@pytest.fixture(scope="module", autouse=True)
def _server_installed():
    from synthgen.errors import TeacherError

    try:
        find_llama_server()
    except TeacherError as exc:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no llama.cpp server here: {exc}")


@pytest.fixture(scope="module")
def tok():
    return teacher_tokenizer()


@pytest.fixture(scope="module")
def db(tmp_path_factory, tok):
    return make_store(tmp_path_factory.mktemp("store") / "c.duckdb", tok, n=24)


def trained_dir(db, out: Path, **kw) -> Path:
    cfg = {"max_steps": 30, "lr": 1e-2, "logging_steps": 10, "holdout": 0.25, "tiny": TEST_TINY, **kw}
    train(TrainConfig(db=str(db), out=str(out), **cfg))
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory, db):
    return trained_dir(db, tmp_path_factory.mktemp("student") / "s")


def export(model: Path, out: Path, *args: str, db: Path | None = None):
    argv = ["student", "export", "--model", model, "--out", out, *args, "--json", "--threads", "2"]
    result = synthgen(*argv, *(["--db", db] if db else []), timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def f16(tmp_path_factory, student, db):
    out = tmp_path_factory.mktemp("gguf") / "student-f16.gguf"
    return out, export(student, out, "--quant", "f16", "--max-new-tokens", "24", db=db)


def test_export_round_trips_through_llama_server(f16) -> None:
    out, report = f16
    assert out.is_file() and report["size_bytes"] == out.stat().st_size
    assert report["architecture"] == "llama" and report["layers"] == TEST_TINY["num_hidden_layers"]
    assert report["vocabulary"] == "same" and report["chat_template_in_file"]
    assert report["prompts_from"] == "held-out prompts" and report["checked"] == 4
    # llama-server rendered and tokenized every prompt as transformers does ...
    assert report["template_same"] == report["tokens_same"] == 4
    # ... and, from the same ids, answered with the same greedy tokens
    for p in report["prompts"]:
        assert p["greedy_same"], p
        assert p["hf_tokens"] >= 4 and "is" in p["hf_text"], p  # words, not a degenerate repeat
    assert report["greedy_same"] == 4
    assert not list(out.parent.glob(".export-*")), "the staging directory is left behind"


def test_a_gguf_is_requantized_through_its_dequantized_weights(tmp_path, f16, monkeypatch) -> None:
    """--model FILE.gguf (how the teacher is set beside the student at one quantization):
    the file is dequantized into the cache, converted again, and still answers as before."""
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "again-f32.gguf"
    report = export(f16[0], out, "--quant", "f32", "--prompts", "2", "--max-new-tokens", "16")
    assert out.is_file() and report["quant"] == "f32" and report["layers"] == TEST_TINY["num_hidden_layers"]
    assert report["vocabulary"] == "same" and report["chat_template_in_file"]
    assert report["greedy_same"] == report["checked"] == 2, report["prompts"]
    assert list((tmp_path / "cache" / "dequantized").glob("*/config.json")), "not dequantized into the cache"


def test_served_nll_is_transformers_nll(f16, student, db, tok) -> None:
    """eval --served scores the GGUF on the held-out rows through llama-server's logprobs:
    the same tokens, and (f16 weights) the same NLL to within a percent, as transformers."""
    from transformers import AutoModelForCausalLM

    from synthgen.student.evaluate import metrics
    from synthgen.student.rows import Split, heldout_rows
    from synthgen.teacher import start_teacher

    out, _ = f16
    rows = heldout_rows(str(db), Split.load(student / "split.json"))
    model = AutoModelForCausalLM.from_pretrained(str(student)).eval()
    hf = metrics(model, tok, rows, 512, 0, 8)
    with start_teacher("local", model=str(out), threads=2, parallel=1, announce=None) as served:
        result = synthgen("eval", "--db", db, "--served", served.base_urls[0], "--model", student, "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["served"]["tokens"] == hf["tokens"] and got["heldout_rows"] == len(rows)
    assert math.isclose(got["served"]["loss"], hf["loss"], rel_tol=0.01), (got["served"]["loss"], hf["loss"])
    assert got["served"]["model"] == "student-f16"
    con = connect(db)
    stored = con.execute("SELECT label FROM evals WHERE eval_id = ?", [got["eval_id"]]).fetchall()
    labels = {r[0] for r in stored}
    con.close()
    assert labels == {"served", "teacher"}


def test_an_unmerged_lora_student_is_merged_on_export(tmp_path, db) -> None:
    lora = trained_dir(db, tmp_path / "lora", lora=True, max_steps=6)
    assert (lora / "adapter_config.json").is_file() and not (lora / "config.json").is_file()
    report = export(lora, tmp_path / "lora.gguf", "--quant", "q8_0", "--prompts", "2")
    assert report["merged_lora"] and report["checked"] == 2
    assert report["template_same"] == report["tokens_same"] == 2


def test_a_student_without_a_chat_template_is_refused(tmp_path, tok) -> None:
    from test_student_support import write_tiny_dir

    model = write_tiny_dir(tmp_path / "bare", tok)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    result = synthgen("student", "export", "--model", model, "--out", tmp_path / "bare.gguf")
    assert result.returncode == 2, result.stderr
    assert "has no chat template" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bare.gguf").exists()


def test_bad_flags_name_the_flag(tmp_path, student) -> None:
    result = synthgen("student", "export", "--model", student, "--out", tmp_path / "x.bin")
    assert result.returncode == 2 and "--out" in result.stderr and "Traceback" not in result.stderr
    result = synthgen("student", "export", "--model", tmp_path / "missing.gguf", "--out", tmp_path / "x.gguf")
    assert result.returncode == 2 and "--model" in result.stderr and "no such GGUF" in result.stderr
    result = synthgen("teacher", "start", "--model", tmp_path / "missing.gguf", "--state-dir", tmp_path)
    assert result.returncode == 2 and "--model" in result.stderr and "no such GGUF" in result.stderr


@pytest.mark.skipif(cached_binary(QUANTIZE) is None, reason="llama-quantize is not built on this machine "
                    "(synthgen student export --quant q4_k_m builds it once, 4-8 min)")
def test_q4_k_m_export_is_quantized_by_llama_quantize_and_served(tmp_path, student, f16) -> None:
    report = export(student, tmp_path / "q4.gguf", "--quant", "q4_k_m", "--prompts", "2")
    assert report["quant"] == "q4_k_m" and report["checked"] == 2
    assert report["template_same"] == report["tokens_same"] == 2
    assert report["size_bytes"] < f16[1]["size_bytes"]


def test_compare_reports_every_column(tmp_path, f16, student, db) -> None:
    """Two servers started by `teacher start`: the f16 export as the teacher, a q8_0 export
    of the same student as the student; every column of the table has a value."""
    teacher_gguf, _ = f16
    student_gguf = tmp_path / "student-q8.gguf"
    export(student, student_gguf, "--quant", "q8_0", "--prompts", "0")
    states = tmp_path / "states"
    urls = {}
    try:
        for name, gguf in (("t", teacher_gguf), ("s", student_gguf)):
            started = synthgen("teacher", "start", "--model", gguf, "--name", name, "--state-dir", states,
                               "--threads", "1", "--parallel", "1")
            assert started.returncode == 0, started.stderr
            urls[name] = started.stdout.strip()
        result = synthgen("compare", "--teacher", urls["t"], "--student", urls["s"], "--db", db,
                          "--split", student, "--prompts", "2", "--max-tokens", "8", "--repeat", "2",
                          "--state-dir", states, "--json", timeout=300)
        assert result.returncode == 0, result.stderr
        got = json.loads(result.stdout)
        table = synthgen("compare", "--teacher", urls["t"], "--student", urls["s"], "--db", db,
                         "--split", student, "--prompts", "1", "--max-tokens", "4", "--repeat", "1",
                         "--nll-rows", "1", "--state-dir", states, timeout=300)
        assert table.returncode == 0, table.stderr
    finally:
        for name in urls:
            synthgen("teacher", "stop", "--name", name, "--state-dir", states)
    for role, gguf in (("teacher", teacher_gguf), ("student", student_gguf)):
        m = got[role]
        assert m["file_bytes"] == gguf.stat().st_size and m["rss_bytes"] > 1_000_000
        for key in ("prompt_tps", "gen_tps", "ttft_ms"):
            assert m[key]["median"] > 0 and m[key]["min"] <= m[key]["median"] <= m[key]["max"], (role, key)
            assert len(m["passes"]) == 2
        assert m["nll"] > 0 and m["nll_tokens"] > 0
    assert got["teacher"]["ftype"] == "F16" and got["student"]["ftype"] == "Q8_0"
    assert 0 <= got["student"]["rouge_l"] <= 1
    assert all(v is not None for v in got["ratios"].values()), got["ratios"]
    assert got["ratios"]["file"] < 1  # q8_0 is smaller than f16
    assert got["rows_from"].startswith("held out by")
    assert len(got["load_average"]) == 2
    for column in ("file MB", "RSS MB", "prompt tok/s", "gen tok/s", "TTFT ms", "held-out NLL", "ROUGE-L"):
        assert column in table.stdout
    assert "student / teacher" in table.stdout and " - " not in table.stdout.split("\n\n")[0]
    con = connect(db)
    stored = con.execute("SELECT label, metrics FROM evals WHERE eval_id = ? ORDER BY label",
                         [got["eval_id"]]).fetchall()
    con.close()
    assert [s[0] for s in stored] == ["compare:student", "compare:teacher"]
    assert json.loads(stored[0][1])["ratios"]["nll"] == got["ratios"]["nll"]
