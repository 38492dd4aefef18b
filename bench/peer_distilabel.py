"""distilabel 1.5.3 on the bench teacher (run with bench/.venvs/distilabel/bin/python).

LoadDataFromDicts -> TextGeneration(OpenAILLM) with input_batch_size = the concurrency
(distilabel sends one batch's requests concurrently), no cache reuse. Prints one JSON line:
{"sent", "ok", "seconds"}.
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
    os.environ["DISTILABEL_CACHE_DIR"] = args.workdir
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    with open(args.input) as fh:
        rows = [{"instruction": json.loads(line)["prompt"]} for line in fh if line.strip()]

    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    with Pipeline(name="bench", cache_dir=args.workdir) as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=args.concurrency)
        gen = TextGeneration(
            llm=OpenAILLM(model="bench", base_url=args.base_url, api_key="bench", max_retries=0),
            input_batch_size=args.concurrency,
        )
        load >> gen
    t0 = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    seconds = time.perf_counter() - t0
    ds = distiset["default"]["train"]
    ok = sum(1 for g in ds["generation"] if g)
    print(json.dumps({"sent": len(rows), "ok": ok, "seconds": seconds}))


if __name__ == "__main__":
    main()
