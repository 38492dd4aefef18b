"""Preference pairs from judge scores, UltraFeedback's binarization: for each prompt, the
highest-scored answer is chosen and the lowest-scored rejected, when their scores differ
by at least `min_margin` (a tie teaches nothing). The rows are a judge stage's (one
judgment per answer: its parent_request_id is the answer judged, `score` its score,
`group` the prompt the answers share); pairs go to `preference_pairs`, which
`export --format preference` writes as prompt/chosen/rejected.

Rows without a score are removed ("no-score"); the rest are all kept (every judgment is
data): the pairs are what this filter adds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import Outcome, Removal, column


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: str = "score"      # the column with the judge's score
    group: str = "prompt"     # the column naming the prompt the judged answers share
    min_margin: float = Field(1.0, ge=0)


def run(rows: list[dict[str, Any]], p: dict[str, Any]) -> Outcome:
    column(rows, p["score"], "preference-pairs")
    column(rows, p["group"], "preference-pairs")
    out = Outcome()
    groups: dict[Any, list[tuple[float, str]]] = {}
    for row in rows:
        score = _number(row[p["score"]])
        if score is None or row.get("parent_request_id") is None:
            out.removed.append(Removal(row["request_id"], "no-score", f"score {row[p['score']]!r}"))
            continue
        groups.setdefault(row[p["group"]], []).append((score, row["parent_request_id"]))
    for judged in groups.values():
        best = {}
        for score, answer in judged:  # one score per answer: several judgments are averaged
            best.setdefault(answer, []).append(score)
        scored = sorted(((sum(s) / len(s), a) for a, s in best.items()), key=lambda x: (-x[0], x[1]))
        if len(scored) < 2:
            continue
        (high, chosen), (low, rejected) = scored[0], scored[-1]
        if high - low >= p["min_margin"] and high > low:
            out.pairs.append((chosen, rejected, high, low))
    out.figures = {"prompts": len(groups), "pairs": len(out.pairs)}
    return out


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
