"""TRL's SFTTrainer with the KD term, a collator that carries the teacher's top-K, and a
progress line with loss and tokens/s.

Plain SFT goes through SFTTrainer's own loss unchanged; only batches that carry teacher
targets take the KD path, which computes (1 - w) * CE + w * KD on the same logits.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from .kd import sparse_kd_loss
from .log import echo_or_log
from .render import IGNORE


class Collator:
    """Pads input_ids/labels with TRL's collator; adds [B, T, K] teacher ids and logprobs
    (id -1 where a position has no target) when the examples carry them."""

    def __init__(self, pad_token_id: int, kd: bool):
        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)
        self.kd = kd
        self.tokens = 0  # non-padding tokens seen, for tokens/s

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        self.tokens += int(batch["attention_mask"].sum())
        if not self.kd:
            return batch
        b, t = batch["input_ids"].shape
        k = max((len(ids) for e in examples for ids in e["kd_ids"]), default=1)
        ids = torch.full((b, t, k), -1, dtype=torch.long)
        lps = torch.zeros((b, t, k), dtype=torch.float32)
        for i, e in enumerate(examples):
            for pos, pid, plp in zip(e["kd_pos"], e["kd_ids"], e["kd_lps"], strict=True):
                if pos < t:
                    ids[i, pos, : len(pid)] = torch.tensor(pid)
                    lps[i, pos, : len(plp)] = torch.tensor(plp)
        batch["kd_ids"], batch["kd_lps"] = ids, lps
        # each example's stored temperature (1: raw logprobs), per position below
        batch["kd_t"] = torch.tensor([float(e.get("kd_t", 1.0)) for e in examples])
        return batch


class KDTrainer(SFTTrainer):
    """SFTTrainer whose loss mixes cross-entropy with sparse KL to the teacher's top-K."""

    def __init__(
        self,
        *args: Any,
        kd_weight: float = 0.5,
        temperature: float = 1.0,
        kd_loss: str = "forward",
        jsd_beta: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.kd_weight = kd_weight
        self.temperature = temperature
        self.kd_loss = kd_loss
        self.jsd_beta = jsd_beta

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        kd_ids = inputs.pop("kd_ids", None)
        kd_lps = inputs.pop("kd_lps", None)
        kd_t = inputs.pop("kd_t", None)
        if kd_ids is None or self.kd_weight == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if model.training else "eval"
        labels = inputs["labels"]
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        # Position p predicts token p + 1: shift like the model's own loss does.
        logits = outputs.logits[:, :-1].float()
        target = labels[:, 1:]
        ids, lps = kd_ids[:, 1:], kd_lps[:, 1:]
        trained = target != IGNORE
        ce = torch.nn.functional.cross_entropy(logits[trained], target[trained])
        has_kd = trained & (ids >= 0).any(-1)
        loss = ce
        if bool(has_kd.any()):
            stored = None if kd_t is None else kd_t[:, None].expand(target.shape)[has_kd]
            kd = sparse_kd_loss(
                logits[has_kd], ids[has_kd], lps[has_kd], self.temperature, self.kd_loss, self.jsd_beta,
                stored_temperature=stored,
            )
            loss = (1 - self.kd_weight) * ce + self.kd_weight * kd
            self._metrics[mode]["kd_loss"].append(float(kd.detach()))
        self._metrics[mode]["ce_loss"].append(float(ce.detach()))
        with torch.no_grad():
            correct = (logits[trained].argmax(-1) == target[trained]).float().mean()
        self._metrics[mode]["mean_token_accuracy"].append(float(correct))
        if mode == "train":
            self._total_train_tokens += int(inputs["attention_mask"].sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss


class Progress(TrainerCallback):
    """One line per logging step on stderr: step, loss, tokens/s, elapsed."""

    def __init__(self, collator: Collator, echo: Any = None):
        self.collator = collator
        self.echo = echo_or_log(echo)
        self.history: list[dict[str, float]] = []
        self._t0 = self._last_t = time.perf_counter()
        self._last_tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = self._last_t = time.perf_counter()
        self._last_tokens = self.collator.tokens

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        tps = (self.collator.tokens - self._last_tokens) / max(now - self._last_t, 1e-9)
        self._last_t, self._last_tokens = now, self.collator.tokens
        entry = {"step": state.global_step, "loss": float(logs["loss"]), "tokens_per_s": tps}
        for key in ("ce_loss", "kd_loss", "mean_token_accuracy"):
            if key in logs:
                entry[key] = float(logs[key])
        self.history.append(entry)
        extra = "".join(
            f"  {name} {entry[key]:.3f}"
            for key, name in (("ce_loss", "ce"), ("kd_loss", "kd"))
            if key in entry
        )
        self.echo(
            f"step {state.global_step}/{state.max_steps}  loss {entry['loss']:.4f}{extra}  "
            f"{tps:,.0f} tok/s  {now - self._t0:.0f}s"
        )
