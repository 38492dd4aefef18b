"""Does width pruning pay for itself? The measurement issue 15 asks for before adding it.

Minitron (Muralidharan et al. 2024) prunes MLP channels by activation importance: for each
layer, the mean |act(gate(x)) * up(x)| of every intermediate channel over calibration
tokens; the least important channels go, from gate_proj, up_proj (rows) and down_proj
(columns). This script cuts the bundled teacher that way to the parameter count of
`prune:K` (all 30 layers kept, narrower MLPs), saves it as an HF directory, and trains it
and the depth-pruned `prune:K` with the same command, steps and learning rate; then
`synthgen eval` scores both (held-out NLL against the teacher's, decode speed).

    .venv/bin/python bench/width_probe.py --db demo345x3.duckdb --k 20 --steps 120

Prints one table; writes nothing into synthgen. Width pruning joins `--student` only if
it beats depth at equal parameters on NLL without giving up the decode speed-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALIBRATION_ROWS = 32  # as prune.INFLUENCE_ROWS


def channel_importance(model, batches) -> list:
    """Per layer, mean |down_proj input| per intermediate channel over all tokens."""
    import torch

    sums: dict[int, torch.Tensor] = {}
    count = 0
    handles = []
    for i, layer in enumerate(model.model.layers):
        def hook(module, args, i=i):
            a = args[0].detach().abs().reshape(-1, args[0].shape[-1]).sum(0)
            sums[i] = sums.get(i, 0) + a

        handles.append(layer.mlp.down_proj.register_forward_pre_hook(hook))
    with torch.no_grad():
        for ids in batches:
            model.model(input_ids=ids, use_cache=False)
            count += int(ids.numel())
    for h in handles:
        h.remove()
    return [sums[i] / count for i in range(len(model.model.layers))]


def narrow(model, importance, width: int) -> None:
    """Keep the `width` most important channels of every MLP, in place."""
    import torch

    for layer, imp in zip(model.model.layers, importance, strict=True):
        keep = torch.sort(torch.topk(imp, width).indices).values
        mlp = layer.mlp
        for name in ("gate_proj", "up_proj"):
            old = getattr(mlp, name)
            new = torch.nn.Linear(old.in_features, width, bias=old.bias is not None)
            new.weight.data = old.weight.data[keep].clone()
            setattr(mlp, name, new)
        old = mlp.down_proj
        new = torch.nn.Linear(width, old.out_features, bias=old.bias is not None)
        new.weight.data = old.weight.data[:, keep].clone()
        if old.bias is not None:
            new.bias.data = old.bias.data.clone()
        mlp.down_proj = new
    model.config.intermediate_size = width


def width_student(db: str, k: int, out: Path) -> tuple[int, int]:
    """The teacher narrowed to prune:K's parameter count, saved to `out`; (width, params)."""
    import torch

    from synthgen.student.reference import load_teacher, parameters
    from synthgen.student.render import render
    from synthgen.student.rows import load_rows, split_rows
    from synthgen.student.train import TrainConfig

    teacher = load_teacher(None)
    cfg = teacher.model.config
    n, hidden, inter = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
    per_channel = 3 * hidden  # one row of gate and up, one column of down
    layer_params = sum(p.numel() for p in teacher.model.model.layers[0].parameters())
    cut = (n - k) * layer_params  # what dropping n - k whole layers removes
    width = inter - round(cut / (n * per_channel))
    rows = load_rows(db)
    # train's own split (its default --holdout and --seed): calibrate on its training rows
    train_rows, _held, _split = split_rows(rows, TrainConfig.holdout, TrainConfig.seed, None)
    batches = [torch.tensor([render(teacher.tokenizer, r.conversation(False), r.finished).input_ids])
               for r in train_rows[:CALIBRATION_ROWS]]
    importance = channel_importance(teacher.model, batches)
    narrow(teacher.model, importance, width)
    teacher.model.save_pretrained(str(out))
    teacher.tokenizer.save_pretrained(str(out))
    return width, parameters(teacher.model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--k", type=int, default=20, help="depth of the prune:K it is matched with")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / ".work" / "width")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sg = [sys.executable, "-m", "synthgen"]
    base = args.work / "width-base"
    if not (base / "config.json").exists():
        width, params = width_student(args.db, args.k, base)
        print(f"width-pruned: 30 layers, MLP {width} channels, {params / 1e6:.1f}M params", file=sys.stderr)
    runs = {"depth": f"prune:{args.k}", "width": str(base)}
    from synthgen.student.presets import teacher_gguf

    teacher = str(teacher_gguf())  # named, or eval of an HF-dir student has no local teacher
    results = {}
    for name, student in runs.items():
        out = args.work / f"{name}-{args.steps}"
        if not (out / "model.safetensors").exists():
            subprocess.run([*sg, "train", "--db", args.db, "--out", str(out), "--student", student,
                            "--kd", "--max-steps", str(args.steps), "--lr", str(args.lr)], check=True)
        got = subprocess.run([*sg, "eval", "--db", args.db, "--model", str(out), "--json",
                              "--teacher-model", teacher],
                             check=True, capture_output=True, text=True)
        results[name] = json.loads(got.stdout)
        (out / "eval.json").write_text(got.stdout)
    print("| student | params | held-out NLL | NLL / teacher | untrained NLL | decode / teacher |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        trained, untrained, t = r["trained"], r["untrained"], r["teacher"]
        print(f"| {name} | {trained['parameters'] / 1e6:.1f}M | {trained['loss']:.3f} | {t['nll_ratio']:.2f}x "
              f"| {untrained['loss']:.3f} | {t.get('speed_ratio') or float('nan'):.2f}x |")


if __name__ == "__main__":
    main()
