"""Checks that fail loudly before training, instead of a student that silently learns
nothing, never learns to stop, or sees a doubled BOS.

    no row fully masked     every conversation has trained (assistant) tokens
    end of turn trained     each assistant turn ends with a trained stop token (except
                            an answer the teacher did not finish: cut by max_tokens)
    exactly one BOS         a BOS token starts the sequence once (when the model uses one)
    reasoning kept          with --with-reasoning, the teacher's reasoning is in the rendered
                            text and every token of it is trained
    length                  rows over --max-length are counted and truncated or dropped
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .deps import StudentError
from .render import IGNORE, Rendered, truncate


class GuardError(StudentError):
    """The rendered data would train the student wrongly; the message says how."""


@dataclass
class GuardReport:
    """What the guards saw; `kept` are the indices of rows that go to training."""

    rows: int
    kept: list[int] = field(default_factory=list)
    over_length: int = 0
    dropped: int = 0
    truncated: int = 0
    trained_tokens: int = 0
    total_tokens: int = 0

    def summary(self) -> str:
        return (
            f"{self.rows} rows, {len(self.kept)} kept; {self.over_length} over --max-length "
            f"({self.truncated} truncated, {self.dropped} dropped); "
            f"{self.trained_tokens} of {self.total_tokens} tokens trained"
        )


def stop_ids(tokenizer: Any, extra: list[int] | None = None) -> set[int]:
    """Token ids that end a turn: the tokenizer's EOS and the model's generation EOS."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    return ids | set(extra or [])


def _bos_is_structural(tokenizer: Any) -> bool:
    """ChatML-style templates use the BOS token as the start of every turn."""
    bos = tokenizer.bos_token
    return bool(bos) and bos in (tokenizer.chat_template or "")


def check_bos(tokenizer: Any, rendered: Rendered, label: str) -> None:
    bos = tokenizer.bos_token_id
    if bos is None:
        return
    ids = rendered.input_ids
    leading = 0
    while leading < len(ids) and ids[leading] == bos:
        leading += 1
    if _bos_is_structural(tokenizer):
        bad = leading > 1
        count = leading
    else:
        count = ids.count(bos)
        uses_bos = count > 0
        bad = uses_bos and (count != 1 or leading != 1)
    if bad:
        raise GuardError(
            f"{label}: {count} BOS tokens ({tokenizer.bos_token!r}) at the start, expected "
            "exactly one; the chat template and the tokenizer both add it"
        )


def check_reasoning(rendered: Rendered, label: str) -> None:
    """A row rendered with its reasoning trains on all of it: a template that dropped it,
    or a rendering that put it outside the trained turn, would train an answer without
    the reasoning the run asked for."""
    at = rendered.reasoning_at
    if at is None:
        return
    if at == (-1, -1):
        raise GuardError(f"{label}: the chat template dropped the teacher's reasoning from the "
                         "rendered conversation; --with-reasoning cannot train on it")
    inside = [t for t, (s, e) in enumerate(rendered.offsets) if e > s and s >= at[0] and e <= at[1]]
    untrained = [t for t in inside if rendered.labels[t] == IGNORE]
    if not inside or untrained:
        raise GuardError(f"{label}: {len(untrained) if inside else 'all'} tokens of the teacher's reasoning "
                         "are not trained: the template renders it outside the assistant's turn")


def check_rows(
    tokenizer: Any,
    rendered: list[Rendered],
    labels: list[str],
    max_length: int,
    overflow: str = "truncate",
    extra_stop_ids: list[int] | None = None,
) -> tuple[list[Rendered], GuardReport]:
    """Run every guard; return the rows to train on (truncated or dropped) and a report."""
    if overflow not in ("truncate", "drop"):
        raise GuardError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
    stops = stop_ids(tokenizer, extra_stop_ids)
    report = GuardReport(rows=len(rendered))
    empty = [lab for r, lab in zip(rendered, labels, strict=True) if r.trained == 0]
    if empty:
        raise GuardError(
            f"{len(empty)} of {len(rendered)} rows have no trained token (first: {empty[0]}); "
            "the chat template does not render the assistant's answer where it can be found"
        )
    for r, lab in zip(rendered, labels, strict=True):
        for n, (_, end) in enumerate(r.turns):
            if not r.finished and n == len(r.turns) - 1:
                continue  # cut by max_tokens: the teacher did not stop there either
            last = r.labels[end - 1]
            if last not in stops:
                shown = tokenizer.decode([last]) if last != IGNORE else "nothing"
                raise GuardError(
                    f"{lab}: the assistant turn ends with {shown!r}, not an end-of-turn token "
                    f"({', '.join(repr(tokenizer.decode([s])) for s in sorted(stops))}); "
                    "the student would never learn to stop. Fix the chat template or the "
                    "tokenizer's eos_token"
                )
        check_bos(tokenizer, r, lab)
        check_reasoning(r, lab)

    out: list[Rendered] = []
    for i, r in enumerate(rendered):
        if len(r.input_ids) > max_length:
            report.over_length += 1
            if overflow == "drop":
                report.dropped += 1
                continue
            r = truncate(r, max_length)
            if r.trained == 0:
                report.dropped += 1
                continue
            report.truncated += 1
        out.append(r)
        report.kept.append(i)
        report.trained_tokens += r.trained
        report.total_tokens += len(r.input_ids)
    if not out:
        raise GuardError(
            f"all {len(rendered)} rows are longer than --max-length {max_length} and were "
            "dropped; raise --max-length"
        )
    return out, report
