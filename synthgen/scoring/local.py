"""The local scorer: the teacher's weights in-process with transformers.

For the CPU path: llama.cpp's server cannot score given tokens, so `--teacher local` loads
the teacher itself (the bundled one's GGUF, dequantized once into a plain Hugging Face
directory by student/reference.py, or `--teacher-model DIR|FILE.gguf`) and runs one
forward pass per answer over prompt + answer ids. Position p's logits predict token p + 1,
so answer token j is scored by the logits at len(prompt) + j - 1: the same span vLLM's
`prompt_logprobs` returns, from the model's own (raw, temperature-1) distribution.

It is a transport like any other (`send(Request) -> Answer`), so the engine drives it; one
forward pass runs at a time (torch already uses every core for one), in a worker thread
so the event loop and the store's writer keep going. No padding, no batching: a score does
not depend on which other answers were scored beside it, so a resumed run stores exactly
what an uninterrupted one would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ..backends.scoring import unpack
from ..types import Answer, Request

LOCAL_CONCURRENCY = 2  # one scoring, one queued: the engine keeps the model busy, no more


class LocalScorer:
    """Scores with a loaded causal LM (float32, eval mode) and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.endpoint = f"local:{name}"
        # A thread lock, not an asyncio one: the distill loop reuses a scorer across runs
        # (event loops), and a forward pass holds it in a worker thread.
        self._lock = threading.Lock()
        self._pieces: dict[int, str] = {}
        self.busy_seconds = 0.0

    async def send(self, request: Request) -> Answer:
        prompt_ids, answer_ids, k = unpack(request)
        entries = await asyncio.to_thread(self._one_at_a_time, prompt_ids, answer_ids, k)
        return Answer(text=None, finish_reason="scored", prompt_tokens=len(prompt_ids) + len(answer_ids),
                      completion_tokens=0, model=self.name, logprobs=entries, endpoint=self.endpoint)

    def _one_at_a_time(self, prompt_ids: list[int], answer_ids: list[int], k: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.score_ids(prompt_ids, answer_ids, k)

    def score_ids(self, prompt_ids: list[int], answer_ids: list[int], k: int) -> list[dict[str, Any]]:
        """The store's logprobs entries for `answer_ids` after `prompt_ids` (see the module)."""
        import torch

        if not prompt_ids:
            raise ValueError("a scoring request needs at least one prompt token")
        t0 = time.perf_counter()
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0]
        start = len(prompt_ids) - 1
        logp = torch.log_softmax(logits[start:start + len(answer_ids)].float(), dim=-1)
        own = logp.gather(-1, torch.tensor(answer_ids).unsqueeze(-1)).squeeze(-1).tolist()
        top_lp, top_ids = logp.topk(min(k, logp.shape[-1]), dim=-1) if k else (None, None)
        out = []
        for j, tid in enumerate(answer_ids):
            top = [] if top_ids is None else [
                {"token": self.piece(i), "id": i, "logprob": lp}
                for i, lp in zip(top_ids[j].tolist(), top_lp[j].tolist(), strict=True)]
            out.append({"token": self.piece(tid), "id": tid, "logprob": own[j], "top_logprobs": top})
        self.busy_seconds += time.perf_counter() - t0
        return out

    def piece(self, token_id: int) -> str:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.tokenizer.decode([token_id])
        return piece


def load_local(teacher_model: str | None) -> LocalScorer:
    """The local teacher: `teacher_model` (an HF directory or .gguf) or the bundled one."""
    from ..student.presets import prepare_tokenizer
    from ..student.reference import load_teacher
    from ..teacher import LOCAL_MODEL_NAME

    loaded = load_teacher(teacher_model)
    prepare_tokenizer(loaded.tokenizer)
    return LocalScorer(loaded.model, loaded.tokenizer, local_name(teacher_model, LOCAL_MODEL_NAME))


def local_name(teacher_model: str | None, bundled: str) -> str:
    """The teacher's name in `scores.teacher` (part of every score id): transformers and
    what it loaded, so scores by a served copy of the same weights are kept apart."""
    from pathlib import Path

    return f"transformers:{bundled if teacher_model is None else Path(teacher_model).resolve()}"
