"""The distillation benchmark's corpus: every bundled seed prompt, three samples each,
answered by the bundled teacher with its top-20 logprobs.

Cached in bench/.work/distill/corpus.duckdb: synthgen's request ids are content hashes,
so running this again sends only what is missing (nothing, once it has finished) and a
rerun of the benchmark skips generation. 345 prompts x 3 samples = 1,035 answers: about
8 minutes at the 2.4 requests/s the bundled teacher gives on an idle 2-core machine
(30 minutes at the 0.6 requests/s it gives on a loaded one), well under an hour either
way. Three samples rather than more prompts because the bundled seeds are all the
prompts there are, and several teacher answers per prompt are what distillation data
looks like; the held-out split is by prompt, so no held-out prompt is ever trained on.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "bench" / ".work" / "distill"
CORPUS = WORK / "corpus.duckdb"

# What the demo uses, with three samples and top-20 logprobs.
SETTINGS = {
    "template": "demo",
    "n": 3,
    "logprobs": 20,
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 128,
    "seed": 0,
}


def build(db: Path = CORPUS) -> Path:
    """Generate (or finish generating) the corpus; returns its path."""
    sys.path.insert(0, str(ROOT))
    from synthgen import generate

    db.parent.mkdir(parents=True, exist_ok=True)
    summary = generate(
        input=ROOT / "data" / "seeds.jsonl",
        db=db,
        prompts_dir=ROOT / "prompts",
        progress=sys.stderr,
        **SETTINGS,
    )
    if summary.pending or summary.failed:
        raise SystemExit(f"corpus incomplete: {summary.failed} failed, {summary.pending} pending")
    return db


if __name__ == "__main__":
    print(build())
