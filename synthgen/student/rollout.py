"""Batched sampling from a causal LM on the CPU, each answer reproducible on its own.

On-policy distillation resumes after a kill without sampling again what is stored, and
its final checkpoint must not depend on where it was killed: so an answer may not depend
on which other answers were sampled beside it. Each row draws from a random generator of
its own (seeded from its request), by the inverse CDF of its own distribution, one uniform
number per token; rows share only the forward passes (left-padded, with the attention mask
and position ids that make padding invisible to them). Batch composition then moves the
logits by float rounding only, far below what would change a draw in practice.

Per token the row records what the store keeps of an answer: the id, its text, the
model's own log-probability of it (raw: the temperature-1 distribution, what KD reads) and,
if asked, the top-K alternatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sampling:
    """How one row samples: temperature 0 is greedy; top_p 1 keeps the whole distribution."""

    seed: int
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_logprobs: int = 0


@dataclass
class Rollout:
    """One sampled answer: token ids (with the end-of-turn token it stopped on) and entries."""

    ids: list[int] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "length"


def pick(logits: Any, s: Sampling, generator: Any) -> int:
    """The next token of one row: argmax at temperature 0, else the inverse CDF at one
    uniform draw of the tempered, top-p-truncated distribution (in float64)."""
    import torch

    if s.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.double() / s.temperature, dim=-1)
    order = torch.argsort(probs, descending=True, stable=True)
    sorted_p = probs[order]
    cum = sorted_p.cumsum(0)
    if s.top_p < 1.0:
        keep = int(torch.searchsorted(cum, torch.tensor(s.top_p, dtype=cum.dtype))) + 1
        cum = cum[:keep]
    u = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(cum[-1])
    at = min(int(torch.searchsorted(cum, torch.tensor(u, dtype=cum.dtype), right=True)), len(cum) - 1)
    return int(order[at])


def sample_batch(model: Any, tokenizer: Any, prompts: list[list[int]], settings: list[Sampling],
                 stop_ids: set[int]) -> list[Rollout]:
    """Sample one answer per prompt (see the module); stops a row at a token of `stop_ids`."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stop_ids))
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator().manual_seed(s.seed) for s in settings]
    rollouts = [Rollout() for _ in prompts]
    done = [False] * len(prompts)
    pieces: dict[int, str] = {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        step_position = position[:, -1:] + 1
        for _ in range(max(s.max_tokens for s in settings)):
            chosen = []
            for i, s in enumerate(settings):
                if done[i]:
                    chosen.append(pad)
                    continue
                token = pick(logits[i], s, generators[i])
                _record(rollouts[i], token, logits[i], s.top_logprobs, tokenizer, pieces)
                if token in stop_ids:
                    done[i], rollouts[i].finish_reason = True, "stop"
                elif len(rollouts[i].ids) >= s.max_tokens:
                    done[i] = True
                chosen.append(token)
            if all(done):
                break
            mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=torch.long)], dim=-1)
            out = model(input_ids=torch.tensor(chosen).unsqueeze(-1), attention_mask=mask,
                        position_ids=step_position, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1, :]
            step_position = step_position + 1
    return rollouts


def _record(rollout: Rollout, token: int, logits: Any, k: int, tokenizer: Any,
            pieces: dict[int, str]) -> None:
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    top = []
    if k:
        values, indices = logp.topk(k)
        top = [{"token": _piece(tokenizer, int(i), pieces), "id": int(i), "logprob": float(v)}
               for v, i in zip(values, indices, strict=True)]
    rollout.ids.append(token)
    rollout.entries.append({"token": _piece(tokenizer, token, pieces), "id": token,
                            "logprob": float(logp[token]), "top_logprobs": top})


def _piece(tokenizer: Any, token: int, pieces: dict[int, str]) -> str:
    piece = pieces.get(token)
    if piece is None:
        piece = pieces[token] = tokenizer.decode([token])
    return piece
