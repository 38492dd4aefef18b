"""Pruned students: the teacher with some of its decoder layers removed (`--student prune:K`).

A student cut from the teacher's own weights starts close to it and shares its tokenizer,
so the stored top-K logprobs line up on every position. Which K layers to keep:

    influence   ShortGPT's block influence (Men et al. 2024): for each layer, 1 - the
                cosine similarity between its input and output hidden states, averaged
                over the tokens of training rows. A layer that barely changes the residual
                stream scores near 0 and is the first to go. The default.
    even        K layers evenly spaced from the first to the last, a baseline.

The result is an ordinary Hugging Face model directory once saved: the config says K
layers, the kept layers keep their weights exactly, and each attention layer is
renumbered so the KV cache of transformers (and vLLM, llama.cpp after conversion) sees
layers 0..K-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .deps import StudentError
from .presets import Student

PRUNE_BY = ("influence", "even")
# Rows used to measure block influence: ~3,000 tokens of the demo corpus, enough for a
# stable ranking (ShortGPT calibrates on a few hundred sequences of a larger model), and
# about 30 s of teacher forward passes on 2 CPU cores.
INFLUENCE_ROWS = 32


@dataclass
class Pruning:
    """What was cut, recorded in synthgen_train.json so eval can rebuild the untrained student."""

    teacher: str
    layers: int
    kept: list[int]
    by: str
    influence: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_spec(spec: str) -> int | None:
    """K from 'prune:K'; None when `spec` is not a prune spec."""
    if not spec.startswith("prune:"):
        return None
    value = spec.split(":", 1)[1]
    if not value.isdigit() or int(value) < 1:
        raise StudentError(f"--student {spec!r}: K in prune:K must be a whole number of layers >= 1")
    return int(value)


def decoder_layers(model: Any) -> Any:
    """The model's list of decoder layers (Llama, Qwen, Mistral, SmolLM: model.model.layers)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise StudentError(
            f"cannot prune a {type(model).__name__}: expected decoder layers at model.model.layers"
        )
    return layers


def block_influence(model: Any, batches: Sequence[Any]) -> list[float]:
    """Per layer, 1 - mean cosine(input, output) over the tokens of `batches` (ShortGPT).

    `batches` are 1-row input_ids tensors; one forward pass each, no gradients.
    """
    import torch

    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    count = 0
    inputs: dict[int, Any] = {}

    def before(index: int):
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            inputs[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def after(index: int):
        def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(inputs.pop(index).float(), out.float(), dim=-1)
            sums[index] += float((1.0 - cos).sum())

        return hook

    # The decoder stack alone: the 49k-way output layer would cost a fifth of the time
    # and tell nothing about the layers.
    backbone = getattr(model, "model", model)
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(before(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(after(i), with_kwargs=True))
    try:
        with torch.no_grad():
            for ids in batches:
                backbone(input_ids=ids, use_cache=False)
                count += int(ids.numel())
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise StudentError("no tokens to measure block influence on")
    return [s / count for s in sums]


def choose_layers(n: int, k: int, by: str, influence: Sequence[float] | None = None) -> list[int]:
    """The K layer indices to keep, in model order."""
    if not 1 <= k < n:
        raise StudentError(
            f"--student prune:{k}: K must be between 1 and {n - 1} (the teacher has {n} layers)"
        )
    if by == "even":
        if k == 1:
            return [n - 1]
        return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
    if by == "influence":
        if influence is None or len(influence) != n:
            raise StudentError("block influence must be measured for every layer before choosing")
        ranked = sorted(range(n), key=lambda i: (-influence[i], i))
        return sorted(ranked[:k])
    raise StudentError(f"--prune-by {by!r}: expected one of {', '.join(PRUNE_BY)}")


def keep_layers(model: Any, kept: Sequence[int]) -> Any:
    """Drop every decoder layer not in `kept`, in place; renumber and fix the config."""
    import torch

    layers = decoder_layers(model)
    model.model.layers = torch.nn.ModuleList([layers[i] for i in kept])
    for new_index, layer in enumerate(model.model.layers):
        for module in (layer, getattr(layer, "self_attn", None)):
            if module is not None and hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in kept]
    config.num_hidden_layers = len(kept)
    return model


def pruned_student(
    teacher: Student, k: int, by: str, rows_ids: Sequence[Sequence[int]]
) -> tuple[Student, Pruning]:
    """Cut `teacher` to K layers chosen `by` influence (measured on `rows_ids`) or evenly."""
    import torch

    n = len(decoder_layers(teacher.model))
    choose_layers(n, k, "even")  # the range check, before any measuring
    influence = None
    if by == "influence":
        batches = [torch.tensor([list(ids)]) for ids in rows_ids[:INFLUENCE_ROWS]]
        influence = block_influence(teacher.model, batches)
    kept = choose_layers(n, k, by, influence)
    model = keep_layers(teacher.model, kept)
    model.train()
    pruning = Pruning(teacher=teacher.spec, layers=n, kept=kept, by=by, influence=influence)
    return Student(model, teacher.tokenizer, f"prune:{k}", "pruned"), pruning
