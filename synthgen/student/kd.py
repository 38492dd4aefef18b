"""Token-level distillation from the teacher's top-K logprobs.

The corpus stores, for each generated token, the teacher's K most likely tokens with
their log-probabilities. The rest of the vocabulary is unknown token by token, but its
total mass is known: r = 1 - sum_k p_k. So both distributions are compared over K + 1
buckets, the K tokens and one tail bucket:

    p_t = (p_1, ..., p_K, r)                         teacher
    p_s = (q_1, ..., q_K, 1 - sum_k q_k)             student, q = softmax(z / T)
    KD  = T^2 * sum_b p_t[b] * (log p_t[b] - log p_s[b])

The same buckets serve reverse KL and GKD's generalized JSD (`bucket_divergence`).

Bucketing can only lower a KL (it is a coarser view of the same two distributions), so
this is a lower bound of the full KL, and equal to it when K covers the vocabulary.

Temperature T > 1 softens both sides (Hinton et al.); the T^2 factor keeps gradient
sizes comparable across T. The teacher's top-K are tempered exactly (p_k^(1/T),
renormalized); the tail is tempered as one bucket, r^(1/T), which is exact when the tail
is empty (K = vocabulary) or T = 1, and an approximation otherwise.
"""

from __future__ import annotations

from typing import Any

# Tail mass below this is rounding in the stored logprobs (servers round to ~1e-6), not
# probability: treated as an empty tail.
TAIL_EPS = 1e-6
# A finite stand-in for log(0): exp() of it is exactly 0 in float32, and unlike -inf it
# never turns 0 * log(0) into NaN in the forward or backward pass.
FLOOR = -1e4
KD_LOSSES = ("forward", "reverse", "jsd")


def teacher_buckets(topk_logprobs: Any, valid: Any, temperature: Any = 1.0) -> Any:
    """Teacher log-probabilities over the K + 1 buckets, tempered and normalized.

    topk_logprobs: [N, K] at temperature 1; valid: [N, K] bool (False = padding);
    temperature: a number, or [N, 1] (one per position).
    """
    import torch

    # float64: the tail is 1 minus a sum that is close to 1, and rounding noise there
    # would be amplified by the tempering r^(1/T).
    topk_logprobs = topk_logprobs.double()
    neg_inf = torch.finfo(topk_logprobs.dtype).min
    lp = torch.where(valid, topk_logprobs, torch.full_like(topk_logprobs, neg_inf))
    covered = torch.where(valid, lp.exp(), torch.zeros_like(lp)).sum(-1)
    tail = (1.0 - covered).clamp(min=0.0)
    has_tail = tail > TAIL_EPS
    tail_lp = torch.where(has_tail, tail.clamp(min=TAIL_EPS).log(), torch.full_like(tail, neg_inf))
    buckets = torch.cat([lp, tail_lp.unsqueeze(-1)], dim=-1) / temperature
    mask = torch.cat([valid, has_tail.unsqueeze(-1)], dim=-1)
    buckets = torch.where(mask, buckets, torch.full_like(buckets, neg_inf))
    return torch.log_softmax(buckets, dim=-1), mask


def student_buckets(logits: Any, topk_ids: Any, valid: Any, temperature: float = 1.0) -> Any:
    """Student log-probabilities over the same K + 1 buckets (logits: [N, V])."""
    import torch

    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    ids = topk_ids.clamp(min=0)
    picked = logp.gather(-1, ids)
    hit = torch.zeros_like(logp).scatter_add(-1, ids, valid.to(logp.dtype)) > 0
    # A large finite fill, not -inf: when K covers the vocabulary the tail is empty, and a
    # logsumexp over only -inf would put NaN into the backward pass.
    tail = torch.logsumexp(logp.masked_fill(hit, -1e4), dim=-1)
    return torch.cat([picked, tail.unsqueeze(-1)], dim=-1)


