"""`synthgen score` against vLLM's real engine (issue 27): the scores a served teacher gives
agree with the local transformers scorer on the same weights, and a scoring run killed with
SIGKILL, then run again, scores every answer exactly once.

The answers are the tier's teacher's own (vLLM stores their token ids), plus one imported
as text only; the teacher scores them back, so the answer's own logprob is known twice.
"""

from __future__ import annotations

import json
import re
import signal
import time

import duckdb
import pytest
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import write_jsonl
from tiny_models import store_answers

import synthgen as sg

pytestmark = pytest.mark.vllm

K = 5
AGREEMENT = 0.05  # nats per token, on average (the bar); fp32 both sides gives ~1e-4


@pytest.fixture(scope="module")
def answers(vllm_teacher, tmp_path_factory):
    """A store of 48 teacher answers with their token ids, and one stored as text alone."""
    tmp = tmp_path_factory.mktemp("score")
    prompts = [{"prompt": f"Give one tip number {i} for learning to cook."} for i in range(48)]
    write_jsonl(tmp / "in.jsonl", prompts)
    summary = sg.generate(input=tmp / "in.jsonl", db=tmp / "c.duckdb", model=vllm_teacher.model,
                          base_urls=vllm_teacher.base_urls, max_tokens=24, temperature=0.8, seed=0,
                          logprobs=2)
    assert summary.answered == 48, summary
    store_answers(tmp / "c.duckdb", [{"messages": [{"role": "user", "content": "What is 7 + 5?"}],
                                      "text": "7 + 5 is 12.", "finish_reason": "stop"}])
    return tmp / "c.duckdb"


