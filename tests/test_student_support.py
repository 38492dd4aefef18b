"""Helpers for the student tests: a store filled by INSERTs, fake teacher logprobs, and a
very small `tiny` so each training test takes seconds on two cores."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from synthgen.store import connect

# A student small enough for tests; most of its 1.6M parameters are the embedding.
TEST_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}

WORDS = [
    "the",
    "sun",
    "rain",
    "cat",
    "ocean",
    "tree",
    "bread",
    "river",
    "snow",
    "book",
    "wind",
    "star",
    "honey",
    "moon",
]


def fake_logprobs(tok: Any, text: str, rng: random.Random, k: int = 5) -> list[dict[str, Any]]:
    """One entry per token of `text` in the teacher's tokenizer, top-K with the chosen first."""
    entries = []
    for tid in tok(text, add_special_tokens=False)["input_ids"]:
        alts = [tid, *rng.sample(range(100, 5000), k - 1)]
        probs = [0.6, 0.15, 0.1, 0.05, 0.05][:k]
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
    return entries


def add_row(
    con: Any,
    request_id: str,
    messages: list[dict[str, str]],
    response: str,
    logprobs: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    metadata: dict[str, Any] | None = None,
) -> None:
    con.execute(
        "INSERT INTO requests VALUES (?, 1, 0, 0, 'teacher', ?, '{}', ?, now())",
        [request_id, json.dumps(messages), json.dumps(metadata or {})],
    )
    con.execute(
        "INSERT INTO responses (request_id, run_id, sample_index, text, finish_reason, prompt_tokens, "
        "completion_tokens, latency_ms, attempts, model, endpoint, created_at, logprobs) "
        "VALUES (?, 1, 0, ?, ?, 1, 1, 1.0, 1, 'teacher', 'e', now(), ?)",
        [request_id, response, finish_reason, logprobs],
    )


def make_store(path: Path, tok: Any, n: int = 40, seed: int = 0, logprobs: bool = True) -> Path:
    """`n` short, repetitive answers (learnable in a few steps), with fake top-5 logprobs."""
    rng = random.Random(seed)
    con = connect(path)
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        messages = [{"role": "user", "content": f"Tell me about the {word}, please ({i})."}]
        response = f"The {word} is nice. The {word} is good."
        lp = fake_logprobs(tok, response, rng) if logprobs else None
        split = "a" if i % 2 == 0 else "b"
        add_row(con, f"r{i:03d}", messages, response, lp, metadata={"split": split})
    con.close()
    return path


def write_tiny_dir(path: Path, tokenizer: Any) -> Path:
    """A local HF student directory: a test-sized tiny Llama with `tokenizer`."""
    from synthgen.student.presets import tiny_model

    model = tiny_model(tokenizer, seed=0, **TEST_TINY)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
