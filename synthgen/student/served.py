"""A served model scored on held-out teacher answers through its own logprobs: `synthgen eval
--served URL`, and the NLL column of `synthgen compare`.

The number is the one `synthgen eval` computes with transformers (student.evaluate), but
from the server: the mean negative log-likelihood of each held-out answer's tokens, end of
turn included when the teacher finished, given the prompt as the server's own chat
template and tokenizer render it. So a GGUF is scored as it is served (its quantized
weights, llama.cpp's kernels), and a teacher and a student served side by side are scored
on the same answers. Each token's log-probability comes from a one-token completion of
the prefix forced to that token (student/llamacpp.py: llama-server reports raw,
pre-sampling log-probabilities and returns none for prompt tokens); the server's prompt
cache makes that one short request per answer token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .deps import StudentError
from .llamacpp import LlamaCppClient
from .rows import Row, Split, heldout_rows, load_rows, split_rows


def end_of_turn(client: LlamaCppClient) -> int:
    """The id the served model ends a turn with (its EOS: `<|im_end|>` for ChatML)."""
    eos = client.props().get("eos_token")
    ids = client.tokenize(eos, special=True) if eos else []
    if len(ids) != 1:
        raise StudentError(f"{client.shown}: cannot tell the model's end-of-turn token (eos {eos!r})")
    return ids[0]


def answer_ids(client: LlamaCppClient, row: Row, eot: int) -> tuple[list[int], list[int]]:
    """The prompt's ids and the answer's, tokenized together as the server would see them."""
    text = client.apply_template(row.messages)
    prompt = client.tokenize(text)
    full = client.tokenize(text + row.response)
    answer = full[len(prompt) :] if full[: len(prompt)] == prompt else client.tokenize(row.response, False)
    return prompt, answer + ([eot] if row.finished else [])


def served_nll(client: LlamaCppClient, rows: Sequence[Row], echo: Callable[[str], None] | None = None,
               ) -> dict[str, Any]:
    """Mean NLL per answer token over `rows`, from the server's logprobs."""
    eot = end_of_turn(client)
    total, tokens = 0.0, 0
    for i, row in enumerate(rows):
        prompt, answer = answer_ids(client, row, eot)
        for j, token in enumerate(answer):
            total -= client.token_logprob(prompt + answer[:j], token)
        tokens += len(answer)
        if echo and (i + 1) % 10 == 0:
            echo(f"  scored {i + 1}/{len(rows)} rows ({tokens} tokens) on {client.shown}")
    if tokens == 0:
        raise StudentError("no held-out answer token to score")
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens, "rows": len(rows)}


def rows_for(db: str, split_dir: str | None, query: str | None) -> tuple[list[Row], str]:
    """The held-out rows: the student's own split (its training directory's split.json), a
    query's rows the split never trained on, or, with neither, the split `synthgen train`
    makes by default (seed 0, 10% of prompts) of the default query; and what they are."""
    if split_dir is not None:
        split = Split.load(Path(split_dir) / "split.json")
        return heldout_rows(db, split, query), f"held out by {split_dir}/split.json"
    if query is not None:
        return load_rows(db, query), "the --query rows"
    _, held, _ = split_rows(load_rows(db), 0.1, 0, None)
    if not held:
        raise StudentError("the store has too few prompts to hold any out")
    return held, "held out by synthgen train's default split (seed 0, 10% of prompts)"


def evaluate_served(db: str, url: str, split_dir: str | None = None, query: str | None = None,
                    echo: Callable[[str], None] | None = None, limit: int | None = None) -> dict[str, Any]:
    """`synthgen eval --served URL`: the served model's held-out NLL beside the teacher's
    (from the logprobs the store holds), recorded in `evals` under the label 'served'."""
    from .closeness import stored_nll
    from .evaluate import insert_evals

    rows, where = rows_for(db, split_dir, query)
    rows = rows[:limit] if limit else rows
    with LlamaCppClient(url) as client:
        model = client.model_id()
        if echo:
            echo(f"eval: {len(rows)} rows ({where}) scored by {model} at {client.shown}")
        served = served_nll(client, rows, echo)
    served.update(url=client.shown, model=model)
    stored, stored_tokens = stored_nll(rows)
    teacher = {"loss": stored, "loss_source": "stored logprobs", "stored_tokens": stored_tokens}
    result = {"served": served, "teacher": teacher, "rows_from": where, "heldout_rows": len(rows),
              "nll_ratio": served["loss"] / stored if stored else None}
    result["eval_id"] = insert_evals(db, client.shown, query or where, len(rows),
                                     [("served", served), ("teacher", teacher)])
    return result


def report(result: dict[str, Any]) -> str:
    s, t = result["served"], result["teacher"]
    lines = [f"{s['model']} at {s['url']}: held-out NLL {s['loss']:.3f} (perplexity {s['perplexity']:.1f}) "
             f"on {s['tokens']} answer tokens of {s['rows']} rows ({result['rows_from']})"]
    if t["loss"] is not None:
        lines.append(f"teacher, from its stored logprobs: {t['loss']:.3f} on {t['stored_tokens']} tokens; "
                     f"served / teacher {result['nll_ratio']:.2f}x")
    return "\n".join(lines)
