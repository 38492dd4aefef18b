"""Self-Instruct's filters (Wang et al., 2023, and its bootstrap code), in its order:

    length           3 < words <= 150
    keyword          a word language models cannot act on (image, graph, file, map, draw,
                     plot, go to, ...), matched as a whole word, any case
    write-a-program  starts with "Write a program" (unclear whether to write or to run it)
    punctuation      starts with punctuation
    non-ascii        starts with a character outside ASCII
    rouge-l          ROUGE-L >= 0.7 against an instruction already in the pool: the seed
                     tasks, then every instruction kept before it (in input order), so of
                     two near-copies the first stays

The pool's ROUGE-L is rouge-score's (see rouge.py). Each removal records its rule; a
ROUGE-L one also the score and the instruction it was too close to (a seed's text, or the
kept row it collided with).
"""

from __future__ import annotations

import re
import string
from typing import Any

from pydantic import BaseModel, ConfigDict

from ...inputs import read_rows
from . import Outcome, Removal, column
from .rouge import Tokens, bound, fmeasure, tokens

KEYWORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map",
            "maps", "draw", "plot", "go to")
PATHS = ("pool",)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = "response"        # the column holding the new instruction
    pool: str | None = None        # seed tasks (JSONL/CSV/Parquet) the new ones must differ from
    pool_field: str = "prompt"
    threshold: float = 0.7
    min_words: int = 4
    max_words: int = 150
    keywords: list[str] = list(KEYWORDS)


def normalize(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def first_problem(text: str, p: dict[str, Any]) -> tuple[str, str] | None:
    """The first rule (besides ROUGE-L) `text` breaks, with a detail; None if none."""
    words = len(text.split())
    if words < p["min_words"] or words > p["max_words"]:
        return "length", f"{words} words (keeps {p['min_words']} to {p['max_words']})"
    for word in p["keywords"]:
        if re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE):
            return "keyword", word
    if text.startswith("Write a program"):
        return "write-a-program", ""
    if text[0] in string.punctuation:
        return "punctuation", text[0]
    if not text[0].isascii():
        return "non-ascii", text[0]
    return None


def run(rows: list[dict[str, Any]], p: dict[str, Any]) -> Outcome:
    column(rows, p["field"], "self-instruct")
    pool: list[tuple[Tokens, str, str | None]] = []  # (tokens, text, request_id or None for a seed)
    if p["pool"]:
        for _, fields in read_rows(_path(p["pool"]), None):
            text = normalize(fields.get(p["pool_field"])) if isinstance(fields, dict) else ""
            if text:
                pool.append((Tokens(tokens(text)), text, None))
    out = Outcome(figures={"pool": len(pool)})
    for row in rows:
        text = normalize(row[p["field"]])
        problem = first_problem(text, p) if text else ("length", "empty")
        if problem is not None:
            out.removed.append(Removal(row["request_id"], problem[0], problem[1]))
            continue
        mine = Tokens(tokens(text))
        hit = _closest(mine, pool, p["threshold"])
        if hit is not None:
            score, other_text, other_id = hit
            out.removed.append(Removal(row["request_id"], "rouge-l",
                                       f"{score:.2f} with {'a seed' if other_id is None else 'a kept row'}: "
                                       f"{other_text[:120]}", other_id))
            continue
        pool.append((mine, text, row["request_id"]))
    return out


def _closest(mine: Tokens, pool: list[tuple[Tokens, str, str | None]],
             threshold: float) -> tuple[float, str, str | None] | None:
    """The first pool entry at or above the threshold (the paper rejects on any)."""
    for other, text, rid in pool:
        if bound(mine, other) < threshold:
            continue
        score = fmeasure(mine, other)
        if score >= threshold:
            return score, text, rid
    return None


def _path(value: str):
    from pathlib import Path

    return Path(value)
