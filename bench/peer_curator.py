"""bespokelabs-curator 0.1.31 on the bench teacher (run with bench/.venvs/curator/bin/python).

Same prompts, same concurrency, its own on-disk cache (a fresh one per run, so nothing is
served from an earlier run). Prints one JSON line: {"sent", "ok", "seconds"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    os.environ["CURATOR_CACHE_DIR"] = args.workdir
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    os.environ["CURATOR_DISABLE_VIEWER"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    with open(args.input) as fh:
        prompts = [json.loads(line)["prompt"] for line in fh if line.strip()]

    # curator counts prompt tokens with tiktoken's cl100k_base, which tiktoken downloads on
    # first use; this machine reaches no host but the package registry, so the count is
    # approximated (4 characters a token). That only makes curator cheaper than it really is.
    import tiktoken

    class ApproxEncoding:
        name = "cl100k_base-approx"

        def encode(self, text, *args, **kwargs):
            return [0] * (len(text) // 4 + 1)

    tiktoken.get_encoding = lambda name: ApproxEncoding()

    from bespokelabs import curator

    llm = curator.LLM(
        model_name="bench",
        backend="openai",
        backend_params={
            "base_url": args.base_url,
            "api_key": "bench",
            "max_requests_per_minute": 10_000_000,
            "max_tokens_per_minute": 10_000_000_000,
            "max_concurrent_requests": args.concurrency,
            "max_retries": 0,
            "require_all_responses": False,
        },
    )
    t0 = time.perf_counter()
    out = llm(prompts)
    seconds = time.perf_counter() - t0
    ds = getattr(out, "dataset", out)
    print(json.dumps({"sent": len(prompts), "ok": len(ds), "seconds": seconds}))


if __name__ == "__main__":
    main()
