"""The on-policy distillation arms of bench/distill, measured as the papers do.

    .venv/bin/python bench/distill/opd.py            # what DISTILL.md's OPD section quotes
    .venv/bin/python bench/distill/opd.py --quick    # fewer steps and rollouts: a smoke run

Five students of the bundled teacher, 20 of its 30 layers (prune:20, block influence), on
the same corpus (corpus.py), the same held-out prompts and the same seed:

    kd       off-policy: SFT+KD on the teacher's own answers (what bench/distill measures)
    kd-warm  the same for half the steps, so it reads about half of kd's teacher tokens
    opd      on-policy from the pruned student: rounds of sample, score, train (reverse KL
             to the teacher's top-20 at every sampled position), `synthgen distill`
    kd-opd   on-policy rounds warm-started from kd-warm, added until its teacher tokens
             (kd-warm's generated + its own scored) reach kd's: the equal-token comparison
    kd-opd-fwd  the same rounds on forward KL (teacher || student) in place of reverse: mass
             the teacher puts on ending the answer, which the student lacks, is penalised

Teacher tokens are counted both ways: tokens the teacher generated that training read (kd)
and answer tokens the teacher scored (opd), with the prompt tokens it read beside them.
Each student, and the teacher itself, is measured on (a) the held-out NLL ratio on the
teacher's answers (bench/distill's metric), (b) the teacher's NLL of the student's own
greedy answers to the held-out prompts (how much the teacher likes what the student
writes: sampled, stored and scored by synthgen itself), (c) exact match on
data/arithmetic.jsonl, greedy. Results: bench/DISTILL.md (its OPD
section), bench/distill_opd.png, bench/.work/distill/opd.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from corpus import CORPUS, WORK, build  # noqa: E402
from report_opd import report  # noqa: E402

from synthgen.scoring import score  # noqa: E402
from synthgen.student.evaluate import evaluate, metrics  # noqa: E402
from synthgen.student.opd import DistillConfig, distill  # noqa: E402
from synthgen.student.rows import DEFAULT_QUERY, Split, heldout_rows  # noqa: E402
from synthgen.student.sample import SampleOptions, sample  # noqa: E402
from synthgen.student.train import TrainConfig, train  # noqa: E402

ROOT = HERE.parents[1]
REPORT = ROOT / "bench" / "DISTILL.md"
CURVES = ROOT / "bench" / "distill_opd.png"
RESULTS = WORK / "opd.json"
RUNS = WORK / "opd-runs"
ARITHMETIC = ROOT / "data" / "arithmetic.jsonl"
BEGIN, END = "<!-- opd:begin -->", "<!-- opd:end -->"
BATCH = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load() -> float:
    return os.getloadavg()[0]


def kd_arm(db: Path, name: str, steps: int, args: argparse.Namespace) -> Path:
    """An off-policy student (reused when its directory holds the same finished config)."""
    cfg = TrainConfig(db=str(db), out=str(RUNS / name), student="prune:20", kd=True, lr=3e-4,
                      max_steps=steps, batch_size=BATCH, logging_steps=max(1, steps // 15),
                      save_steps=50, seed=0, threads=args.threads)
    saved = Path(cfg.out) / "synthgen_train.json"
    if not (saved.exists() and json.loads(saved.read_text())["config"]["max_steps"] == steps):
        log(f"== {name}: off-policy SFT+KD, {steps} steps")
        train(cfg, lambda line: log(f"  {line}"))
    return Path(cfg.out)


def kdopd_arm(db: Path, warm: Path, budget: int, args: argparse.Namespace, name: str = "kd-opd",
              loss: str = "reverse") -> dict:
    """OPD rounds from `warm`, one more at a time (distill goes on from its last round) until
    the teacher tokens scored reach `budget` or --kdopd-rounds is spent."""
    rounds = 1
    while True:
        state = opd_arm(db, name, str(warm), args, rounds, args.warm_lr, loss)
        spent = sum(r["teacher_tokens"] for r in state["rounds"])
        log(f"  {name}: {spent:,} of {budget:,} teacher tokens scored after {len(state['rounds'])} rounds")
        if spent >= budget or len(state["rounds"]) >= args.kdopd_rounds:
            return state
        rounds = len(state["rounds"]) + 1


def opd_arm(db: Path, name: str, student: str, args: argparse.Namespace, rounds: int, lr: float,
            loss: str = "reverse") -> dict:
    log(f"== {name}: on-policy from {student}, {loss} KL")
    cfg = DistillConfig(db=str(db), out=str(RUNS / name), student=student, rounds=rounds,
                        prompts=DEFAULT_QUERY, steps=args.round_steps, lr=lr, samples=args.samples, loss=loss,
                        prompts_per_round=args.prompts_per_round, max_tokens=args.max_tokens,
                        threads=args.threads, save_steps=20)
    return distill(cfg, echo=lambda line: log(f"  {line}"))


def teacher_tokens_read(db: Path, split_dir: Path, steps: int) -> dict:
    """What an off-policy arm's training read of the teacher: its training answers' tokens,
    times the share of them its steps drew (all, past one epoch; an estimate below it, since
    the trainer draws answers in a shuffled order this does not replay)."""
    import duckdb

    split = Split.load(split_dir / "split.json")
    con = duckdb.connect(str(db), read_only=True)
    try:
        [(n, generated, prompt)] = con.execute(
            "SELECT count(*), sum(completion_tokens), sum(prompt_tokens) FROM corpus "
            "WHERE request_id IN (SELECT unnest(?))", [split.train_ids]).fetchall()
    finally:
        con.close()
    share = min(1.0, steps * BATCH / n)
    return {"answers": n, "share": share, "generated": round(int(generated) * share),
            "prompt": round(int(prompt) * share)}


def scored_tokens(db: Path, state: dict) -> list[dict]:
    """Per round of an OPD run: answer tokens the teacher scored and prompt tokens it read."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    out = []
    try:
        for r in state["rounds"]:
            [(n, tokens, prompt)] = con.execute(
                "SELECT count(*), sum(tokens), sum(prompt_tokens) FROM scored WHERE "
                "request_id IN (SELECT request_id FROM requests WHERE model = ?)", [r["student"]]).fetchall()
            out.append({"round": r["round"], "scored": n, "tokens": int(tokens), "prompt": int(prompt)})
    finally:
        con.close()
    return out


