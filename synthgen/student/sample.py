"""Student rollouts stored like any answer: `synthgen student sample`.

The student answers prompts in this process (transformers on the CPU), and the answers go
through generation's own path: the input is planned into requests with content-hashed
ids, the engine sends each pending one to a transport, the store's writer keeps each
answer once. The transport here is the student itself (`StudentSampler`): the engine's
requests in flight are gathered into batches for the forward passes (rollout.py), so
`--batch-size` answers are sampled together while every answer stays reproducible alone.

The request's model is the student's name, `student:LABEL@HASH` (HASH: of its weights), so
a rollout says which checkpoint wrote it (corpus.model), a new checkpoint makes new
requests, and running the same command again samples only what is not stored. Every
answer stores the id and the student's own raw log-probability of each token it sampled:
scoring then sends exactly those ids to the teacher. A served student (the GGUF export
under llama-server, or vLLM) needs nothing of this: `synthgen generate` against it.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..types import Answer, Request
from .deps import StudentError
from .rollout import Sampling, sample_batch

DEFAULT_MAX_TOKENS = 256  # SmolLM2-class students loop to the context length without a bound


class StudentSampler:
    """A transport whose answers the student samples; batches the requests in flight."""

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 8):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size = batch_size
        self.endpoint = f"local:{name}"
        self._waiting: list[tuple[Request, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        eos = getattr(model.generation_config, "eos_token_id", None)
        self.stop_ids = {tokenizer.eos_token_id} | set([eos] if isinstance(eos, int) else eos or [])
        self.stop_ids.discard(None)

    async def send(self, request: Request) -> Answer:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._batches())
        future: asyncio.Future = loop.create_future()
        self._waiting.append((request, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    async def _batches(self) -> None:
        """Take up to batch_size waiting requests, sample them in a thread, answer each."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.01)  # requests sent together arrive within a tick
            while self._waiting:
                batch = [(r, f) for r, f in self._waiting[: self.batch_size] if not f.done()]
                del self._waiting[: self.batch_size]
                if not batch:
                    continue
                try:
                    answers = await asyncio.to_thread(self.answer, [r for r, _ in batch])
                except Exception as exc:  # a bug: the engine stops on it
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for (_, f), a in zip(batch, answers, strict=True):
                    if not f.done():
                        f.set_result(a)

    def answer(self, requests: list[Request]) -> list[Answer]:
        """Sample one answer per request (called off the event loop)."""
        prompts, settings = [], []
        for r in requests:
            prompts.append(_prompt_ids(self.tokenizer, orjson.loads(r.messages)))
            settings.append(settings_of(r))
        rollouts = sample_batch(self.model, self.tokenizer, prompts, settings, self.stop_ids)
        out = []
        for prompt, roll in zip(prompts, rollouts, strict=True):
            text_ids = roll.ids[:-1] if roll.finish_reason == "stop" else roll.ids
            out.append(Answer(text=self.tokenizer.decode(text_ids), finish_reason=roll.finish_reason,
                              prompt_tokens=len(prompt), completion_tokens=len(roll.ids), model=self.name,
                              logprobs=roll.entries, endpoint=self.endpoint))
        return out


def settings_of(request: Request) -> Sampling:
    """A request's sampling parameters; its own random stream is seeded from its id (which
    hashes the model, the parameters with their seed, the prompt and the sample index)."""
    p = orjson.loads(request.params)
    temperature = p.get("temperature")
    return Sampling(seed=int(request.request_id[:15], 16),
                    max_tokens=int(p.get("max_tokens") or DEFAULT_MAX_TOKENS),
                    temperature=1.0 if temperature is None else float(temperature),
                    top_p=float(p.get("top_p") or 1.0), top_logprobs=int(p.get("top_logprobs") or 0))


def _prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    from ..scoring.tokens import chat_ids

    return chat_ids(tokenizer, messages)


def weights_hash(model_dir: Path) -> str:
    """A short hash of the checkpoint's weight files: the same weights, the same name."""
    h = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise StudentError(f"{model_dir}: no weights (*.safetensors) in this model directory")
    for f in files:
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:12]


def student_name(model_dir: str | Path, label: str | None = None) -> str:
    """`student:LABEL@HASH`: the requests' model, so each checkpoint's rollouts are its own."""
    path = Path(model_dir)
    return f"student:{label or path.resolve().name}@{weights_hash(path)}"


@dataclass
class SampleOptions:
    """How `sample()` samples; the rest of its keywords are generate()'s (input, n, ...)."""

    batch_size: int = 8
    threads: int | None = None
    label: str | None = None


def sample(model_dir: str | Path, db: str | Path, *, options: SampleOptions | None = None,
           progress: TextIO | None = None, progress_interval: float | None = None,
           **generate_options: Any) -> Any:
    """The student at `model_dir` answers the input's prompts into the store `db`.

    `generate_options` are generate()'s: input or input_sql, n, max_tokens (default 256),
    temperature (default 1), top_p, seed, logprobs (the student's own top-K, default 0),
    template, limit. Returns generate()'s RunSummary; nothing is printed.
    """
    from ..run import generate
    from .deps import require_train_extra
    from .log import quiet

    require_train_extra()
    opts = options or SampleOptions()
    if opts.batch_size < 1:
        raise StudentError("--batch-size must be at least 1")
    if generate_options.get("stop"):
        raise StudentError("the local student stops at its end-of-turn token; --stop is not supported")
    with quiet():
        sampler = load_sampler(model_dir, opts)
        generate_options.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        generate_options.setdefault("temperature", 1.0)
        generate_options.setdefault("logprobs", 0)
        return generate(db=db, model=sampler.name, logprobs_mode="raw", concurrency=2 * opts.batch_size,
                        transport=[sampler], progress=progress, progress_interval=progress_interval,
                        **generate_options)


def load_sampler(model_dir: str | Path, options: SampleOptions) -> StudentSampler:
    """The student at `model_dir` in eval mode, float32, ready to sample."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .presets import prepare_tokenizer

    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise StudentError(f"--model {model_dir}: not a model directory (no config.json); sample a "
                           "student written by `synthgen train` or `synthgen distill`")
    if options.threads:
        torch.set_num_threads(options.threads)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="float32").eval()
    return StudentSampler(model, tok, student_name(path, options.label), options.batch_size)
