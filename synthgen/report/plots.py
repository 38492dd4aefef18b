"""The report's plots: matplotlib figures rendered to inline SVG, so the HTML file holds
everything it shows (no CDN, no script, opens offline in any browser).

matplotlib is the `report` extra; its object API (`Figure`, no pyplot) draws without a GUI
backend or global state. Text stays text in the SVG (`svg.fonttype: none`), which keeps a
plot a few kilobytes, and each figure gets its own id salt, so the ids of many SVGs inline
in one page never collide.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from typing import Any

from .data import EvalData, RunData, Stage

WIDE = (7.2, 2.6)
_salt = itertools.count()


def _figure(size: tuple[float, float] = WIDE, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(1, cols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def svg(fig: Any) -> str:
    """The figure as an <svg> element (no XML prolog or DOCTYPE: it goes inline)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"synthgen-{next(_salt)}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                 "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _seconds_axis(ax: Any, run: RunData) -> None:
    ax.set_xlabel(f"seconds since the run started (buckets of {run.bucket_s} s)")


def throughput(run: RunData) -> str:
    """Answers/s and tokens/s per bucket, drawn as the steps they are (a line between
    buckets would invent the rate between them), from 0 up."""
    fig, (ax,) = _figure()
    edges = [p["t"] for p in run.series] + [run.series[-1]["t"] + run.series[-1]["width"]]
    ax.stairs([p["answers_s"] for p in run.series], edges, color="C0", label="answers/s")
    ax.set_ylabel("answers/s", color="C0")
    ax.set_ylim(bottom=0, top=_top(p["answers_s"] for p in run.series))
    right = ax.twinx()
    right.stairs([p["tokens_s"] for p in run.series], edges, color="C1", label="tokens/s")
    right.set_ylabel("completion tokens/s", color="C1")
    right.set_ylim(bottom=0, top=_top(p["tokens_s"] for p in run.series))
    _seconds_axis(ax, run)
    ax.set_title("throughput")
    return svg(fig)


def _top(values: Any) -> float:
    """A y-axis top a little above the highest value (1 where all are 0)."""
    return max([*values, 0.0]) * 1.1 or 1.0


def latency(run: RunData) -> str:
    fig, (ax,) = _figure()
    t = [p["t"] + p["width"] / 2 for p in run.series]
    for key, color in (("p50", "C0"), ("p90", "C1"), ("p99", "C3")):  # an empty bucket: a gap
        ax.plot(t, [math.nan if p[key] is None else p[key] for p in run.series], color=color, marker=".",
                label=key)
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize="small")
    _seconds_axis(ax, run)
    ax.set_title("latency percentiles per bucket (send to answer, retries included)")
    return svg(fig)


def failures(run: RunData) -> str:
    fig, (ax,) = _figure()
    width = run.bucket_s * 0.9
    bottom: dict[float, int] = {}
    for i, (kind, points) in enumerate(sorted(run.failures.items())):
        xs = [t for t, _ in points]
        ax.bar(xs, [n for _, n in points], width=width, bottom=[bottom.get(x, 0) for x in xs],
               align="edge", color=f"C{(i + 3) % 10}", label=f"failed: {kind}")
        for x, n in points:
            bottom[x] = bottom.get(x, 0) + n
    ax.plot([p["t"] + run.bucket_s / 2 for p in run.series], [p["retried"] for p in run.series],
            color="C0", marker=".", label="answered after a retry")
    ax.set_ylabel("requests per bucket")
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
    ax.legend(loc="upper left", fontsize="small")
    _seconds_axis(ax, run)
    ax.set_title("errors by kind over time")
    return svg(fig)


def finish_reasons(run: RunData) -> str:
    fig, (ax,) = _figure((7.2, 0.6 + 0.35 * max(1, len(run.finish_reasons))))
    names = list(run.finish_reasons)[::-1]
    ax.barh(names, [run.finish_reasons[n] for n in names], color="C2")
    ax.set_xlabel("answers")
    ax.set_title("finish reasons")
    return svg(fig)


def lengths(run: RunData) -> str:
    fig, axes = _figure((7.2, 2.6), cols=2)
    for ax, hist, what, color in ((axes[0], run.prompt_hist, "prompt", "C0"),
                                  (axes[1], run.answer_hist, "answer", "C1")):
        ax.bar([lo for lo, _, _ in hist], [n for _, _, n in hist],
               width=[hi - lo for lo, hi, _ in hist], align="edge", color=color)
        ax.set_xlabel(f"{what} length ({run.length_unit})")
        ax.set_ylabel("answers")
        ax.set_title(f"{what} lengths")
    return svg(fig)


