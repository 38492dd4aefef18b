"""Evol-Instruct's elimination of failed evolutions (Xu et al., 2023, WizardLM, section 3.2):

    1  no information gain over the original: judged by the teacher (the recipe's
       `equality` stage asks it, through a response schema; a SQL keep drops "equal")
    2  sorry            the answer contains "sorry" and is short (under 80 words): the
                        evolved instruction was too hard to answer
    3  stop-words-only  the answer is nothing but punctuation and stop words
    4  copied-prompt    the evolved instruction copies the evolving prompt's own words
                        ("given prompt", "rewritten prompt", "#Rewritten Prompt#", ...)

Rules 2 and 3 read the answer column (`response`), rule 4 the instruction column
(`instruction`); set either to null to skip its rules (each stage checks what it has).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import Outcome, Removal, column

COPIED = ("given prompt", "rewritten prompt", "created prompt", "#the given prompt#", "#given prompt#",
          "#rewritten prompt#", "#created prompt#")
# English stop words (the usual list, as in NLTK's): an answer made only of these says nothing.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves ok okay yes
""".split())  # noqa: SIM905 - a word list reads best as text
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: str | None = "instruction"  # rule 4 (null: skip)
    response: str | None = "response"        # rules 2 and 3 (null: skip)
    sorry_words: int = 80


def run(rows: list[dict[str, Any]], p: dict[str, Any]) -> Outcome:
    for name in (p["instruction"], p["response"]):
        if name:
            column(rows, name, "evol-instruct")
    out = Outcome()
    for row in rows:
        problem = None
        if p["instruction"]:
            problem = copied(row[p["instruction"]] or "")
        if problem is None and p["response"]:
            problem = failed_answer(row[p["response"]] or "", p["sorry_words"])
        if problem is not None:
            out.removed.append(Removal(row["request_id"], *problem))
    return out


def copied(instruction: str) -> tuple[str, str] | None:
    low = instruction.casefold()
    for phrase in COPIED:
        if phrase in low:
            return "copied-prompt", phrase
    return None


def failed_answer(text: str, sorry_words: int) -> tuple[str, str] | None:
    words = WORD.findall(text.casefold())
    if "sorry" in text.casefold() and len(words) < sorry_words:
        return "sorry", f"{len(words)} words"
    if all(w in STOP_WORDS for w in words):
        return "stop-words-only", " ".join(words[:8]) or "(punctuation only)"
    return None
