"""The distillation benchmark: pruned students of the bundled teacher, SFT vs SFT+KD.

    .venv/bin/python bench/distill            # the full run: 300 steps a run (hours on 2 CPU cores)
    .venv/bin/python bench/distill --quick    # 40 steps a run, about an hour on 2 busy cores
    .venv/bin/python bench/distill --steps 240 --sweep 1e-4,3e-4,6e-4 --sweep-steps 30   # what DISTILL.md quotes (57 min)

1. The corpus (corpus.py): every bundled seed, 3 samples each, top-20 logprobs; cached.
2. A small learning-rate sweep: the larger pruned student, SFT+KD, a few steps per rate;
   the rate with the lowest held-out NLL is used for everything after it.
3. For each size (--sizes, layers kept of the teacher's 30, by block influence): SFT only
   and SFT+KD on the same rows, steps, seed and rate; each evaluated with `synthgen eval`'s
   code: held-out NLL and its ratio to the teacher's own (teacher-forced, same tokens),
   parameter ratio, greedy decode tokens/s against the teacher's, timed side by side.
4. bench/DISTILL.md (the table, the sweep, the command) and bench/distill_curves.png
   (training cross-entropy against steps, every run).

Trained students are kept under bench/.work/distill/runs/; a rerun with the same settings
reuses them (and the corpus), so only what changed is trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from corpus import CORPUS, SETTINGS, WORK, build  # noqa: E402

from synthgen.student.evaluate import evaluate  # noqa: E402
from synthgen.student.train import TrainConfig, train  # noqa: E402

ROOT = HERE.parents[1]
REPORT = ROOT / "bench" / "DISTILL.md"
CURVES = ROOT / "bench" / "distill_curves.png"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trained(cfg: TrainConfig) -> dict:
    """Train `cfg` unless its directory already holds a finished run of the same config."""
    out = Path(cfg.out)
    saved = out / "synthgen_train.json"
    if saved.exists():
        summary = json.loads(saved.read_text())
        if summary["config"] == asdict(cfg):
            log(f"reusing {out}")
            return summary
    log(f"== training {out.name}")
    return train(cfg, lambda line: log(f"  {line}"))


def measured(cfg: TrainConfig, speed_tokens: int, gen_rows: int) -> dict:
    """Train, then evaluate against the teacher (evals cached next to the run)."""
    summary = trained(cfg)
    cached = Path(cfg.out) / "bench_eval.json"
    if cached.exists() and json.loads(cached.read_text()).get("seconds") == summary["seconds"]:
        return json.loads(cached.read_text())
    load = os.getloadavg()[0]
    result = evaluate(cfg.db, cfg.out, gen_rows=gen_rows, speed_tokens=speed_tokens, label=Path(cfg.out).name)
    load = max(load, os.getloadavg()[0])  # what else ran beside the timing, roughly
    entry = {"summary": summary, "eval": result, "seconds": summary["seconds"], "load": load, "gen_rows": gen_rows}
    cached.write_text(json.dumps(entry, indent=1, default=str))
    return entry


def plot(runs: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in runs.items():
        hist = entry["summary"]["history"]
        ce = [h.get("ce_loss", h["loss"]) for h in hist]
        ax.plot([h["step"] for h in hist], ce, marker=".", label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training cross-entropy (nats/token)")
    ax.set_title("Pruned students of SmolLM2-135M: SFT vs SFT+KD")
    ax.legend()
    fig.tight_layout()
    fig.savefig(CURVES, dpi=120)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(args: argparse.Namespace, sweep: dict[float, dict], runs: dict[str, dict], lr: float,
           wall: float, corpus_rows: int) -> str:
    any_eval = next(iter(runs.values()))["eval"]
    teacher = any_eval["teacher"]
    lines = [
        "# Distillation benchmark (bench/distill)",
        "",
        f"Command: `.venv/bin/python bench/distill {' '.join(sys.argv[1:])}`".rstrip() + f" ({wall / 60:.0f} min wall, reusing any students already trained;"
        " this machine: 2 shared CPU cores, fp32, no GPU).",
        "",
        f"Corpus: bench/distill/corpus.py, {corpus_rows} teacher answers (345 bundled seed prompts x "
        f"{SETTINGS['n']} samples, top-{SETTINGS['logprobs']} logprobs, temperature {SETTINGS['temperature']}, "
        f"max {SETTINGS['max_tokens']} tokens) from the bundled SmolLM2-135M-Instruct (Q4_1 GGUF via llama-server); "
        f"the rows that stopped, {any_eval['heldout_rows']} held out by prompt. Teacher: the same GGUF "
        f"dequantized, {teacher['parameters'] / 1e6:.1f}M parameters, held-out NLL {teacher['loss']:.3f} teacher-forced "
        f"({teacher['loss_stored']:.3f} from its stored logprobs), greedy decode {fmt(teacher.get('tokens_per_s'), '.1f')} tok/s.",
        "",
        f"Students: the teacher cut to K of its 30 layers by block influence, then {args.steps} steps, batch "
        f"{args.batch_size}, lr {lr:g} (cosine), seed 0; SFT+KD = 0.5 CE + 0.5 forward KL on the top-20 + tail buckets.",
        "",
        "| student | layers | params | held-out NLL | NLL / teacher | untrained NLL | top-1 agree | ROUGE-L | decode tok/s | speed / teacher |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in runs.items():
        ev = entry["eval"]
        t, u, r = ev["trained"], ev["untrained"], ev["teacher"]
        layers = len(entry["summary"]["pruning"]["kept"])
        lines.append(
            f"| {name} | {layers} | {t['parameters'] / 1e6:.1f}M ({r['param_ratio']:.2f}x) | {t['loss']:.3f} | "
            f"**{r['nll_ratio']:.2f}x** | {u['loss']:.3f} ({r['untrained_nll_ratio']:.2f}x) | "
            f"{fmt(t['top1_agreement'], '.3f')} | {fmt(t['rouge_l'], '.3f')} | {fmt(t.get('tokens_per_s'), '.1f')} | "
            f"{fmt(r.get('speed_ratio'), '.2f')}x |"
        )
    lines += ["", "KD against SFT at equal data and steps (held-out NLL, lower is better):", ""]
    for k in args.sizes:
        s, d = runs[f"prune{k}-sft"]["eval"]["trained"]["loss"], runs[f"prune{k}-kd"]["eval"]["trained"]["loss"]
        lines.append(f"- {k} layers: SFT {s:.3f}, SFT+KD {d:.3f} ({d - s:+.3f}, {'KD better' if d < s else 'SFT better'})")
    lines += ["", f"Learning-rate sweep: {args.sizes[0]} layers, SFT+KD, {args.sweep_steps} steps each:", ""]
    lines += [f"- lr {lr_:g}: held-out NLL {e['eval']['trained']['loss']:.3f}" for lr_, e in sweep.items()]
    loads = [e["load"] for e in runs.values() if e.get("load") is not None]
    shown = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"
    speed_rows = next(iter(runs.values())).get("gen_rows", "the first")
    lines += [
        "",
        f"Decode speed: greedy, 32 new tokens on each of {speed_rows} held-out prompts, student and teacher",
        "taking turns; the ratio is the median of the per-prompt pairs, so load on the machine moves the",
        f"absolute tok/s more than the ratios (1-minute load average around the evals: {shown} on 2 cores).",
        "Per token, 20 of 30 layers plus the output layer cost about 1/1.36 of the teacher's multiply-adds,",
        "15 layers about 1/1.6.",
        "",
        "Training curves: [distill_curves.png](distill_curves.png).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps: what 2 CPU cores do in under an hour")
    ap.add_argument("--sizes", default="20,15", help="layers kept, largest first")
    ap.add_argument("--steps", type=int, default=None, help="steps per run [300; --quick 40]")
    ap.add_argument("--sweep", default=None, help="learning rates [5e-5,1e-4,2e-4,4e-4; --quick 1e-4,3e-4]")
    ap.add_argument("--sweep-steps", type=int, default=None, help="steps per sweep run [60; --quick 10]")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device-bf16", action="store_true", help="bf16 (on a GPU)")
    args = ap.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.steps = args.steps or (40 if args.quick else 300)
    args.sweep_steps = args.sweep_steps or (10 if args.quick else 60)
    quick_lrs, full_lrs = "1e-4,3e-4", "5e-5,1e-4,2e-4,4e-4"
    lrs = [float(x) for x in (args.sweep or (quick_lrs if args.quick else full_lrs)).split(",")]
    started = time.time()
    db = build(CORPUS)  # resumes; sends nothing once the corpus is complete
    runs_dir = WORK / "runs"

    def cfg(name: str, k: int, kd: bool, lr: float, steps: int) -> TrainConfig:
        return TrainConfig(
            db=str(db), out=str(runs_dir / name), student=f"prune:{k}", kd=kd, lr=lr, max_steps=steps,
            batch_size=args.batch_size, logging_steps=max(1, steps // 15), save_steps=10**6, seed=0,
            threads=args.threads, bf16=args.device_bf16,
        )

    sweep = {}
    for lr in lrs:
        c = cfg(f"sweep-prune{args.sizes[0]}-lr{lr:g}", args.sizes[0], True, lr, args.sweep_steps)
        sweep[lr] = measured(c, speed_tokens=0, gen_rows=0)
        log(f"sweep lr {lr:g}: held-out NLL {sweep[lr]['eval']['trained']['loss']:.3f}")
    best = min(sweep, key=lambda lr: sweep[lr]["eval"]["trained"]["loss"])
    runs = {}
    for k in args.sizes:
        for kd in (False, True):
            name = f"prune{k}-{'kd' if kd else 'sft'}"
            runs[name] = measured(cfg(name, k, kd, best, args.steps), speed_tokens=32, gen_rows=4 if args.quick else 8)
            r = runs[name]["eval"]
            log(f"{name}: NLL {r['trained']['loss']:.3f} ({r['teacher']['nll_ratio']:.2f}x the teacher)")
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT count(*) FROM corpus").fetchone()[0]
    con.close()
    plot(runs)
    REPORT.write_text(report(args, sweep, runs, best, time.time() - started, rows))
    (WORK / "results.json").write_text(json.dumps({"sweep": sweep, "runs": runs}, indent=1, default=str))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
