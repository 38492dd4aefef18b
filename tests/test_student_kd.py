"""The sparse KD loss against the exact KL when K covers the whole vocabulary."""

from __future__ import annotations

import pytest
import torch

from synthgen.student.kd import sparse_kd_loss

pytestmark = pytest.mark.train

V = 64


def exact_kl(student_logits, teacher_logprobs, temperature: float):
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over positions."""
    t = torch.log_softmax(teacher_logprobs / temperature, -1)
    s = torch.log_softmax(student_logits / temperature, -1)
    return (t.exp() * (t - s)).sum(-1).mean() * temperature**2


@pytest.fixture
def logits():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(6, V, generator=gen, requires_grad=True)
    teacher = torch.log_softmax(torch.randn(6, V, generator=gen) * 3, -1)
    return student, teacher


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0, 4.0])
def test_full_vocab_equals_exact_kl(logits, temperature: float) -> None:
    student, teacher = logits
    # Shuffled order: the loss must not depend on where each id sits among the K.
    ids = torch.stack([torch.randperm(V, generator=torch.Generator().manual_seed(i)) for i in range(6)])
    sparse = sparse_kd_loss(student, ids, teacher.gather(-1, ids), temperature)
    exact = exact_kl(student, teacher, temperature)
    assert torch.allclose(sparse, exact, atol=1e-5), (sparse.item(), exact.item())
    sparse.backward()
    grad_sparse = student.grad.clone()
    student.grad = None
    exact.backward()
    assert torch.allclose(grad_sparse, student.grad, atol=1e-5)


def test_top_k_plus_tail_is_a_lower_bound_and_zero_at_the_teacher(logits) -> None:
    student, teacher = logits
    top = teacher.topk(5, -1)
    sparse = sparse_kd_loss(student, top.indices, top.values, 1.0)
    assert 0 < sparse.item() < exact_kl(student, teacher, 1.0).item()
    # A student equal to the teacher has zero loss on the buckets too.
    assert sparse_kd_loss(teacher, top.indices, top.values, 1.0).item() == pytest.approx(0, abs=1e-5)


def test_empty_slots_are_ignored(logits) -> None:
    student, teacher = logits
    top = teacher.topk(3, -1)
    padded_ids = torch.cat([top.indices, torch.full((6, 2), -1)], -1)
    padded_lps = torch.cat([top.values, torch.zeros(6, 2)], -1)
    a = sparse_kd_loss(student, top.indices, top.values, 2.0)
    b = sparse_kd_loss(student, padded_ids, padded_lps, 2.0)
    assert torch.allclose(a, b)
    b.backward()
    assert torch.isfinite(student.grad).all()


def test_teacher_tokens_line_up_with_the_students_even_without_ids() -> None:
    import copy
    import random

    from test_student_support import fake_logprobs

    from synthgen.student.presets import teacher_tokenizer
    from synthgen.student.render import render
    from synthgen.student.rows import Row
    from synthgen.student.targets import Vocab, targets_for

    tok = teacher_tokenizer()
    answer = "Honey is sweet."
    row = Row("r", [{"role": "user", "content": "Honey?"}], answer)
    row.logprobs = fake_logprobs(tok, answer, random.Random(0))
    rendered = render(tok, row.conversation())
    vocab = Vocab(tok)
    with_ids = targets_for(row, rendered, vocab)
    assert len(with_ids.positions) == len(row.logprobs)
    # Each target sits at the position of the token it describes (the label there).
    assert [rendered.labels[p] for p in with_ids.positions] == [e["id"] for e in row.logprobs]
    no_ids = copy.deepcopy(row)
    for entry in no_ids.logprobs:
        entry["id"] = None
        for alt in entry["top_logprobs"]:
            alt["id"] = None
    assert targets_for(no_ids, rendered, vocab) == with_ids
    # llama.cpp reports the final end-of-turn with empty text: it targets <|im_end|>.
    eos = {"token": "", "id": tok.eos_token_id, "logprob": -0.1}
    ended = copy.deepcopy(row)
    ended.logprobs.append({**eos, "top_logprobs": [eos]})
    with_eos = targets_for(ended, rendered, vocab)
    assert with_eos.positions == [*with_ids.positions, rendered.turns[-1][1] - 1]
    assert with_eos.ids[-1] == [tok.eos_token_id]
    # A non-canonical split by the teacher ("H" + "oney") loses only those positions.
    split = copy.deepcopy(row)
    h, oney = tok.convert_tokens_to_ids(["H", "oney"])
    first = split.logprobs[0]
    split.logprobs[0:1] = [
        {**first, "token": "H", "id": h, "top_logprobs": [{"token": "H", "id": h, "logprob": -0.1}]},
        {**first, "token": "oney", "id": oney, "top_logprobs": []},
    ]
    partial = targets_for(split, rendered, vocab)
    assert partial.positions == with_ids.positions[1:]


def exact_divergence(student_logits, teacher_logprobs, temperature: float, kind: str, beta: float = 0.5):
    """T^2 * reverse KL or GKD's generalized JSD on the full vocabulary, from the definitions."""
    t = torch.log_softmax(teacher_logprobs / temperature, -1).exp()
    s = torch.log_softmax(student_logits / temperature, -1).exp()
    if kind == "reverse":
        value = (s * (s.log() - t.log())).sum(-1)
    else:
        m = beta * t + (1 - beta) * s
        value = beta * (t * (t.log() - m.log())).sum(-1) + (1 - beta) * (s * (s.log() - m.log())).sum(-1)
    return value.mean() * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize(("kind", "beta"), [("reverse", 0.5), ("jsd", 0.5), ("jsd", 0.1), ("jsd", 0.9)])