def finished(summary, what: str):
    """`summary` of a sampling or scoring run that answered everything, else stop: a signal
    makes synthgen stop cooperatively and return (status 'interrupted', a rerun resumes), and
    a measurement over part of its answers must not be reported or cached as a whole one."""
    if summary.status not in ("done", "nothing_to_do") or summary.pending:
        raise SystemExit(f"{what}: {summary.status}, {summary.pending} pending; run the benchmark "
                         "again to resume")
    return summary


def greedy_nll(db: Path, model_dir: Path, label: str, prompts_file: Path, args: argparse.Namespace) -> dict:
    """(b): the model's greedy answers to the held-out prompts, stored and scored by the teacher."""
    made = finished(sample(model_dir, db, options=SampleOptions(batch_size=8, label=label, threads=args.threads),
                           input=prompts_file, temperature=0.0, max_tokens=args.greedy_tokens, seed=0), label)
    where = f"request_id IN (SELECT request_id FROM requests WHERE model = '{made.model}')"
    scored = finished(score(db=str(db), teacher="local", where=where, k=0), f"{label}: scoring")
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        [(n, nll_sum, tokens, stopped)] = con.execute(
            f"SELECT count(*), sum(nll * tokens), sum(tokens), count(*) FILTER (WHERE finish_reason = 'stop') "
            f"FROM scored WHERE teacher = ? AND k = 0 AND {where}", [scored.teacher]).fetchall()
    finally:
        con.close()
    return {"answers": n, "tokens": int(tokens), "teacher_nll": nll_sum / tokens, "stopped": stopped,
            "model": made.model}


def arithmetic(db: Path, model_dir: Path, label: str, args: argparse.Namespace) -> dict:
    """(c): data/arithmetic.jsonl's answer appears in the greedy answer as a number of its own
    ("12 divided by 4 equals 3." is right for 3; "15 + 27 = 32" is not for 42). A 135M model
    rarely answers with the number alone, so the first or last number would miss right ones."""
    import duckdb

    made = finished(sample(model_dir, db, options=SampleOptions(batch_size=8, label=label, threads=args.threads),
                           input=ARITHMETIC, temperature=0.0, max_tokens=48, seed=0), label)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT c.response, c.metadata->>'answer' FROM corpus c JOIN requests q USING "
                           "(request_id) WHERE q.model = ?", [made.model]).fetchall()
    finally:
        con.close()
    right = sum(1 for text, want in rows
                if re.search(rf"(?<![\d/.]){re.escape(want)}(?![\d/])", text or ""))
    return {"right": right, "of": len(rows)}


