"""How close the student is to its teacher: the teacher measured on the same held-out
answers, and the ratios `synthgen eval` reports.

    loss_stored          the teacher's NLL of its own sampled tokens, from the logprobs the
                         corpus stored (no model needed: works for any API teacher)
    loss_teacher_forced  the same answers scored by the local teacher model, exactly as the
                         student is scored (same rendering, same tokens)
    nll_ratio            student loss / teacher loss (teacher-forced when the model is local)
    param_ratio          student parameters / teacher parameters
    speed_ratio          how many times faster the student decodes: the median over prompts of
                         teacher / student seconds, greedy, same prompts, same machine

Decode speed is timed on a fixed number of new tokens per prompt (end-of-turn is ignored
until then), student and teacher taking turns prompt by prompt, so both see the same
prompts and the same load on a shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .rows import Row


def stored_nll(rows: Sequence[Row]) -> tuple[float | None, int]:
    """Mean -logprob of the teacher's sampled tokens over `rows` that hold logprobs.

    Every stored entry is one generated token, the final end-of-turn included (llama.cpp
    and vLLM report it), which is the set of tokens the student's loss is taken on.
    """
    total, count = 0.0, 0
    for row in rows:
        for entry in row.logprobs or []:
            if entry.get("logprob") is None:
                continue
            total -= float(entry["logprob"])
            count += 1
    return (total / count if count else None), count


def _prompt_ids(tok: Any, row: Row) -> Any:
    return tok.apply_chat_template(
        row.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )


def decode_speeds(
    models: dict[str, tuple[Any, Any]], rows: Sequence[Row], new_tokens: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Greedy decode tokens/s of each (model, tokenizer), taking turns on the same prompts,
    and each model's seconds per prompt (for paired ratios).

    Each model first decodes one prompt untimed (allocations, kernel choice), then every
    prompt in turn: the time covers the prompt's prefill and `new_tokens` decode steps.
    """
    import torch

    seconds = dict.fromkeys(models, 0.0)
    tokens = dict.fromkeys(models, 0)
    per_prompt: dict[str, list[float]] = {name: [] for name in models}
    for i, row in enumerate([rows[0], *rows]):
        for name, (model, tok) in models.items():
            enc = _prompt_ids(tok, row)
            started = time.perf_counter()
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id or tok.eos_token_id,
                )
            elapsed = time.perf_counter() - started
            if i > 0:  # the first round is the warm-up
                seconds[name] += elapsed
                tokens[name] += int(out.shape[1] - enc["input_ids"].shape[1])
                per_prompt[name].append(elapsed)
    speeds = {name: tokens[name] / seconds[name] for name in models if seconds[name] > 0}
    return speeds, per_prompt


def paired_speed_ratio(student_s: Sequence[float], teacher_s: Sequence[float]) -> float | None:
    """Median over prompts of teacher seconds / student seconds (the same tokens each).

    On a shared machine the load changes from one prompt to the next; each pair was timed
    back to back, so the median of the pairs' ratios is steadier than a ratio of totals.
    """
    pairs = sorted(t / s for s, t in zip(student_s, teacher_s, strict=True) if s > 0)
    if not pairs:
        return None
    mid = len(pairs) // 2
    return pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2


def ratios(student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, float | None]:
    """The student/teacher ratios for one student's metrics."""

    def ratio(a: Any, b: Any) -> float | None:
        return a / b if a is not None and b else None

    return {
        "nll_ratio": ratio(student.get("loss"), teacher.get("loss")),
        "param_ratio": ratio(student.get("parameters"), teacher.get("parameters")),
        "speed_ratio": student.get("speed_ratio")
        or ratio(student.get("tokens_per_s"), teacher.get("tokens_per_s")),
    }


def summary_line(name: str, student: dict[str, Any], teacher: dict[str, Any]) -> str:
    """One line for the CLI: how close `name` is to the teacher."""
    r = ratios(student, teacher)
    parts = [f"{name} vs teacher:"]
    if r["nll_ratio"] is not None:
        parts.append(f"held-out NLL {student['loss']:.3f} vs {teacher['loss']:.3f} ({r['nll_ratio']:.2f}x)")
    if r["param_ratio"] is not None:
        parts.append(f"parameters {r['param_ratio']:.2f}x")
    if r["speed_ratio"] is not None:
        parts.append(
            f"decode {student['tokens_per_s']:.1f} vs {teacher['tokens_per_s']:.1f} tok/s "
            f"({r['speed_ratio']:.2f}x)"
        )
    return " ".join(parts[:1]) + " " + ", ".join(parts[1:])
