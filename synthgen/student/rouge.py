"""ROUGE-L F1 exactly as the `rouge-score` package (Google's reference implementation)
computes it: its tokenizer (lower-cased, non-alphanumerics dropped), no stemming, the
longest common subsequence of tokens."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of `candidate` against `reference`."""
    return float(_scorer().score(reference, candidate)["rougeL"].fmeasure)