def held_prompts(db: Path, split_dir: Path) -> Path:
    """The held-out prompts, one per line, for the greedy answers of (b)."""
    split = Split.load(split_dir / "split.json")
    seen, lines = set(), []
    for row in heldout_rows(str(db), split):
        key = json.dumps(row.messages, sort_keys=True)
        if key not in seen:
            seen.add(key)
            lines.append(json.dumps({"messages": row.messages}))
    path = WORK / "heldout_prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def cached(path: Path, key: object, compute) -> dict:
    """compute() once per `key` (a rerun of the benchmark measures only what changed)."""
    if path.exists():
        entry = json.loads(path.read_text())
        if entry.get("key") == key:
            return entry["value"]
    value = compute()
    path.write_text(json.dumps({"key": key, "value": value}, indent=1, default=str))
    return value


def stamp(model_dir: Path) -> float:
    return (model_dir / "model.safetensors").stat().st_mtime


def measure(db: Path, name: str, model_dir: Path, prompts: Path, args: argparse.Namespace) -> dict:
    """(a), (b), (c) for one student, with the load around its timings."""
    def compute() -> dict:
        before = load()
        ev = evaluate(str(db), str(model_dir), gen_rows=0, speed_tokens=32, label=name)
        ev["load"] = max(before, load())
        return {"eval": ev, "greedy": greedy_nll(db, model_dir, f"bench-{name}-greedy", prompts, args),
                "arithmetic": arithmetic(db, model_dir, f"bench-{name}-arith", args)}

    return cached(model_dir / "bench_opd.json", [stamp(model_dir), args.greedy_tokens], compute)


def round_curve(db: Path, run_dir: Path, state: dict, teacher_loss: float) -> list[dict]:
    """Held-out NLL / teacher after every round of an OPD run."""
    from synthgen.student.evaluate import load_trained
    from synthgen.student.presets import prepare_tokenizer

    split = Split.load(run_dir / "split.json")
    rows = heldout_rows(str(db), split)
    out = []
    for r in state["rounds"]:
        here = run_dir / f"round-{r['round']}"

        def compute(here=here) -> dict:
            model, tok = load_trained(here, {})
            prepare_tokenizer(tok)
            return {"loss": metrics(model, tok, rows, 512, 0, 0)["loss"]}

        out.append({"round": r["round"], **cached(here / "bench_curve.json", stamp(here), compute)})
    for point in out:
        point["ratio"] = point["loss"] / teacher_loss
    return out


