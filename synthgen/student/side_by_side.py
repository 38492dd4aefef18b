"""`synthgen compare`: a teacher and a student, both served on this machine, measured on the
same held-out prompts, as one table (also stored in `evals`).

    file MB        the GGUF each server loaded (launcher record, else the server's /props)
    RSS MB         resident memory of each server process after the run (launcher's pid)
    prompt tok/s   prompt tokens / prompt time, as llama-server times itself
    gen tok/s      generated tokens / generation time, the same way
    TTFT ms        request sent -> first streamed answer token (median over prompts)
    NLL            held-out NLL of the teacher's stored answers, from each server's own
                   logprobs (served.py), and the student's as a multiple of the teacher's
    ROUGE-L        the student's greedy answers against the teacher's greedy answers

Timing is greedy, one request at a time, the prompt cache off, teacher and student taking
turns prompt by prompt (the order flips each prompt), after one untimed request each: both
see the same prompts and, on a shared machine, the same load. `repeat` runs that pass
several times; each speed is the median of the passes, with the lowest and highest beside
it, and the machine's load average before and after is part of the result.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .llamacpp import LlamaCppClient, StreamedAnswer
from .rouge import rouge_l
from .rows import Row
from .served import rows_for, served_nll

ROLES = ("teacher", "student")


def server_facts(client: LlamaCppClient, state_dir: Path | None) -> dict[str, Any]:
    """Name, model file and pid of a server: from the launcher's record when it started it."""
    from ..teacher.paths import state_dir as default_state_dir
    from ..teacher.state import find_by_url

    props = client.props()
    found = find_by_url(state_dir or default_state_dir(), client.base_url)
    path = (found[0].model_path if found else None) or props.get("model_path")
    facts: dict[str, Any] = {
        "url": client.shown,
        "model": client.model_id(),
        "ftype": props.get("model_ftype"),
        "model_path": path,
        "pid": found[1].pid if found and found[1].running() else None,
    }
    facts["file_bytes"] = Path(path).stat().st_size if path and Path(path).is_file() else None
    return facts


def _pass_speeds(answers: Sequence[StreamedAnswer]) -> dict[str, float | None]:
    """One pass's speeds: llama-server's own timings when it sent them, else the client's."""
    timed = [a.timings for a in answers if a.timings.get("predicted_ms")]
    if len(timed) == len(answers) and timed:
        prompt_ms = sum(t.get("prompt_ms", 0.0) for t in timed)
        gen_ms = sum(t["predicted_ms"] for t in timed)
        prompt = sum(t.get("prompt_n", 0) for t in timed) / prompt_ms * 1e3 if prompt_ms else None
        gen = sum(t.get("predicted_n", 0) for t in timed) / gen_ms * 1e3 if gen_ms else None
    else:
        firsts = [a.ttft_s or 0.0 for a in answers]
        prompt = sum(a.prompt_tokens or 0 for a in answers) / sum(firsts) if sum(firsts) else None
        rest = sum(a.total_s - (a.ttft_s or 0.0) for a in answers)
        gen = sum(max((a.completion_tokens or 0) - 1, 0) for a in answers) / rest if rest else None
    ttfts = [a.ttft_s for a in answers if a.ttft_s is not None]
    ttft = statistics.median(ttfts) * 1e3 if ttfts else None
    return {"prompt_tps": prompt, "gen_tps": gen, "ttft_ms": ttft}


def _spread(values: Sequence[float | None]) -> dict[str, float | None]:
    got = [v for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(got), "min": min(got), "max": max(got)}


