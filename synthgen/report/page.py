"""The report as one HTML file: inline CSS and inline SVG plots, no script, no link out.

Everything from the store (model names, sources, labels, messages) is escaped: the file
may be opened by anyone, and a prompt or an answer is data, never markup.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from ..pricing import unpriced
from . import plots
from .data import ReportData, RunData

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; }
td, th { padding: .2em .7em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.plot svg { max-width: 100%; height: auto; } .note { color: #666; font-size: .92em; }
nav a { margin-right: .8em; }
"""


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{value:,.0f}" if isinstance(value, int | float) else escape(str(value))


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else "-"


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _plot(svg: str) -> str:
    return f'<div class="plot">{svg}</div>'


def render(data: ReportData) -> str:
    made = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    body = [f"<h1>synthgen report: {escape(data.db)}</h1>",
            f'<p class="note">Made {made} from the store itself'
            + (f"; run {data.live_run} was running, so this shows what it had committed then"
               if data.live_run else "") + ".</p>"]
    nav = ['<a href="#runs">runs</a>', '<a href="#stages">stages</a>', '<a href="#student">student</a>']
    body.append("<nav>" + "".join(nav) + "</nav>")
    body.append('<h2 id="runs">Runs</h2>')
    if not data.runs:
        body.append("<p>No runs yet.</p>")
    else:
        body.append(_runs_table(data.runs))
        if len(data.runs) > 1:
            body.append(_plot(plots.runs_overview(data.runs)))
        for run in data.runs:
            body.append(_run_section(run))
    body.append(_stages(data))
    body.append(_student(data))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>synthgen report: {escape(data.db)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def _runs_table(runs: list[RunData]) -> str:
    rows = []
    for r in runs:
        rows.append([f'<a href="#run-{r.run_id}">{r.run_id}</a>', escape(r.status or "-"),
                     escape(r.stage or "-"), escape(r.model or "-"),
                     _when(r.started_at), _n(r.duration_s, 1), _n(r.answered), _n(r.failed),
                     _n(r.prompt_tokens), _n(r.completion_tokens),
                     "-" if r.cost is None else f"${r.cost:,.4f}"])
    table = _table(["run", "status", "stage", "model", "started", "seconds", "answered", "failed",
                    "tokens in", "tokens out", "cost"], rows, numeric={5, 6, 7, 8, 9, 10})
    # Every cost says its prices (hand-given, or the dated price table's)
    sources = sorted({r.prices.describe() for r in runs if r.cost is not None})
    return table + "".join(f'<p class="note">cost at {escape(s)}</p>' for s in sources)


def _run_section(run: RunData) -> str:
    out = [f'<h3 id="run-{run.run_id}">Run {run.run_id}: {escape(run.status or "-")}, '
           f"model {escape(run.model or '-')}"
           + (f", stage {escape(run.stage)}" if run.stage else "") + "</h3>"]
    if not run.series and not run.failures:
        out.append('<p class="note">This run stored no answer and no failure.</p>')
        return "".join(out)
    lat = run.latency
    out.append(f'<p class="note">latency over the run: p50 {_n(lat.get("p50"), 1)} ms, '
               f'p90 {_n(lat.get("p90"), 1)} ms, p99 {_n(lat.get("p99"), 1)} ms</p>')
    if run.series:
        out += [_plot(plots.throughput(run)), _plot(plots.latency(run))]
    out.append(_plot(plots.failures(run)))
    if run.finish_reasons:
        out.append(_plot(plots.finish_reasons(run)))
    if run.prompt_hist or run.answer_hist:
        out.append(_plot(plots.lengths(run)))
    if run.cost is not None and run.series:
        out.append(_plot(plots.cost(run)))
    elif run.cost is None:
        out.append(f'<p class="note">No cost: {escape(unpriced(run.model))}.</p>')
    return "".join(out)


def _stages(data: ReportData) -> str:
    out = ['<h2 id="stages">Stages: planned → answered → kept</h2>',
           f'<p class="note">Stages come from {escape(data.stage_source)}; the numbers are '
           "<code>synthgen status</code>'s.</p>"]
    if not data.stages:
        return "".join(out) + "<p>No plans yet.</p>"
    rows = [[escape(s.recipe or "-"), escape(s.name) + (" (judge)" if s.judge else ""), _n(s.planned),
             _n(s.answered), _n(s.failed),
             "= answered (no keep filter)" if s.recipe is None else
             ("not settled yet" if s.kept is None else _n(s.kept)),
             escape(", ".join(f"{rule} {n:,}" for rule, n in s.removed.items()) or "-")]
            for s in data.stages]
    out.append(_table(["recipe", "stage", "planned", "answered", "failed", "kept", "removed by"], rows,
                      numeric={2, 3, 4, 5}))
    out.append(_plot(plots.funnel(data.stages)))
    for s in data.stages:
        if s.scores:
            rated = sum(n for _, n in s.scores)
            mean = sum(v * n for v, n in s.scores) / rated
            out.append(f'<p class="note">Judge stage {escape(s.name)} rated {rated:,} rows '
                       f"(mean score {mean:.2f}); its verdicts are not counted as answers of the "
                       "corpus: export writes the rows it rated, with their score.</p>")
            out.append(_plot(plots.scores(s)))
    return "".join(out)


def _student(data: ReportData) -> str:
    out = ['<h2 id="student">Student</h2>']
    if not data.evals and not data.training:
        return "".join(out) + ('<p class="note">No evaluations in this store yet '
                               "(<code>synthgen eval</code> writes them to <code>evals</code>).</p>")
    if data.training:
        out.append(_plot(plots.training(data.training)))
    if data.evals:
        keys = ["loss", "perplexity", "token_accuracy", "top1_agreement", "rouge_l"]
        rows = [[escape(e.eval_id), _when(e.created_at), escape(e.label), escape(e.model_dir), _n(e.rows),
                 *[_n(e.metrics.get(k), 4) if isinstance(e.metrics.get(k), float) else _n(e.metrics.get(k))
                   for k in keys]] for e in data.evals]
        out.append(_table(["eval", "when", "label", "model", "rows", *keys], rows,
                          numeric={4, 5, 6, 7, 8, 9}))
        out.append(_plot(plots.eval_metrics(data.evals)))
    return "".join(out)
