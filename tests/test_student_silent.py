"""Called from Python, the student library writes nothing to stdout or stderr: progress
goes to the caller's callback or the `synthgen.student` logger (issue 12)."""

from __future__ import annotations

import logging

import pytest
from test_student_support import TEST_TINY, make_store

from synthgen.student.presets import teacher_tokenizer

pytestmark = pytest.mark.train


def test_train_and_evaluate_are_silent_and_log_instead(tmp_path, capfd, caplog) -> None:
    from synthgen.student.evaluate import evaluate
    from synthgen.student.train import TrainConfig, train

    db = make_store(tmp_path / "c.duckdb", teacher_tokenizer(), n=12)
    capfd.readouterr()  # the tokenizer cache may be built above; only train/eval count
    cfg = TrainConfig(
        db=str(db), out=str(tmp_path / "m"), max_steps=4, logging_steps=2, kd=True,
        holdout=0.25, tiny=TEST_TINY,
    )
    with caplog.at_level(logging.INFO, logger="synthgen.student"):
        train(cfg)
        evaluate(str(db), str(tmp_path / "m"), gen_rows=1, max_new_tokens=4)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    logged = [r.getMessage() for r in caplog.records if r.name == "synthgen.student"]
    assert any(m.startswith("step 2/4") for m in logged)
    assert any(m.startswith("eval:") for m in logged)