def timing_passes(clients: dict[str, LlamaCppClient], rows: Sequence[Row], max_tokens: int, repeat: int,
                  echo: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Speeds (median, min, max over `repeat` passes) and the last pass's answers, per role."""
    for client in clients.values():  # untimed: page the weights in, warm the caches
        client.chat_stream(rows[0].messages, min(max_tokens, 8))
    passes: dict[str, list[dict[str, float | None]]] = {role: [] for role in clients}
    texts: dict[str, list[str]] = {}
    for rep in range(repeat):
        answers: dict[str, list[StreamedAnswer]] = {role: [] for role in clients}
        for i, row in enumerate(rows):
            for role in (ROLES if i % 2 == 0 else ROLES[::-1]):
                answers[role].append(clients[role].chat_stream(row.messages, max_tokens))
        for role, got in answers.items():
            passes[role].append(_pass_speeds(got))
        texts = {role: [a.text for a in got] for role, got in answers.items()}
        line = ", ".join(f"{role} {p[-1]['gen_tps'] or 0:.1f} tok/s" for role, p in passes.items())
        echo(f"compare: pass {rep + 1}/{repeat}: {len(rows)} prompts x {max_tokens} tokens; {line}")
    speeds = {
        role: {key: _spread([p[key] for p in got]) for key in ("prompt_tps", "gen_tps", "ttft_ms")}
        for role, got in passes.items()
    }
    for role in speeds:
        speeds[role]["passes"] = passes[role]
    return speeds, texts


def compare_served(
    db: str,
    teacher_url: str,
    student_url: str,
    split_dir: str | None = None,
    query: str | None = None,
    prompts: int = 8,
    max_tokens: int = 64,
    repeat: int = 1,
    nll_rows: int | None = None,
    state_dir: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure both servers; the result holds every column of the table, per role."""
    from ..teacher.usage import resident_bytes
    from .deps import StudentError
    from .evaluate import insert_evals

    say = echo or (lambda _msg: None)
    if prompts < 1 or max_tokens < 1 or repeat < 1:
        raise StudentError("--prompts, --max-tokens and --repeat must each be at least 1")
    rows, where = rows_for(db, split_dir, query)
    timed_rows = rows[:prompts]
    scored_rows = rows[:nll_rows] if nll_rows else rows
    load_before = os.getloadavg()
    clients = {"teacher": LlamaCppClient(teacher_url), "student": LlamaCppClient(student_url)}
    try:
        facts = {role: server_facts(c, state_dir) for role, c in clients.items()}
        say(f"compare: {len(timed_rows)} prompts timed, {len(scored_rows)} rows scored ({where}); "
            f"load average {load_before[0]:.2f}")
        speeds, texts = timing_passes(clients, timed_rows, max_tokens, repeat, say)
        nll = {}
        for role, client in clients.items():
            say(f"compare: held-out NLL of {facts[role]['model']} from its logprobs")
            nll[role] = served_nll(client, scored_rows, say)
    finally:
        for client in clients.values():
            client.close()
    load_after = os.getloadavg()
    result: dict[str, Any] = {"rows_from": where, "timed_prompts": len(timed_rows), "max_tokens": max_tokens,
                              "repeat": repeat, "load_average": [load_before[0], load_after[0]]}
    for role in ROLES:
        pid = facts[role]["pid"]
        result[role] = {
            **facts[role],
            **speeds[role],
            "rss_bytes": resident_bytes(pid) if pid else None,
            "nll": nll[role]["loss"],
            "nll_tokens": nll[role]["tokens"],
        }
    result["student"]["rouge_l"] = statistics.mean(rouge_l(s, t) for s, t in zip(
        texts["student"], texts["teacher"], strict=True))
    result["student"]["answers"] = texts["student"][:4]
    result["teacher"]["answers"] = texts["teacher"][:4]
    result["ratios"] = ratios(result["student"], result["teacher"])
    result["eval_id"] = insert_evals(
        db, f"{facts['teacher']['url']} vs {facts['student']['url']}", query or where, len(scored_rows),
        [("compare:teacher", result["teacher"]), ("compare:student", {**result["student"],
                                                                      "ratios": result["ratios"]})],
    )
    return result


def ratios(student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, float | None]:
    """Student / teacher for every column that has both (speeds: how many times faster)."""

    def ratio(a: Any, b: Any) -> float | None:
        return a / b if a is not None and b else None

    med = "median"
    return {
        "file": ratio(student["file_bytes"], teacher["file_bytes"]),
        "rss": ratio(student["rss_bytes"], teacher["rss_bytes"]),
        "prompt_tps": ratio(student["prompt_tps"][med], teacher["prompt_tps"][med]),
        "gen_tps": ratio(student["gen_tps"][med], teacher["gen_tps"][med]),
        "ttft_ms": ratio(student["ttft_ms"][med], teacher["ttft_ms"][med]),
        "nll": ratio(student["nll"], teacher["nll"]),
    }


COLUMNS = ("model", "file MB", "RSS MB", "prompt tok/s", "gen tok/s", "TTFT ms", "held-out NLL", "ROUGE-L")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _speed(s: dict[str, float | None], fmt: str) -> str:
    if s["median"] is None:
        return "-"
    text = fmt.format(s["median"])
    return text if s["min"] == s["max"] else f"{text} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def table(result: dict[str, Any]) -> str:
    """The compare table: teacher, student, and student/teacher; speeds as median (min-max)."""
    rows = []
    for role in ROLES:
        m = result[role]
        name = f"{role}: {m['model']}" + (f" ({m['ftype']})" if m.get("ftype") else "")
        rows.append([
            name, _num(m["file_bytes"] and m["file_bytes"] / 1e6, "{:.1f}"),
            _num(m["rss_bytes"] and m["rss_bytes"] / 1e6, "{:.0f}"), _speed(m["prompt_tps"], "{:.0f}"),
            _speed(m["gen_tps"], "{:.1f}"), _speed(m["ttft_ms"], "{:.0f}"), _num(m["nll"], "{:.3f}"),
            _num(m.get("rouge_l"), "{:.3f}") if role == "student" else "(reference)",
        ])
    r = result["ratios"]
    keys = ("file", "rss", "prompt_tps", "gen_tps", "ttft_ms", "nll")
    rows.append(["student / teacher", *(_num(r[k], "{:.2f}x") for k in keys), ""])
    widths = [max(len(str(x)) for x in col) for col in zip(COLUMNS, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in [list(COLUMNS), *rows]]
    before, after = result["load_average"]
    lines.append(
        f"\n{result['timed_prompts']} prompts x up to {result['max_tokens']} greedy tokens, "
        f"{result['repeat']} pass(es), speeds as median (min-max); "
        f"NLL on {result['teacher']['nll_tokens']} answer tokens "
        f"({result['rows_from']}); load average {before:.2f} before, {after:.2f} after"
    )
    return "\n".join(lines)