def cost(run: RunData) -> str:
    fig, (ax,) = _figure()
    total, xs, ys = 0.0, [], []
    for p in run.series:
        total += run.prices.cost(p["prompt_tokens"], p["completion_tokens"]) or 0.0
        xs.append(p["t"] + run.bucket_s)
        ys.append(total)
    ax.plot(xs, ys, color="C4", marker=".")
    ax.set_ylabel("estimated cost ($)")
    _seconds_axis(ax, run)
    ax.set_title(f"cost so far (at {run.prices.describe()})")
    return svg(fig)


def runs_overview(runs: Sequence[RunData]) -> str:
    fig, (ax,) = _figure()
    ids = [str(r.run_id) for r in runs]
    ax.bar(ids, [r.answered for r in runs], color="C0", label="answered")
    ax.bar(ids, [r.failed for r in runs], bottom=[r.answered for r in runs], color="C3", label="failed")
    ax.set_xlabel("run")
    ax.set_ylabel("requests")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title("requests settled per run")
    return svg(fig)


def funnel(stages: Sequence[Stage]) -> str:
    fig, (ax,) = _figure((7.2, 0.8 + 0.6 * len(stages)))
    names = [_label(s) for s in stages][::-1]
    rows = stages[::-1]
    h = 0.25
    ys = range(len(rows))
    ax.barh([y + h for y in ys], [s.planned for s in rows], height=h, color="C7", label="planned")
    ax.barh(list(ys), [s.answered for s in rows], height=h, color="C0", label="answered")
    ax.barh([y - h for y in ys], [s.answered if s.kept is None else s.kept for s in rows], height=h,
            color="C2", label="kept (an input's plan: = answered, no keep filter)"
            if any(s.recipe is None for s in rows) else "kept")
    ax.set_yticks(list(ys), [n if len(n) <= 40 else n[:39] + "…" for n in names])
    ax.set_xlabel("requests")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("per stage: planned → answered → kept")
    return svg(fig)


def _label(stage: Stage) -> str:
    return f"{stage.recipe} · {stage.name}" if stage.recipe else stage.name


def scores(stage: Stage) -> str:
    """A judge stage's verdicts by score: how the rows it rated were rated."""
    fig, (ax,) = _figure()
    ax.bar([v for v, _ in stage.scores], [n for _, n in stage.scores], width=0.8, color="C4")
    ax.set_xlabel("score")
    ax.set_ylabel("rows rated")
    ax.set_title(f"{_label(stage)}: rows rated, by score")
    return svg(fig)


def eval_metrics(evals: Sequence[EvalData]) -> str:
    """A panel per metric; a line per label (trained, untrained, teacher...) across the
    evaluations in time order."""
    ids = list(dict.fromkeys(e.eval_id for e in evals))
    numeric = [k for k in ("loss", "perplexity", "token_accuracy", "top1_agreement", "rouge_l")
               if any(isinstance(e.metrics.get(k), int | float) for e in evals)]
    fig, axes = _figure((max(7.2, 2.6 * len(numeric)), 2.6), cols=max(1, len(numeric)))
    for ax, key in zip(axes, numeric, strict=False):
        for i, label in enumerate(dict.fromkeys(e.label for e in evals)):
            points = [(ids.index(e.eval_id) + 1, e.metrics[key]) for e in evals
                      if e.label == label and isinstance(e.metrics.get(key), int | float)]
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", color=f"C{i}",
                        label=label)
        ax.set_title(key.replace("_", " "), fontsize="small")
        ax.set_xlabel("evaluation", fontsize="small")
        ax.set_xticks(range(1, len(ids) + 1))
    if numeric:
        axes[0].legend(fontsize="x-small")
    return svg(fig)


def training(histories: dict[str, list[dict[str, float]]]) -> str:
    fig, (ax,) = _figure()
    for i, (model_dir, history) in enumerate(histories.items()):
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], color=f"C{i}",
                label=model_dir if len(model_dir) <= 40 else "…" + model_dir[-39:])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize="small")
    ax.set_title("student training curves")
    return svg(fig)