def plot(points: dict[str, list[tuple[float, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, xy in points.items():
        ax.plot([x / 1000 for x, _ in xy], [y for _, y in xy], marker="o", label=name)
    ax.axhline(1.5, color="grey", linestyle=":", label="1.5x target")
    ax.set_xlabel("teacher tokens (thousands: generated for kd, scored for opd)")
    ax.set_ylabel("held-out NLL / teacher's")
    ax.set_title("20-of-30-layer students of SmolLM2-135M: off-policy KD vs OPD")
    ax.legend()
    fig.tight_layout()
    fig.savefig(CURVES, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few steps, few rollouts")
    ap.add_argument("--kd-steps", type=int, default=240)
    ap.add_argument("--warm-steps", type=int, default=120, help="kd-warm's steps: kd-opd's start")
    ap.add_argument("--opd-rounds", type=int, default=2)
    ap.add_argument("--kdopd-rounds", type=int, default=12,
                    help="at most this many kd-opd rounds (it stops at kd's teacher tokens)")
    ap.add_argument("--round-steps", type=int, default=16, help="64 rollouts / batch 4: each seen once")
    ap.add_argument("--prompts-per-round", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1, help="rollouts per prompt per round")
    ap.add_argument("--max-tokens", type=int, default=128, help="per rollout (the corpus's own bound)")
    ap.add_argument("--warm-lr", type=float, default=1e-4, help="kd-opd's learning rate")
    ap.add_argument("--greedy-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.quick:
        args.kd_steps, args.warm_steps, args.opd_rounds, args.kdopd_rounds, args.round_steps = 20, 10, 2, 2, 5
        args.prompts_per_round, args.samples, args.greedy_tokens = 8, 1, 32
    started, load_start = time.time(), load()
    db = build(CORPUS)
    if args.quick:  # a copy of the corpus and runs of its own; DISTILL.md is left alone
        import shutil

        global RUNS, RESULTS, CURVES
        RUNS, RESULTS, CURVES = WORK / "opd-quick", WORK / "opd-quick.json", WORK / "opd-quick.png"
        if not (WORK / "quick.duckdb").exists():
            shutil.copy(db, WORK / "quick.duckdb")
        db = WORK / "quick.duckdb"
    RUNS.mkdir(parents=True, exist_ok=True)
    kd_dir = kd_arm(db, "kd", args.kd_steps, args)
    warm_dir = kd_arm(db, "kd-warm", args.warm_steps, args)
    kd_read = teacher_tokens_read(db, kd_dir, args.kd_steps)
    warm_read = teacher_tokens_read(db, warm_dir, args.warm_steps)
    opd = opd_arm(db, "opd", "prune:20", args, args.opd_rounds, 3e-4)
    budget = kd_read["generated"] - warm_read["generated"]
    kdopd = kdopd_arm(db, warm_dir, budget, args)
    kdopd_fwd = kdopd_arm(db, warm_dir, budget, args, "kd-opd-fwd", "forward")
    prompts = held_prompts(db, kd_dir)
    from synthgen.student.presets import teacher_gguf
    from synthgen.student.reference import dequantized

    teacher_dir = dequantized(teacher_gguf())
    teacher = cached(RUNS / "teacher.json", args.greedy_tokens, lambda: {
        "greedy": greedy_nll(db, teacher_dir, "bench-teacher-greedy", prompts, args),
        "arithmetic": arithmetic(db, teacher_dir, "bench-teacher-arith", args)})
    arms = {"kd": kd_dir, "kd-warm": warm_dir, "opd": Path(opd["final"]), "kd-opd": Path(kdopd["final"]),
            "kd-opd-fwd": Path(kdopd_fwd["final"])}
    measured = {name: measure(db, name, path, prompts, args) for name, path in arms.items()}
    t_loss = measured["kd"]["eval"]["teacher"]["loss"]
    opd_tokens, kdopd_tokens = scored_tokens(db, opd), scored_tokens(db, kdopd)
    kdopd_fwd_tokens = scored_tokens(db, kdopd_fwd)
    untrained = measured["kd"]["eval"]["untrained"]["loss"] / t_loss
    curves = {"opd": round_curve(db, RUNS / "opd", opd, t_loss),
              "kd-opd": round_curve(db, RUNS / "kd-opd", kdopd, t_loss),
              "kd-opd-fwd": round_curve(db, RUNS / "kd-opd-fwd", kdopd_fwd, t_loss)}
    ratio = {name: m["eval"]["teacher"]["nll_ratio"] for name, m in measured.items()}
    points = {"kd (off-policy)": [(0, untrained), (warm_read["generated"], ratio["kd-warm"]),
                                  (kd_read["generated"], ratio["kd"])],
              "opd": [(0, untrained)], "kd-opd": [(warm_read["generated"], ratio["kd-warm"])],
              "kd-opd-fwd": [(warm_read["generated"], ratio["kd-warm"])]}
    for name, tokens in (("opd", opd_tokens), ("kd-opd", kdopd_tokens), ("kd-opd-fwd", kdopd_fwd_tokens)):
        total = 0 if name == "opd" else warm_read["generated"]
        for t, c in zip(tokens, curves[name], strict=True):
            total += t["tokens"]
            points[name].append((total, c["ratio"]))
    plot(points)
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    corpus = dict(zip(("answers", "stopped"), con.execute(
        "SELECT count(*), count(*) FILTER (WHERE finish_reason = 'stop') FROM corpus "
        "WHERE coalesce(model, '') NOT LIKE 'student:%'").fetchone(), strict=True))
    con.close()
    results = {"args": vars(args), "corpus": corpus, "teacher": teacher, "arms": measured, "kd_read": kd_read,
               "warm_read": warm_read,
               "opd_tokens": opd_tokens, "kdopd_tokens": kdopd_tokens, "kdopd_fwd_tokens": kdopd_fwd_tokens,
               "curves": curves, "points": points, "opd": opd, "kdopd": kdopd, "kdopd_fwd": kdopd_fwd, "wall": time.time() - started,
               "load": [load_start, load()], "untrained_ratio": untrained,
               "kd_seconds": {name: json.loads((path / "synthgen_train.json").read_text())["seconds"]
                              for name, path in (("kd", kd_dir), ("kd-warm", warm_dir))}}
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    section = report(results)
    if args.quick:
        print(section)
        return
    text = REPORT.read_text() if REPORT.exists() else ""
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    REPORT.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
