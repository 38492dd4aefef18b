"""The teacher-scoring request on-policy distillation needs (issue 27), on the real engine.

Stock vLLM scores given text: `/v1/completions` with `prompt_logprobs=K` on the token ids
of prompt + answer returns, for every position, the log-probability of the token there and
the top-K alternatives. This proves the request shape only (the `score` command is the
next issue's): for exactly the answer's span, one entry per answer token, each holding
that token and K ranked alternatives, equal to what the same engine reported while it
generated that answer (the generation's own raw logprobs).
"""

from __future__ import annotations

import httpx
import pytest
from vllm_tier import chat

pytestmark = pytest.mark.vllm

K = 5


def test_prompt_logprobs_on_token_ids_score_exactly_the_answer_span(vllm_teacher) -> None:
    url = vllm_teacher.base_urls[0]
    messages = [{"role": "user", "content": "Give one tip for learning to cook."}]
    prompt = httpx.post(url.removesuffix("/v1") + "/tokenize", trust_env=False, timeout=60, json={
        "model": vllm_teacher.model, "messages": messages, "add_generation_prompt": True}).json()["tokens"]
    generated = chat(vllm_teacher, messages=messages, max_tokens=12, temperature=0.8, seed=3,
                     logprobs=True, top_logprobs=K, return_tokens_as_token_ids=True)
    steps = generated["choices"][0]["logprobs"]["content"]
    answer = [int(s["token"].removeprefix("token_id:")) for s in steps]

    reply = httpx.post(f"{url}/completions", trust_env=False, timeout=300, json={
        "model": vllm_teacher.model, "prompt": prompt + answer, "max_tokens": 1, "temperature": 0,
        "prompt_logprobs": K, "return_token_ids": True})
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["prompt_token_ids"] == prompt + answer  # scored as sent: no re-tokenizing
    positions = choice["prompt_logprobs"]
    assert len(positions) == len(prompt) + len(answer) and positions[0] is None
    span = positions[len(prompt):]
    assert len(span) == len(answer)
    for token, step, scored in zip(answer, steps, span, strict=True):
        ranked = sorted(scored.values(), key=lambda e: e["rank"])
        assert [e["rank"] for e in ranked[:K]] == list(range(1, K + 1))
        assert str(token) in scored  # the answer's own token, in the top K or added beside it
        assert scored[str(token)]["logprob"] == pytest.approx(step["logprob"], abs=2e-3)
        top_then = sorted(float(t["logprob"]) for t in step["top_logprobs"])
        top_now = sorted(e["logprob"] for e in ranked[:K])
        assert top_now == pytest.approx(top_then, abs=2e-3)
