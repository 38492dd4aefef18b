"""The self-instruct filter: ROUGE-L exactly as rouge-score computes it (on fixtures and on
random pairs), and each of the paper's rules on texts planted to break it."""

from __future__ import annotations

import json
import random

import pytest
from rouge_score import rouge_scorer

from synthgen.recipes.filters import check_params, selfinstruct
from synthgen.recipes.filters.rouge import rouge_l
from synthgen.student.rouge import rouge_l as student_rouge_l

FIXTURES = [
    ("A b c d.", "a b c d"),  # punctuation and case: rouge-score 1.0, whitespace tokens 0.75
    ("Hello, world!", "hello world"),
    ("Write a poem about the sea.", "Write a short poem about the ocean"),
    ("Explain why the sky is blue.", "Why is the sky blue? Explain."),
    ("List three prime numbers", "Name three prime numbers greater than ten"),
    ("", "anything at all"),
    ("!!!", "???"),
    ("It's 3 o'clock; the x-ray is ready.", "its 3 oclock the x ray is ready"),
    ("Übersetze diesen Satz.", "Translate this sentence."),
    ("the the the cat", "the cat the the"),
]
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


@pytest.mark.parametrize(("a", "b"), FIXTURES)
def test_rouge_l_agrees_with_rouge_score_on_fixtures(a, b):
    expected = SCORER.score(b, a)["rougeL"].fmeasure
    assert rouge_l(a, b) == pytest.approx(expected, abs=1e-12)
    assert rouge_l(b, a) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("a", "b"), FIXTURES)
def test_the_students_rouge_l_is_the_same_number(a, b):
    """The student's eval (student/rouge.py) scores with rouge-score itself: one ROUGE-L."""
    assert rouge_l(a, b) == pytest.approx(student_rouge_l(a, b), abs=1e-12)


def test_rouge_l_agrees_with_rouge_score_on_random_pairs():
    rng = random.Random(14)
    words = ["a", "an", "the", "cat", "dog", "sat", "on", "mat,", "ran.", "far!", "Away", "42", "x-ray",
             "it's", "über", "naïve"]
    worst = 0.0
    for _ in range(2000):
        a = " ".join(rng.choice(words) for _ in range(rng.randint(0, 60)))
        b = " ".join(rng.choice(words) for _ in range(rng.randint(0, 60)))
        worst = max(worst, abs(rouge_l(a, b) - SCORER.score(b, a)["rougeL"].fmeasure))
    assert worst < 1e-12


def row(rid: str, text: str) -> dict:
    return {"request_id": rid, "instruction": text}


def test_each_rule_of_the_paper_removes_what_it_should(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps({"prompt": p}) for p in [
        "Write a poem about the sea at night.", "Explain how a rainbow forms."]) + "\n")
    params = check_params("self-instruct", {"field": "instruction", "pool": str(seeds)}, tmp_path)
    rows = [
        row("ok1", "Describe the life cycle of a butterfly in simple words."),
        row("short", "Tell a joke"),
        row("long", " ".join(["word"] * 151)),
        row("kw", "Describe the image below in three sentences."),
        row("kw2", "Please go to the store and buy milk for me."),
        row("prog", "Write a program that sorts a list of numbers."),
        row("punct", "- Summarize the story of Hamlet briefly please."),
        row("ascii", "¿Cómo se dice hello in Spanish, in a sentence?"),
        row("seed", "Write a poem about the sea at night"),       # ROUGE-L 1.0 with a seed
        row("near", "Describe the life cycle of a butterfly in very simple words."),  # vs ok1
        row("ok2", "Give three tips for staying focused while studying."),
        row("map", "Summarize how a mapmaker works, in two sentences."),  # 'mapmaker' is not 'map'
    ]
    out = selfinstruct.run(rows, params)
    got = {r.request_id: (r.rule, r.other) for r in out.removed}
    assert got == {"short": ("length", None), "long": ("length", None), "kw": ("keyword", None),
                   "kw2": ("keyword", None), "prog": ("write-a-program", None),
                   "punct": ("punctuation", None), "ascii": ("non-ascii", None),
                   "seed": ("rouge-l", None), "near": ("rouge-l", "ok1")}
    near = next(r for r in out.removed if r.request_id == "near")
    assert near.detail.startswith("0.9") and "a kept row" in near.detail
    assert out.figures == {"pool": 2}


def test_of_two_near_copies_the_first_stays_and_the_threshold_is_inclusive(tmp_path):
    a = "Name three animals that live in the desert"
    b = "Name three animals that live in a desert"  # 7 of 8 tokens in common: F1 0.875
    params = check_params("self-instruct", {"field": "instruction", "threshold": 0.875}, tmp_path)
    out = selfinstruct.run([row("a", a), row("b", b)], params)
    assert rouge_l(a, b) == pytest.approx(0.875)
    assert [(r.request_id, r.rule, r.other) for r in out.removed] == [("b", "rouge-l", "a")]
    looser = check_params("self-instruct", {"field": "instruction", "threshold": 0.9}, tmp_path)
    assert selfinstruct.run([row("a", a), row("b", b)], looser).removed == []