def test_reverse_kl_and_jsd_equal_the_exact_values_on_the_full_vocab(
    logits, kind: str, beta: float, temperature: float
) -> None:
    student, teacher = logits
    ids = torch.stack([torch.randperm(V, generator=torch.Generator().manual_seed(i)) for i in range(6)])
    sparse = sparse_kd_loss(student, ids, teacher.gather(-1, ids), temperature, kind, beta)
    exact = exact_divergence(student, teacher, temperature, kind, beta)
    assert torch.allclose(sparse, exact, atol=1e-5), (sparse.item(), exact.item())
    sparse.backward()
    grad_sparse = student.grad.clone()
    student.grad = None
    exact.backward()
    assert torch.allclose(grad_sparse, student.grad, atol=1e-5)


def test_the_divergences_differ_and_vanish_at_the_teacher(logits) -> None:
    student, teacher = logits
    top = teacher.topk(5, -1)
    values = {k: sparse_kd_loss(student, top.indices, top.values, 1.0, k).item() for k in KINDS}
    assert len({round(v, 4) for v in values.values()}) == 3 and all(v > 0 for v in values.values())
    for kind in KINDS:
        at_teacher = sparse_kd_loss(teacher, top.indices, top.values, 1.0, kind)
        assert at_teacher.item() == pytest.approx(0, abs=1e-4), kind


def test_reverse_kl_stays_finite_when_the_teacher_tail_is_empty() -> None:
    # The teacher's top-2 hold all its mass; the student puts mass elsewhere.
    student = torch.zeros(1, 8, requires_grad=True)
    ids = torch.tensor([[0, 1]])
    lps = torch.log(torch.tensor([[0.5, 0.5]]))
    loss = sparse_kd_loss(student, ids, lps, 1.0, "reverse")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert student.grad[0, 2:].gt(0).all()  # the student is pushed off the tokens the teacher excludes


KINDS = ("forward", "reverse", "jsd")


@pytest.mark.parametrize("kd_temperature", [1.0, 2.0])
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_processed_logprobs_are_tempered_from_their_own_temperature(logits, kind: str,
                                                                    kd_temperature: float) -> None:
    """A teacher whose server reported processed logprobs at T_s (softmax(z / T_s), vLLM's
    processed_logprobs) trains the student exactly as its raw logprobs would: per position,
    whatever mix of temperatures a batch holds."""
    student, teacher = logits  # teacher: raw log-probabilities, softmax(z)
    stored = torch.tensor([0.3, 0.7, 1.0, 1.5, 0.7, 2.0])
    processed = torch.log_softmax(teacher / stored[:, None], -1)
    ids = torch.arange(V).expand(6, V)
    raw = sparse_kd_loss(student, ids, teacher, kd_temperature, kind)
    tempered = sparse_kd_loss(student, ids, processed, kd_temperature, kind, stored_temperature=stored)
    assert torch.allclose(raw, tempered, atol=1e-5), (raw.item(), tempered.item())
    # Read as raw, the same processed logprobs would teach another distribution.
    misread = sparse_kd_loss(student, ids, processed, kd_temperature, kind)
    assert abs(misread.item() - raw.item()) > 1e-2