def _floor_empty_tail(t_logp: Any, t_mask: Any) -> tuple[Any, Any]:
    """Give an empty teacher tail TAIL_EPS of mass (after tempering), renormalized.

    Reverse KL and JSD weigh buckets by the student's mass: a student tail next to a
    teacher tail of exactly 0 would cost log(0) = infinity. The teacher's stored top-K
    only shows the tail is below the servers' rounding, so TAIL_EPS is what it may hold.
    """
    import math

    import torch

    tail = t_logp[..., -1]
    empty = ~t_mask[..., -1]
    floored = torch.where(empty, torch.full_like(tail, math.log(TAIL_EPS)), tail)
    t_logp = torch.cat([t_logp[..., :-1], floored.unsqueeze(-1)], dim=-1)
    t_mask = torch.cat([t_mask[..., :-1], torch.ones_like(empty).unsqueeze(-1)], dim=-1)
    neg_inf = torch.finfo(t_logp.dtype).min
    return torch.log_softmax(torch.where(t_mask, t_logp, torch.full_like(t_logp, neg_inf)), -1), t_mask


def bucket_divergence(
    t_logp: Any, s_logp: Any, mask: Any, kind: str = "forward", beta: float = 0.5
) -> Any:
    """Per-position divergence between two distributions over the same buckets.

    forward  KL(teacher || student): mass-covering, Hinton-style KD (the default)
    reverse  KL(student || teacher): mode-seeking (MiniLLM, GKD with beta = 1)
    jsd      GKD's generalized Jensen-Shannon divergence (Agarwal et al. 2024, eq. 1):
             beta * KL(T || M) + (1 - beta) * KL(S || M), M = beta * T + (1 - beta) * S;
             beta -> 0 is forward KL's shape, beta -> 1 reverse KL's (as TRL's GKDTrainer)
    Buckets outside `mask` hold no mass on either side and are left out.
    """
    import math

    import torch

    t = torch.where(mask, t_logp, torch.full_like(t_logp, FLOOR))
    s = torch.where(mask, s_logp, torch.full_like(s_logp, FLOOR))
    if kind == "forward":
        terms = t.exp() * (t - s)
    elif kind == "reverse":
        terms = s.exp() * (s - t)
    elif kind == "jsd":
        m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log1p(-beta)]), dim=0)
        terms = beta * t.exp() * (t - m) + (1 - beta) * s.exp() * (s - m)
    else:
        raise ValueError(f"unknown divergence {kind!r}: expected one of {', '.join(KD_LOSSES)}")
    return torch.where(mask, terms, torch.zeros_like(terms)).sum(-1)


def sparse_kd_loss(
    logits: Any,
    topk_ids: Any,
    topk_logprobs: Any,
    temperature: float = 1.0,
    kind: str = "forward",
    beta: float = 0.5,
    stored_temperature: Any = None,
) -> Any:
    """Mean over positions of T^2 * divergence(teacher, student) on top-K + tail buckets.

    logits: [N, V] student logits at the positions that predict the teacher's tokens;
    topk_ids: [N, K] teacher token ids, -1 where a slot is empty; topk_logprobs: [N, K];
    kind: forward | reverse | jsd (see bucket_divergence), beta: the JSD's mixture weight;
    stored_temperature: [N], the temperature each position's teacher logprobs are at (1,
    the default, for raw ones). A processed distribution at T_s is softmax(z / T_s), so
    dividing its log-probabilities by T / T_s gives softmax(z / T): both sides are then
    compared at T. Exact on the top-K; the tail bucket is tempered as one token, as for
    raw logprobs.
    """
    import torch

    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    valid = topk_ids >= 0
    teacher_t: Any = temperature
    if stored_temperature is not None:
        teacher_t = (temperature / stored_temperature.double()).unsqueeze(-1)
    t_logp, t_mask = teacher_buckets(topk_logprobs.float(), valid, teacher_t)
    s_logp = student_buckets(logits, topk_ids, valid, temperature)
    t_logp = t_logp.to(s_logp.dtype)
    if kind == "forward":
        # Buckets the teacher gives no mass add nothing to KL(T || S), whatever the student has.
        mask = t_mask & (t_logp.exp() > 0)
    else:
        t_logp, t_mask = _floor_empty_tail(t_logp, t_mask)
        tail = torch.ones_like(valid[..., :1])
        mask = torch.cat([valid, tail], dim=-1)  # every bucket either side can hold mass
    return bucket_divergence(t_logp, s_logp, mask, kind, beta).mean() * temperature**2
