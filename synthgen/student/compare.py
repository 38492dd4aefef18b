"""SFT-only against SFT+KD on the same data, same steps, same seed: the README's demo; and
the tables `synthgen eval` prints (with the teacher's row and the student/teacher ratios)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .log import quiet

COLUMNS = (
    ("loss", "loss", "{:.3f}"),
    ("perplexity", "ppl", "{:.1f}"),
    ("token_accuracy", "tok_acc", "{:.3f}"),
    ("top1_agreement", "top1_agree", "{:.3f}"),
    ("rouge_l", "rouge_l", "{:.3f}"),
)


def table(results: dict[str, dict[str, Any]]) -> str:
    """A fixed-width table, one line per model."""
    width = max(len(name) for name in results) + 2
    lines = [" " * width + "".join(f"{title:>12}" for _, title, _ in COLUMNS)]
    for name, m in results.items():
        cells = [fmt.format(m[key]) if m.get(key) is not None else "-" for key, _, fmt in COLUMNS]
        lines.append(f"{name:<{width}}" + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def report(result: dict[str, Any], name: str = "trained") -> str:
    """`synthgen eval`'s table (untrained, trained, teacher) and how close the student is."""
    from .closeness import summary_line

    rows = {"untrained": result["untrained"], name: result["trained"]}
    teacher = result.get("teacher")
    if teacher and teacher.get("loss") is not None:
        rows["teacher"] = teacher
    text = table(rows)
    if teacher and teacher.get("loss") is not None:
        text += "\n\n" + summary_line(name, result["trained"], teacher)
        if teacher.get("loss_source") != "teacher-forced":
            text += " (teacher loss from its stored logprobs)"
    return text


def _drop(before: float, after: float) -> float:
    return (before - after) / before if before else 0.0


@quiet()
def compare_kd(cfg: Any, echo: Callable[[str], None] | None = None, speed_tokens: int = 32) -> str:
    """Train OUT/sft and OUT/kd, evaluate both on the same held-out rows, return the report."""
    from .evaluate import evaluate
    from .log import echo_or_log
    from .train import train

    echo = echo_or_log(echo)

    out = Path(cfg.out)
    runs = {}
    for name, kd in (("sft", False), ("kd", True)):
        echo(f"== {name}: {'SFT + KD' if kd else 'SFT only'}")
        runs[name] = train(dataclasses.replace(cfg, out=str(out / name), kd=kd), echo)
    echo("== eval")
    sft = evaluate(cfg.db, str(out / "sft"), label="sft", echo=echo, speed_tokens=speed_tokens)
    kd = evaluate(
        cfg.db, str(out / "kd"), label="sft+kd", echo=echo, untrained=sft["untrained"],
        speed_tokens=speed_tokens,
    )
    base = sft["untrained"]["loss"]
    label_kd = "SFT+KD" if runs["kd"]["kd_used"] else "SFT+KD (refused: ran as SFT)"
    results = {"untrained": sft["untrained"], "SFT": sft["trained"], label_kd: kd["trained"]}
    teacher = kd.get("teacher")
    if teacher and teacher.get("loss") is not None:
        results["teacher"] = teacher
    s_loss, k_loss = sft["trained"]["loss"], kd["trained"]["loss"]
    verdict = (
        f"held-out loss vs untrained: SFT {-_drop(base, s_loss):+.0%}, "
        f"SFT+KD {-_drop(base, k_loss):+.0%} "
        f"({'clears' if min(s_loss, k_loss) <= base * 2 / 3 else 'misses'} the one-third bar)\n"
        f"SFT+KD vs SFT on the same data and steps: held-out loss "
        f"{k_loss - s_loss:+.3f} ({'KD better' if k_loss < s_loss else 'SFT better'})"
    )
    agree_s, agree_k = sft["trained"]["top1_agreement"], kd["trained"]["top1_agreement"]
    if agree_s is not None and agree_k is not None:
        verdict += f", top-1 agreement with the teacher {agree_k - agree_s:+.3f}"
    if teacher and teacher.get("loss") is not None:
        from .closeness import summary_line

        verdict += "\n" + summary_line("SFT", sft["trained"], sft["teacher"])
        verdict += "\n" + summary_line(label_kd, kd["trained"], teacher)
    seconds = runs["sft"]["seconds"] + runs["kd"]["seconds"]
    return f"{table(results)}\n\n{verdict}\ntraining time {seconds:.0f}s (both runs)"
