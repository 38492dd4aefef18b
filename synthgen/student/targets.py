"""The teacher's stored logprobs, as per-position targets for the student.

Each stored entry is one token the teacher generated, with its top-K alternatives. When
the student shares the teacher's tokenizer, the student's tokens of the answer are the
teacher's tokens, so entry j is the target for the position that predicts answer token
j. Ids come from the server where it reports them; otherwise the token text is mapped
through the student's vocabulary. Rows whose tokens do not line up are trained with
cross-entropy only, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .render import Rendered
from .rows import Row

# A processed distribution at a temperature this low is the greedy one-hot (vLLM samples
# greedily below 1e-5): it says nothing about the alternatives, so it is no KD target.
MIN_PROCESSED_TEMPERATURE = 1e-5
# Enough agreement that the student really shares the teacher's tokenizer.
MIN_TOKEN_AGREEMENT = 0.95
MIN_ALIGNED_ROWS = 0.5


@dataclass
class Targets:
    """Teacher top-K at label positions: `positions[i]` is predicted with `ids[i]`."""

    positions: list[int]
    ids: list[list[int]]
    logprobs: list[list[float]]
    # The temperature these logprobs are at: 1 for raw ones (or unknown, read as raw), the
    # request's for processed ones; KD tempers them from there (kd.sparse_kd_loss).
    temperature: float = 1.0


def stored_temperature(row: Row) -> float | None:
    """The temperature of a row's stored distribution; None when it cannot be a target."""
    if row.logprobs_mode != "processed":
        return 1.0
    t = row.logprobs_temperature if row.logprobs_temperature is not None else 1.0
    return t if t >= MIN_PROCESSED_TEMPERATURE else None


class Vocab:
    """Maps the teacher's token text to the student's ids when the server gave no id."""

    def __init__(self, tokenizer: Any):
        self.size = len(tokenizer)
        self.tokenizer = tokenizer
        self._text: dict[str, int] | None = None

    def text_to_id(self) -> dict[str, int]:
        if self._text is None:
            pieces = self.tokenizer.batch_decode([[i] for i in range(self.size)])
            table: dict[str, int] = {}
            for i, piece in enumerate(pieces):
                table.setdefault(piece, i)
            self._text = table
        return self._text

    def id_of(self, entry: dict[str, Any]) -> int | None:
        tid = entry.get("id")
        if tid is not None and 0 <= tid < self.size:
            return int(tid)
        if tid is not None:
            return None
        return self.text_to_id().get(entry.get("token") or "")


def targets_for(row: Row, rendered: Rendered, vocab: Vocab, k: int | None = None) -> Targets | None:
    """Line the row's teacher tokens up with the student's tokens of the answer.

    Both tokenizations cover the same answer text; a student token gets the teacher's
    top-K where a teacher token spans exactly the same characters with the same id.
    Where the teacher sampled a non-canonical split ("H" + "oney" for "Honey"), those
    few positions get no target and train on cross-entropy alone. None if nothing lines up.
    """
    if not row.logprobs or not rendered.turns or rendered.answer_start < 0:
        return None
    temperature = stored_temperature(row)
    if temperature is None:
        return None
    # By character span; a special token the server reports with empty text (llama.cpp's
    # final end-of-turn entry) has an empty span and is matched by id where it starts.
    teacher: dict[tuple[int, int], int] = {}
    at = 0
    for j, entry in enumerate(row.logprobs):
        piece = entry.get("token") or ""
        key = (at, at + len(piece)) if piece else (at, -1)
        teacher.setdefault(key, j)
        at += len(piece)
    first, end = rendered.turns[-1]
    base = rendered.answer_start
    positions, ids, lps = [], [], []
    for pos in range(first, min(end, len(rendered.offsets))):
        s, e = rendered.offsets[pos]
        if e <= s:
            continue
        j = teacher.get((s - base, e - base))
        special = teacher.get((s - base, -1))
        if j is None and special is not None and row.logprobs[special].get("id") is not None:
            j = special
        if j is None:
            continue
        entry = row.logprobs[j]
        chosen = vocab.id_of(entry)
        if chosen is not None and chosen != rendered.input_ids[pos]:
            continue
        alts = sorted(entry.get("top_logprobs") or [], key=lambda a: -a["logprob"])
        seen: set[int] = set()
        pid, plp = [], []
        for alt in alts:
            tid = vocab.id_of(alt)
            if tid is None or tid in seen:
                continue  # unknown to the student: its mass stays in the tail bucket
            seen.add(tid)
            pid.append(tid)
            plp.append(float(alt["logprob"]))
            if k is not None and len(pid) == k:
                break
        if pid:
            positions.append(pos)
            ids.append(pid)
            lps.append(plp)
    return Targets(positions, ids, lps, temperature) if positions else None


def check_compatible(
    rows: list[Row], rendered: list[Rendered], vocab: Vocab
) -> tuple[list[Targets | None], str | None]:
    """Targets per row, or a reason why KD must fall back to plain SFT."""
    with_lp = [i for i, r in enumerate(rows) if r.logprobs]
    if not with_lp:
        return [], "the selected rows hold no teacher logprobs (generate with --logprobs K)"
    with_lp = [i for i in with_lp if stored_temperature(rows[i]) is not None]
    if not with_lp:
        return [], ("the selected rows' logprobs were processed at temperature 0: a greedy "
                    "one-hot says nothing about the alternatives (generate with raw logprobs, "
                    "or a temperature above 0)")
    agree = total = 0
    for i in with_lp[:50]:
        for entry in rows[i].logprobs[:64]:
            tid, text = entry.get("id"), entry.get("token")
            if tid is None or not text:
                continue  # servers report special tokens (end of turn) with empty text
            total += 1
            if 0 <= tid < vocab.size and vocab.tokenizer.decode([tid]) == text:
                agree += 1
    if total and agree / total < MIN_TOKEN_AGREEMENT:
        return [], (
            f"the student's tokenizer is not the teacher's: only {agree} of {total} teacher "
            "token ids decode to the teacher's token text"
        )
    targets = [targets_for(r, rd, vocab) for r, rd in zip(rows, rendered, strict=True)]
    aligned = sum(t is not None for t in targets)
    if aligned < MIN_ALIGNED_ROWS * len(with_lp):
        return [], (
            f"the student's tokenizer is not the teacher's: only {aligned} of {len(with_lp)} "
            "answers tokenize into the teacher's tokens"
        )
    return targets, None
