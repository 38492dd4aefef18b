"""The student/teacher ratios eval reports, and ROUGE-L as rouge-score computes it."""

from __future__ import annotations

import pytest

from synthgen.student.closeness import paired_speed_ratio, ratios, stored_nll, summary_line
from synthgen.student.rouge import rouge_l
from synthgen.student.rows import Row

pytestmark = pytest.mark.train


def test_rouge_l_is_the_reference_f1_with_its_tokenizer() -> None:
    # LCS "the cat sat" = 3 of 3 candidate and 6 reference tokens: F1 = 2 * 1 * 0.5 / 1.5.
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert rouge_l("The CAT, sat!", "the cat sat") == pytest.approx(1.0)  # case and punctuation
    assert rouge_l("", "anything") == 0.0


def test_paired_speed_ratio_is_the_median_of_pairs() -> None:
    # A load spike on the third prompt doubles both timings there; the median ignores it.
    student = [1.0, 1.0, 10.0, 1.0]
    teacher = [1.5, 1.4, 30.0, 1.6]
    assert paired_speed_ratio(student, teacher) == pytest.approx((1.5 + 1.6) / 2)
    assert paired_speed_ratio([], []) is None


def test_ratios_and_the_summary_line() -> None:
    student = {"loss": 2.0, "parameters": 75, "tokens_per_s": 30.0, "speed_ratio": 1.4}
    teacher = {"loss": 1.0, "parameters": 100, "tokens_per_s": 20.0}
    assert ratios(student, teacher) == {"nll_ratio": 2.0, "param_ratio": 0.75, "speed_ratio": 1.4}
    line = summary_line("kd", student, teacher)
    assert "2.00x" in line and "parameters 0.75x" in line and "(1.40x)" in line
    assert ratios({"loss": 1.0}, {"loss": None})["nll_ratio"] is None


def test_stored_nll_averages_every_stored_token() -> None:
    a = Row("a", [], "x", logprobs=[{"logprob": -1.0}, {"logprob": -2.0}])
    b = Row("b", [], "y", logprobs=[{"logprob": -3.0}])
    assert stored_nll([a, b, Row("c", [], "z")]) == (pytest.approx(2.0), 3)