def _scores(db, k: int) -> dict[str, list[dict]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {f"{t}|{rid}": lps for rid, t, lps in con.execute(
            "SELECT request_id, teacher, logprobs FROM scores WHERE k = ?", [k]).fetchall()}
    finally:
        con.close()


def test_a_served_teacher_scores_like_the_local_one_on_the_same_weights(vllm_teacher, answers) -> None:
    url = vllm_teacher.base_urls[0]
    served = synthgen("score", "--db", answers, "--teacher", url, "--logprobs", K, "--json", timeout=900)
    assert served.returncode == 0, served.stderr
    summary = json.loads(served.stdout)
    assert (summary["scored"], summary["pending"], summary["form"]) == (49, 0, "prompt_logprobs")
    local = synthgen("score", "--db", answers, "--teacher", "local", "--logprobs", K, "--json", timeout=900)
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["scored"] == 49

    scores = _scores(answers, K)
    by_teacher: dict[str, dict[str, list[dict]]] = {}
    for key, lps in scores.items():
        teacher, rid = key.split("|")
        by_teacher.setdefault(teacher, {})[rid] = lps
    assert set(by_teacher) == {vllm_teacher.model, json.loads(local.stdout)["teacher"]}
    vllm_side, local_side = by_teacher[vllm_teacher.model], by_teacher[json.loads(local.stdout)["teacher"]]
    diffs, top_same, top_n = [], 0, 0
    for rid, v in vllm_side.items():
        t = local_side[rid]
        assert [e["id"] for e in v] == [e["id"] for e in t]  # the same tokens: ids sent, not text
        for a, b in zip(v, t, strict=True):
            diffs.append(abs(a["logprob"] - b["logprob"]))
            top_n += 1
            top_same += a["top_logprobs"][0]["id"] == b["top_logprobs"][0]["id"]
            assert len(a["top_logprobs"]) == len(b["top_logprobs"]) == K
    assert sum(diffs) / len(diffs) < AGREEMENT, (sum(diffs) / len(diffs), max(diffs))
    assert top_same / top_n > 0.98
    # the teacher's own answers: the score of each token is the logprob it was generated with
    con = duckdb.connect(str(answers), read_only=True)
    stored = dict(con.execute("SELECT request_id, logprobs FROM corpus WHERE logprobs IS NOT NULL")
                  .fetchall())
    con.close()
    for rid, lps in stored.items():
        assert [e["id"] for e in vllm_side[rid]] == [e["id"] for e in lps]
        gen = [e["logprob"] for e in lps]
        gap = sum(abs(a["logprob"] - g) for a, g in zip(vllm_side[rid], gen, strict=True)) / len(gen)
        assert gap < AGREEMENT


def test_the_echo_form_gives_the_same_scores(vllm_teacher, answers) -> None:
    result = synthgen("score", "--db", answers, "--teacher", vllm_teacher.base_urls[0], "--logprobs", 3,
                      "--form", "echo", "--where", "request_id IN (SELECT request_id FROM corpus LIMIT 6)",
                      "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scored"] == 6
    echo = _scores(answers, 3)
    both = _scores(answers, K)
    for key, lps in echo.items():
        ref = both[key]
        assert [e["id"] for e in lps] == [e["id"] for e in ref]
        assert all(abs(a["logprob"] - b["logprob"]) < 1e-3 for a, b in zip(lps, ref, strict=True))


def test_scoring_killed_with_sigkill_then_run_again_scores_every_answer_once(vllm_teacher, answers) -> None:
    args = ["score", "--db", answers, "--teacher", vllm_teacher.base_urls[0], "--logprobs", 2,
            "--concurrency", 2, "--progress-interval", 0.2]
    proc = start_synthgen(*args, env=clean_env())
    done = 0
    deadline = time.monotonic() + 600
    assert proc.stderr is not None
    while done < 8 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if m := re.match(r"\s*([\d,]+)/([\d,]+)", line):
            done = int(m.group(1).replace(",", ""))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert 8 <= done < 49, f"the kill came at {done} of 49"
    before = len(_scores(answers, 2))
    assert 0 < before < 49
    again = synthgen(*args, "--json", timeout=900)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["already_scored"] == before and summary["scored"] == 49 - before
    con = duckdb.connect(str(answers), read_only=True)
    n, distinct = con.execute("SELECT count(*), count(DISTINCT request_id) FROM scores WHERE k = 2"
                              ).fetchone()
    con.close()
    assert n == distinct == 49


def test_distill_with_a_served_teacher_and_one_of_another_tokenizer_refused(vllm_teacher, answers,
                                                                            tmp_path) -> None:
    """One small round against the served teacher: a 2-layer student cut from the bundled
    teacher (the one vLLM serves) samples, vLLM scores, the student trains. A student of
    another tokenizer is refused before anything is sampled."""
    url = vllm_teacher.base_urls[0]
    args = ["--db", answers, "--teacher", url, "--rounds", "1", "--prompts-per-round", "4",
            "--steps", "2", "--max-tokens", "12", "--logprobs", "4",
            "--prompts", "SELECT * FROM corpus WHERE coalesce(model, '') NOT LIKE 'student:%'"]
    ok = synthgen("distill", "--out", tmp_path / "opd", "--student", "prune:2", *args, "--json", timeout=1500)
    assert ok.returncode == 0, ok.stderr
    state = json.loads(ok.stdout)
    [first] = state["rounds"]
    assert first["rollouts"] == first["scored"] == 4 and first["teacher_tokens"] > 0
    assert (tmp_path / "opd" / "round-1" / "model.safetensors").exists()

    from tiny_models import make_model, make_tokenizer

    other = tmp_path / "other"
    make_model(other, make_tokenizer(tmp_path / "tok"), seed=0)
    refused = synthgen("distill", "--out", tmp_path / "refused", "--student", other, *args, timeout=900)
    assert refused.returncode == 2, refused.stderr
    assert "tokenizes a conversation differently" in refused.stderr and "Traceback" not in refused.stderr
    con = duckdb.connect(str(answers), read_only=True)
    sampled = con.execute("SELECT count(*) FROM requests WHERE model LIKE 'student:refused/%'").fetchone()[0]
    con.close()
    assert sampled == 0  # refused before anything was planned or sampled
