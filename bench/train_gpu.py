"""GPU training benchmark for the student: bf16, a larger student, tokens/s and peak memory.

Prepared for a machine with a CUDA GPU (none is here). It runs the same code path as
`synthgen train` (SFTTrainer, optional sparse KD) and prints one JSON line:

    .venv/bin/python bench/train_gpu.py --db demo.duckdb                 # SmolLM2-135M student
    .venv/bin/python bench/train_gpu.py --synthetic 512 --kd --steps 100 # no corpus needed
    .venv/bin/python bench/train_gpu.py --synthetic 64 --student tiny --steps 5 --cpu  # smoke

The default student is the bundled teacher's own GGUF (SmolLM2-135M, dequantized), which
shares the teacher's tokenizer, so --kd works against a demo corpus. `--synthetic N`
writes a store of N rows of filler answers with fake top-5 logprobs under bench/.work/.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synthgen.store import connect  # noqa: E402
from synthgen.student.presets import teacher_gguf, teacher_tokenizer  # noqa: E402
from synthgen.student.train import TrainConfig, train  # noqa: E402

WORK = ROOT / "bench" / ".work"


def synthetic_store(path: Path, rows: int, words: int, seed: int = 0) -> Path:
    """`rows` answers of about `words` words each, with fake top-5 logprobs."""
    tok = teacher_tokenizer()
    rng = random.Random(seed)
    vocab = [
        "the",
        "a",
        "sun",
        "rain",
        "river",
        "light",
        "cold",
        "warm",
        "bright",
        "music",
        "stone",
        "field",
        "winter",
        "quiet",
    ]
    path.unlink(missing_ok=True)
    con = connect(path)
    for i in range(rows):
        messages = [{"role": "user", "content": f"Write about item {i}."}]
        text = " ".join(rng.choice(vocab) for _ in range(words)).capitalize() + "."
        entries = []
        for tid in tok(text, add_special_tokens=False)["input_ids"]:
            alts = [tid, *rng.sample(range(100, 20000), 4)]
            probs = (0.7, 0.1, 0.08, 0.05, 0.03)
            entries.append(
                {
                    "token": tok.decode([tid]),
                    "id": tid,
                    "logprob": math.log(probs[0]),
                    "top_logprobs": [
                        {"token": tok.decode([a]), "id": a, "logprob": math.log(p)}
                        for a, p in zip(alts, probs, strict=True)
                    ],
                }
            )
        con.execute(
            "INSERT INTO requests VALUES (?, 0, ?, 0, 'synthetic', ?, '{}', '{}', now())",
            [f"s{i}", i, json.dumps(messages)],
        )
        con.execute(
            "INSERT INTO responses (request_id, run_id, sample_index, text, finish_reason, prompt_tokens, "
            "completion_tokens, latency_ms, attempts, model, endpoint, created_at, logprobs) "
            "VALUES (?, 0, 0, ?, 'stop', 0, ?, 0, 1, 'synthetic', '', now(), ?)",
            [f"s{i}", text, len(entries), entries],
        )
    con.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, help="a synthgen store (default: --synthetic)")
    ap.add_argument("--synthetic", type=int, default=512, help="rows of a synthetic store")
    ap.add_argument("--words", type=int, default=150, help="words per synthetic answer")
    ap.add_argument("--student", default=None, help="tiny, an HF dir or a .gguf (default 135M)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--kd", action="store_true")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="fp32 on CPU: a smoke test of the script")
    ap.add_argument("--out", type=Path, default=WORK / "gpu-student")
    args = ap.parse_args()

    import torch

    if not args.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or pass --cpu for a smoke test")
    WORK.mkdir(parents=True, exist_ok=True)
    db = args.db or synthetic_store(WORK / "synthetic.duckdb", args.synthetic, args.words)
    cfg = TrainConfig(
        db=str(db),
        out=str(args.out),
        student=args.student or str(teacher_gguf()),
        kd=args.kd,
        lora=args.lora,
        merge_lora=args.lora,
        max_steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        holdout=0.05,
        bf16=not args.cpu,
        logging_steps=max(1, args.steps // 10),
        save_steps=10**9,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - started
    steady = summary["history"][1:] or summary["history"]
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "student": cfg.student,
        "parameters": summary["parameters"],
        "dtype": "bf16" if cfg.bf16 else "fp32",
        "kd": summary["kd_used"],
        "lora": args.lora,
        "steps": summary["steps"],
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "tokens_per_s": sum(h["tokens_per_s"] for h in steady) / len(steady),
        "final_loss": summary["history"][-1]["loss"],
        "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
