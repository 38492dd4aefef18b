"""On-policy distillation on the CPU with tiny random models for teacher and student:
rollouts that do not depend on their batch, the OPD loss against a direct computation,
and `synthgen distill` killed (SIGKILL) mid-round, then resumed: nothing sampled or scored
twice, no held-out prompt sampled, and the same final weights as an uninterrupted run."""

from __future__ import annotations

import json
import shutil
import signal
import time

import duckdb
import pytest
import torch
from conftest import start_synthgen, synthgen
from tiny_models import pair, store_answers

from synthgen.scoring import score
from synthgen.student.kd import sparse_kd_loss
from synthgen.student.opd import DistillConfig, _records
from synthgen.student.sample import SampleOptions, sample

pytestmark = pytest.mark.train

QUESTIONS = ["What is 7 + 5?", "Count from one to ten.", "Name three colours.", "Hello! How are you?",
             "Give one tip for learning to cook.", "What is 9 times 3?", "Write a short poem.",
             "Who jumps over the lazy dog?", "What colour is the sky?", "Say thank you."]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS[:4]))
    return path


def _rollouts(db) -> dict[str, list[int]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT request_id, logprobs FROM corpus WHERE model LIKE 'student:%'").fetchall()
    finally:
        con.close()
    return {rid: [e["id"] for e in lps] for rid, lps in rows}


def test_a_rollout_does_not_depend_on_the_batch_it_was_sampled_in(models, prompts, tmp_path) -> None:
    _, student = models
    together = sample(student, tmp_path / "a.duckdb", options=SampleOptions(batch_size=8), input=prompts,
                      n=3, max_tokens=12, seed=0)
    alone = sample(student, tmp_path / "b.duckdb", options=SampleOptions(batch_size=1), input=prompts,
                   n=3, max_tokens=12, seed=0)
    assert together.answered == alone.answered == 12
    a, b = _rollouts(tmp_path / "a.duckdb"), _rollouts(tmp_path / "b.duckdb")
    assert a == b and len({tuple(v) for v in a.values()}) > 1  # same draws, and not all alike
    again = sample(student, tmp_path / "a.duckdb", options=SampleOptions(batch_size=8), input=prompts,
                   n=3, max_tokens=12, seed=0)
    assert (again.answered, again.already_done) == (0, 12)  # stored once: nothing sampled again


def test_reverse_kl_on_the_sampled_tokens_equals_a_direct_computation(models, prompts, tmp_path) -> None:
    """With K = the whole vocabulary, the bucketed reverse KL at every position of the
    student's own rollouts, from the scores in the store, is the exact reverse KL of the two
    models' distributions there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher_dir, student_dir = models
    db = tmp_path / "c.duckdb"
    name = sample(student_dir, db, input=prompts, n=2, max_tokens=10, seed=1).model
    tok = AutoTokenizer.from_pretrained(str(student_dir))
    vocab = len(tok)
    scored = score(db=str(db), teacher="local", teacher_model=str(teacher_dir), k=vocab)
    assert scored.scored == 8
    cfg = DistillConfig(db=str(db), out=str(tmp_path / "out"), student=str(student_dir), logprobs=vocab)
    records, tokens = _records(cfg, scored.teacher, name, student_dir)
    assert len(records) == 8 and tokens == sum(len(r["kd_pos"]) for r in records)
    student = AutoModelForCausalLM.from_pretrained(str(student_dir)).float().eval()
    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir)).float().eval()
    for rec in records:
        ids = torch.tensor([rec["input_ids"]])
        at = torch.tensor(rec["kd_pos"]) - 1  # the logits that predict each sampled token
        with torch.no_grad():
            s_logits, t_logits = student(input_ids=ids).logits[0, at], teacher(input_ids=ids).logits[0, at]
        assert [len(x) for x in rec["kd_ids"]] == [vocab] * len(at)
        bucketed = sparse_kd_loss(s_logits, torch.tensor(rec["kd_ids"]), torch.tensor(rec["kd_lps"]),
                                  kind="reverse")
        s, t = torch.log_softmax(s_logits, -1), torch.log_softmax(t_logits, -1)
        direct = (s.exp() * (s - t)).sum(-1).mean()
        assert float(bucketed) == pytest.approx(float(direct), rel=1e-4, abs=1e-5)


def _corpus(tmp_path, models):
    """A store of teacher answers to ten prompts (what --prompts reads), copied per run."""
    db = tmp_path / "base.duckdb"
    store_answers(db, [{"messages": [{"role": "user", "content": q}], "text": "Fine, thank you."}
                       for q in QUESTIONS])
    return db


ARGS = ["--prompts", "SELECT * FROM corpus WHERE model = 'teacher'", "--steps", "30",
        "--save-steps", "5", "--samples", "2", "--max-tokens", "10", "--logprobs", "8", "--holdout", "0.2",
        "--batch-size", "2", "--threads", "1"]


def _distill(db, out, teacher_dir, student_dir, rounds=2):
    """The command; the output directory's name is the same in every run (rollouts carry it)."""
    return ["distill", "--db", db, "--out", out / "opd", "--student", student_dir, "--teacher", "local",
            "--teacher-model", teacher_dir, "--rounds", str(rounds), *ARGS]


def _weights(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_distill_killed_mid_round_resumes_and_ends_where_an_uninterrupted_run_ends(models, tmp_path) -> None:
    teacher_dir, student_dir = models
    base = _corpus(tmp_path, models)
    shutil.copy(base, tmp_path / "a.duckdb")
    shutil.copy(base, tmp_path / "b.duckdb")
    whole = synthgen(*_distill(tmp_path / "a.duckdb", tmp_path / "a", teacher_dir, student_dir), timeout=600)
    assert whole.returncode == 0, whole.stderr

    proc = start_synthgen(*_distill(tmp_path / "b.duckdb", tmp_path / "b", teacher_dir, student_dir))
    checkpoints = tmp_path / "b" / "opd" / "round-1" / "checkpoints"
    deadline = time.monotonic() + 300
    while not any(checkpoints.glob("checkpoint-*/trainer_state.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "round 1 never wrote a checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (tmp_path / "b" / "opd" / "round-1" / "synthgen_train.json").exists(), "killed too late"
    # Resumed with one round, then given a second: a finished run goes on from its last round.
    resumed = synthgen(*_distill(tmp_path / "b.duckdb", tmp_path / "b", teacher_dir, student_dir, rounds=1),
                       timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    extended = synthgen(*_distill(tmp_path / "b.duckdb", tmp_path / "b", teacher_dir, student_dir),
                        timeout=600)
    assert extended.returncode == 0, extended.stderr

    state = json.loads((tmp_path / "b" / "opd" / "distill.json").read_text())
    first = state["rounds"][0]
    assert (first["sampled_here"], first["scored_here"]) == (0, 0)  # all stored before the kill
    assert first["rollouts"] == first["scored"] == 16
    con = duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True)
    try:
        once = "SELECT count(*), count(DISTINCT request_id) FROM "
        answers, distinct = con.execute(once + "responses").fetchone()
        scores, scored = con.execute(once + "scores").fetchone()
        rollouts = {m for (m,) in con.execute(
            "SELECT messages::VARCHAR FROM corpus WHERE model LIKE 'student:%'").fetchall()}
        held = json.loads((tmp_path / "b" / "opd" / "split.json").read_text())["heldout_ids"]
        held_prompts = {m for (m,) in con.execute("SELECT messages::VARCHAR FROM corpus WHERE request_id IN "
                                                  "(SELECT unnest(?))", [held]).fetchall()}
    finally:
        con.close()
    assert answers == distinct == 10 + 2 * 16 and scores == scored == 2 * 16  # each once
    assert held_prompts and not rollouts & held_prompts  # no held-out prompt was ever sampled

    a, b = _weights(tmp_path / "a" / "opd" / "round-2"), _weights(tmp_path / "b" / "opd" / "round-2")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    eval_run = synthgen("eval", "--db", tmp_path / "b.duckdb", "--model", tmp_path / "b" / "opd" / "round-2",
                        "--json", "--gen-rows", "0", "--speed-tokens", "0", timeout=300)
    assert eval_run.returncode == 0, eval_run.stderr
    assert json.loads(eval_run.stdout)["heldout_rows"] == len(held)


def test_a_checkpoint_cut_short_by_a_kill_is_not_resumed_from(tmp_path) -> None:
    """The Trainer writes trainer_state.json last: a kill while saving leaves a directory
    it refuses to resume from. The newest complete one is used, the broken one removed."""
    from synthgen.student.train import _last_checkpoint

    for step, state in ((5, "{}"), (10, None), (15, '{"cut')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert _last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


def test_distillm2_pairs_put_the_teachers_answer_against_the_students(models, prompts, tmp_path) -> None:
    _, student = models
    db = tmp_path / "c.duckdb"
    store_answers(db, [{"messages": [{"role": "user", "content": q}], "text": f"teacher on {q}"}
                       for q in QUESTIONS[:4]])
    # the teacher's answers were stored with canonical messages, as generate plans them
    name = sample(student, db, input=prompts, n=1, max_tokens=6, seed=0).model
    out = tmp_path / "pairs.jsonl"
    result = synthgen("export", "--db", db, "--out", out, "--format", "distillm2")
    assert result.returncode == 0, result.stderr
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) == 4
    for p in pairs:
        assert p["chosen"][0]["content"] == f"teacher on {p['prompt'][0]['content']}"
        assert p["rejected_model"] == name and p["chosen_model"] == "teacher"


def test_distill_refuses_a_teacher_that_cannot_score_before_the_student_samples(models, tmp_path) -> None:
    """A served teacher is checked as `synthgen score` checks it, before the first rollout:
    an API that cannot score given tokens is refused naming the alternatives, and nothing
    is planned or sampled (a student's rollouts would be paid for and never scored)."""
    _, student_dir = models
    db = _corpus(tmp_path, models)
    result = synthgen("distill", "--db", db, "--out", tmp_path / "opd", "--student", student_dir,
                      "--teacher", "https://api.openai.com/v1", *ARGS, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "cannot score" in result.stderr and "Traceback" not in result.stderr
    con = duckdb.connect(str(db), read_only=True)
    try:
        sampled = con.execute("SELECT count(*) FROM requests WHERE model LIKE 'student:%'").fetchone()[0]
    finally:
        con.close()
    assert sampled == 0
