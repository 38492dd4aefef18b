"""Duplicates and benchmark leaks, each removal recorded with the row it collided with.

    exact            the same text once normalized (case, whitespace, punctuation folded),
                     by hash: the first row stays
    near-duplicate   MinHash-LSH (datasketch) over word shingles finds candidates (at a
                     Jaccard 0.1 below the threshold, for recall); each is re-checked by its
                     exact Jaccard against the threshold (0.9), so a removal is never an
                     LSH false positive; the first row stays
    contaminated     shares an n-gram (13 words, as GPT-3's decontamination) with a text of
                     a benchmark file the user gives; a benchmark text shorter than n words
                     counts as one n-gram of its own length (if at least 8 words: shorter
                     ones would flag common phrases)

Needs the `[recipes]` extra (datasketch) for near duplicates.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...errors import ConfigError
from ...hints import pip_install
from ...inputs import read_rows
from . import Outcome, Removal, column

PATHS = ("benchmarks",)
WORD = re.compile(r"[^\W_]+", re.UNICODE)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = "response"
    exact: bool = True
    near: bool = True
    threshold: float = Field(0.9, gt=0, le=1)
    # LSH finds candidates at a lower Jaccard than the threshold (recall: at 0.9 itself it
    # missed ~1 in 5 pairs at Jaccard 0.95 in the tests), the exact re-check keeps precision
    candidates: float | None = Field(None, gt=0, le=1)
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(3, ge=1, le=20)  # words per shingle
    seed: int = 1
    benchmarks: list[str] = []  # JSONL/CSV/Parquet files whose texts must not leak in
    benchmark_fields: list[str] = ["prompt", "question", "problem", "input", "instruction", "text"]
    ngram: int = Field(13, ge=1, le=100)
    min_ngram: int = Field(8, ge=1, le=100)  # shorter benchmark texts are too common to flag


def words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def normalized_hash(text: str) -> str:
    return hashlib.blake2b(" ".join(words(text)).encode(), digest_size=16).hexdigest()


def shingles(text: str, k: int) -> set[str]:
    w = words(text)
    if len(w) <= k:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i:i + k]) for i in range(len(w) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def run(rows: list[dict[str, Any]], p: dict[str, Any]) -> Outcome:
    column(rows, p["field"], "dedup")
    out = Outcome()
    texts = {r["request_id"]: r[p["field"]] or "" for r in rows}
    order = [r["request_id"] for r in rows]
    gone: set[str] = set()
    if p["exact"]:
        first: dict[str, str] = {}
        for rid in order:
            h = normalized_hash(texts[rid])
            if h in first:
                out.removed.append(Removal(rid, "exact", "same text once normalized", first[h]))
                gone.add(rid)
            else:
                first[h] = rid
    if p["near"]:
        found = near_duplicates([(rid, texts[rid]) for rid in order if rid not in gone], p)
        for rid, other, score in found:
            out.removed.append(Removal(rid, "near-duplicate", f"Jaccard {score:.2f}", other))
            gone.add(rid)
        out.figures["near_duplicates"] = len(found)
    if p["benchmarks"]:
        grams = benchmark_grams(p)
        for rid in order:
            if rid in gone:
                continue
            hit = contaminated(texts[rid], grams, p["ngram"])
            if hit is not None:
                out.removed.append(Removal(rid, "contaminated", hit))
                gone.add(rid)
        out.figures["benchmark_ngrams"] = len(grams)
    return out


def near_duplicates(items: list[tuple[str, str]], p: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(row, the earlier row it nearly copies, Jaccard) for each near duplicate, in order:
    LSH candidates among the rows kept so far, confirmed by exact Jaccard."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        raise ConfigError(f"near duplicates need datasketch: {pip_install('recipes')}") from None
    candidates = p["candidates"] or max(0.05, p["threshold"] - 0.1)
    lsh = MinHashLSH(threshold=candidates, num_perm=p["num_perm"])
    sets: dict[str, set[str]] = {}
    found = []
    for rid, text in items:
        s = shingles(text, p["shingle"])
        m = MinHash(num_perm=p["num_perm"], seed=p["seed"])
        for g in s:
            m.update(g.encode())
        best = None
        for other in lsh.query(m):
            score = jaccard(s, sets[other])
            if score >= p["threshold"] and (best is None or score > best[1]):
                best = (other, score)
        if best is not None:
            found.append((rid, best[0], best[1]))
            continue
        lsh.insert(rid, m)
        sets[rid] = s
    return found


def benchmark_grams(p: dict[str, Any]) -> dict[tuple[str, ...], str]:
    """Every n-gram of every benchmark text -> where it comes from (file:line)."""
    from pathlib import Path

    grams: dict[tuple[str, ...], str] = {}
    n = p["ngram"]
    for path in p["benchmarks"]:
        for line, fields in read_rows(Path(path), None):
            if not isinstance(fields, dict):
                continue
            for name in p["benchmark_fields"]:
                value = fields.get(name)
                if isinstance(value, str):
                    w = words(value)
                    if len(w) < p["min_ngram"]:
                        continue
                    for g in ([tuple(w)] if len(w) < n else
                              (tuple(w[i:i + n]) for i in range(len(w) - n + 1))):
                        if g:
                            grams.setdefault(g, f"{Path(path).name}:{line}")
    return grams


def contaminated(text: str, grams: dict[tuple[str, ...], str], n: int) -> str | None:
    w = words(text)
    lengths = {len(g) for g in grams}
    for size in sorted(lengths, reverse=True):
        for i in range(len(w) - size + 1):
            where = grams.get(tuple(w[i:i + size]))
            if where is not None:
                return f"{size}-gram shared with {where}: {' '.join(w[i:i + min(size, 8)])}..."
    return None
