"""`score()`: the Python API behind `synthgen score`, the teacher's log-probabilities of
stored answers as a corpus operation.

    stored answers (corpus WHERE ...) not scored yet by (teacher, K)
        ──> token ids (tokens.py: the prompt's rendering, the answer's own ids)
        ──> Engine(pending, teacher transport, ScoreWriter)
              teacher: ScoringTransport (a served teacher: vLLM's prompt_logprobs, or echo)
                       or LocalScorer (the teacher's weights in-process)
        ──> scores (store/scores.py): one row per (answer, teacher, K), exactly once

The engine is generation's own (retries, the shared pause on 429, concurrency, failover
across several URLs by the governor), driven directly: a scoring request is a `Request`
whose id is the score id, and the sink writes `scores`. Before anything is sent, what can
be checked is: an API that cannot score is refused naming the alternatives, a teacher
whose tokenizer is not the answers' is refused, and so are stored ids of another
vocabulary. Silent unless asked, like `generate()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..backends.scoring import (
    FORMS,
    ScoringTransport,
    ScoringUnsupported,
    alternatives,
    refuse_hosted,
    score_request,
)
from ..engine.core import Engine, raise_if_aborted
from ..engine.governor import Governor
from ..engine.limiter import ConcurrencyLimit
from ..engine.progress import report
from ..engine.quota import LearnedRate
from ..errors import ConfigError, ScoringError, TeacherFault
from ..store import connect
from ..store.scores import ScoreMeta, ScoreWriter, check_where, counts, pending_answers, score_id
from ..types import Request, Stats
from .local import LOCAL_CONCURRENCY, LocalScorer, load_local
from .tokens import PROBE, Tokens, chat_ids, check_served, check_stored_ids, same_tokenizer

LOCAL = "local"
# The local scorer can give the whole vocabulary of a small model; servers cap K themselves
# (vLLM at --max-logprobs, 20 by default) and refuse more with a clear 400.
MAX_K = 1000


@dataclass
class ScoreConfig:
    """What `synthgen score` takes."""

    db: str
    teacher: list[str] = field(default_factory=lambda: [LOCAL])  # "local", or one URL per replica
    where: str | None = None  # a condition on corpus's columns; None: every stored answer
    k: int = 20  # top-K alternatives per position (0: only each token's own logprob)
    model: str | None = None  # the served model's name (default: the server's only one)
    teacher_model: str | None = None  # local: an HF dir or .gguf (default: the bundled teacher)
    tokenizer: str | None = None  # the tokenizer answers and teacher share (default: the local teacher's)
    form: str | None = None  # prompt_logprobs | echo (default: whichever the server answers)
    concurrency: int | None = None  # default 16 served, 2 local
    timeout: float = 600.0
    max_attempts: int = 5
    retry_failed: bool = False
    api_key_env: str = "OPENAI_API_KEY"

    def check(self) -> ScoreConfig:
        if not 0 <= self.k <= MAX_K:
            raise ConfigError(f"--logprobs must be between 0 and {MAX_K}, got {self.k}")
        if isinstance(self.teacher, str):
            self.teacher = [self.teacher]
        if not self.teacher:
            raise ConfigError("--teacher is required: a served teacher's URL, or `local`")
        if LOCAL in self.teacher and len(self.teacher) > 1:
            raise ConfigError("--teacher local scores in this process: give it alone, not beside URLs")
        for url in self.teacher:
            if url != LOCAL and not url.startswith(("http://", "https://")):
                raise ConfigError(f"--teacher {url!r}: expected `local` or an http(s) URL of an "
                                  "OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)")
        if self.form is not None and self.form not in FORMS:
            raise ConfigError(f"--form {self.form!r}: expected one of {', '.join(FORMS)}")
        if self.where is not None and ";" in self.where:
            raise ConfigError("--where takes one condition on corpus's columns, without ';'")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        return self

    @property
    def local(self) -> bool:
        return self.teacher == [LOCAL]


@dataclass
class ScoreSummary:
    """What a scoring run did; `pending` > 0 means running it again resumes."""

    teacher: str
    k: int
    status: str = "done"  # done | interrupted | aborted | nothing_to_do
    selected: int = 0  # answers the selection holds
    already_scored: int = 0
    scored: int = 0  # by this run
    failed: int = 0
    pending: int = 0
    no_text: int = 0  # selected answers without text (tool calls, refusals): not scorable
    tokens: int = 0  # answer tokens this run had scored
    prompt_tokens: int = 0  # prompt + answer tokens the teacher read (prefill)
    elapsed: float = 0.0
    form: str | None = None
    message: str | None = None


@dataclass
class _Teacher:
    """The scoring side of a run: who sends, under which name, with which tokenizer."""

    senders: list[Any]
    name: str  # scores.teacher, part of every score id
    tokens: Tokens
    tokenizer_name: str
    form: str | None = None  # the HTTP form of a served teacher


@dataclass
class _Watch:
    """Who asked to hear about the run (see `score`)."""

    stream: TextIO | None = None
    interval: float | None = None
    callback: Callable[[Stats], None] | None = None


def score(config: ScoreConfig | None = None, /, *, progress: TextIO | None = None,
          progress_interval: float | None = None, on_progress: Callable[[Stats], None] | None = None,
          local_scorer: LocalScorer | None = None, **options: Any) -> ScoreSummary:
    """Score the selected stored answers with the teacher; store each result once.

    Pass a ScoreConfig or its fields as keywords: ``score(db="c.duckdb", teacher="local")``.
    Nothing is printed: `progress` (a text stream) gets a plain line every
    `progress_interval` seconds, `on_progress` the live Stats. `local_scorer` is an
    already loaded LocalScorer (the distill loop loads its teacher once)."""
    from ..student.log import quiet  # requires the [train] extra: transformers tokenizes

    cfg = (config or ScoreConfig(**options)).check()
    watch = _Watch(progress, progress_interval, on_progress)
    with quiet():  # transformers' progress bars and warnings stay off the terminal
        return asyncio.run(_score(cfg, watch, local_scorer))


async def _score(cfg: ScoreConfig, watch: _Watch, scorer: LocalScorer | None) -> ScoreSummary:
    async with contextlib.AsyncExitStack() as stack:
        if cfg.local:
            scorer = scorer or await asyncio.to_thread(load_local, cfg.teacher_model)
            if cfg.tokenizer is not None:
                same_tokenizer(_load_tokenizer(cfg.tokenizer), scorer.tokenizer, "the local teacher")
            teacher = _Teacher([scorer], scorer.name, Tokens(scorer.tokenizer), cfg.tokenizer or scorer.name)
        else:
            teacher = await _served_teacher(cfg, stack)
        return await _run(cfg, teacher, watch)


def check_teacher(config: ScoreConfig) -> str:
    """The checks `score` makes of a served teacher before it sends anything (a hosted API
    that cannot score, a server that answers neither form, a tokenizer that is not
    `config.tokenizer`'s), made on their own: `synthgen distill` runs them before its first
    rollout, so a teacher it could not use is refused before the student samples anything.
    Returns the served model's name. A local teacher is checked where it is loaded."""
    from ..student.log import quiet

    cfg = config.check()
    if cfg.local:
        raise ConfigError("check_teacher checks a served teacher; a local one is checked as it loads")

    async def checked() -> str:
        async with contextlib.AsyncExitStack() as stack:
            return (await _served_teacher(cfg, stack)).name

    with quiet():
        return asyncio.run(checked())


def _load_tokenizer(spec: str | None) -> Any:
    """A tokenizer from an HF directory or .gguf (the model's own), or the bundled teacher's."""
    from ..student.presets import teacher_tokenizer
    from ..student.reference import dequantized, teacher_path

    if spec is None:
        return teacher_tokenizer()
    from transformers import AutoTokenizer

    path = teacher_path(spec)
    return AutoTokenizer.from_pretrained(str(dequantized(path) if path.suffix == ".gguf" else path))


async def _served_teacher(cfg: ScoreConfig, stack: contextlib.AsyncExitStack) -> _Teacher:
    """A served teacher after every check that can be made before sending an answer."""
    for url in cfg.teacher:
        refuse_hosted(url)
    name = cfg.tokenizer or cfg.teacher_model or "of the bundled teacher"
    tokens = Tokens(await asyncio.to_thread(_load_tokenizer, cfg.tokenizer or cfg.teacher_model))
    return await _served(cfg, _Teacher([], "", tokens, name), stack)


async def _served(cfg: ScoreConfig, teacher: _Teacher, stack: contextlib.AsyncExitStack) -> _Teacher:
    """Transports for the served teacher, after its checks: model name, tokenizer, form."""
    key = os.environ.get(cfg.api_key_env) or None
    first = await stack.enter_async_context(
        ScoringTransport(cfg.teacher[0], cfg.model or "", key, cfg.timeout))
    model = cfg.model
    if model is None:
        try:
            served = await first.list_models(timeout=30)
        except TeacherFault as fault:
            raise ScoringError(f"--teacher {first.endpoint}: {fault.message}") from None
        if not served or len(served) != 1:
            raise ConfigError(f"--teacher {first.endpoint} serves {served or 'no listed model'}: "
                              "name the one to score with --model")
        model = served[0]
    first.model_name = model
    probe = teacher.tokens.prompt_ids(PROBE)
    try:
        check_served(probe, await first.tokenize_chat(PROBE), first.endpoint, teacher.tokenizer_name)
        form = cfg.form or await _form(cfg, first, probe)
    except TeacherFault as fault:
        raise ScoringError(f"--teacher {first.endpoint}: {fault.message}") from None
    first.form = form
    teacher.senders, teacher.name, teacher.form = [first], model, form
    for url in cfg.teacher[1:]:
        teacher.senders.append(await stack.enter_async_context(
            ScoringTransport(url, model, key, cfg.timeout, form)))
    return teacher


async def _form(cfg: ScoreConfig, transport: ScoringTransport, probe: list[int]) -> str:
    """The first form the server answers (prompt_logprobs, then echo), tried on the probe."""
    reasons = []
    answer, prompt = probe[-3:], probe[:-3]
    for form in FORMS:
        transport.form = form
        reason = await transport.can_score(prompt, answer, min(cfg.k, 5))
        if reason is None:
            return form
        reasons.append(f"{form}: {reason}")
    raise ScoringUnsupported(f"--teacher {transport.endpoint}: {'; '.join(reasons)}. "
                             + alternatives("This server"))


def _left(c: dict[str, int], retry_failed: bool) -> int:
    """Selected answers still to score (failed ones count as settled unless retried)."""
    return c["selected"] - c["no_text"] - c["scored"] - (0 if retry_failed else c["failed"])


async def _run(cfg: ScoreConfig, teacher: _Teacher, watch: _Watch) -> ScoreSummary:
    summary = ScoreSummary(teacher=teacher.name, k=cfg.k, form=teacher.form)
    started = time.monotonic()
    con = connect(cfg.db)  # DuckDB's own memory limit: a scoring run is not a million-row plan
    try:
        check_where(con, cfg.where)
        before = counts(con, cfg.where, teacher.name, cfg.k)
        summary.selected, summary.no_text = before["selected"], before["no_text"]
        summary.already_scored = before["scored"]
        sample = next(pending_answers(con, cfg.where, teacher.name, cfg.k, cfg.retry_failed, rows=50), [])
        check_stored_ids(sample, teacher.tokens, teacher.tokenizer_name)
        if _left(before, cfg.retry_failed) <= 0:
            summary.status = "nothing_to_do"
        else:
            await _send(con, cfg, teacher, watch, summary, _left(before, cfg.retry_failed))
        summary.pending = _left(counts(con, cfg.where, teacher.name, cfg.k), cfg.retry_failed)
    finally:
        with contextlib.suppress(Exception):
            con.close()
    summary.elapsed = time.monotonic() - started
    return summary


async def _send(con: Any, cfg: ScoreConfig, teacher: _Teacher, watch: _Watch, summary: ScoreSummary,
                todo: int) -> None:
    """The engine over the pending answers, the ScoreWriter as its sink."""
    stats = Stats(total=todo)
    jobs: dict[str, ScoreMeta] = {}
    limit = ConcurrencyLimit(cfg.concurrency or (LOCAL_CONCURRENCY if cfg.local else 16))
    parts = {"learned": LearnedRate()}  # a pace learned from 429s, as generate has
    senders = teacher.senders
    governor = Governor.with_health(senders, **parts) if len(senders) > 1 else Governor(senders, **parts)
    writer = ScoreWriter(con.cursor(), jobs).start()
    rows = pending_answers(con, cfg.where, teacher.name, cfg.k, cfg.retry_failed)
    engine = Engine(_requests(rows, teacher.tokens, teacher.name, cfg.k, jobs),
                    _WithIds(governor, teacher.tokens), writer, limit=limit, stats=stats,
                    max_attempts=cfg.max_attempts)
    reporter = asyncio.create_task(report(stats, watch.stream, watch.interval, watch.callback))
    try:
        await engine.run()
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        await governor.aclose()
        writer.close()
    reason = engine.stop_reason
    summary.status = "done" if reason is None else "interrupted" if reason == "interrupted" else "aborted"
    summary.message = reason if summary.status == "aborted" else None
    summary.scored, summary.failed = writer.committed, writer.committed_failures
    summary.tokens, summary.prompt_tokens = writer.committed_tokens, stats.prompt_tokens
    raise_if_aborted(engine)


class _WithIds:
    """The teacher's answers with every alternative's id filled in (an `echo` server may
    report them as text): what the store keeps is always ids."""

    def __init__(self, sender: Any, tokens: Tokens):
        self.sender, self.tokens = sender, tokens

    async def send(self, request: Request) -> Any:
        answer = await self.sender.send(request)
        if answer.logprobs:
            self.tokens.fill_ids(answer.logprobs)
        return answer


def _requests(rows: Iterator[list[Any]], tokens: Tokens, teacher: str, k: int,
              jobs: dict[str, ScoreMeta]) -> Iterator[list[Request]]:
    """Pending answers as scoring Requests (read on the engine's reader thread)."""
    for batch in rows:
        out = []
        for row in batch:
            prompt = tokens.prompt_ids(row.messages)
            answer = tokens.answer_ids(row)
            sid = score_id(row.request_id, teacher, k)
            jobs[sid] = ScoreMeta(row.request_id, teacher, k, len(prompt))
            out.append(score_request(sid, prompt, answer, k))
        if out:
            yield out


__all__ = ["LOCAL", "ScoreConfig", "ScoreSummary", "chat_ids", "check_teacher", "score"]
