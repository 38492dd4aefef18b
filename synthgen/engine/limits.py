"""What a run tells the engine: how many requests at once, how hard to try each, and the
quotas to stay under. The engine's whole share of a run's configuration (config.py hands
it out as `GenerateConfig.limits`), so the engine knows no config and no flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .retry import LENGTH_RETRIES, RATE_LIMIT_WAIT


@dataclass(frozen=True)
class Limits:
    concurrency: int | Literal["auto"] = 64
    max_attempts: int = 5
    rate_limit_wait: float = RATE_LIMIT_WAIT  # seconds one request waits out 429s
    length_retries: int = LENGTH_RETRIES  # retries of an answer max_tokens cut (fit.py)
    rpm: float | None = None  # requests per minute (a token bucket)
    tpm: float | None = None  # tokens per minute
    model: str | None = None  # whose tokenizer counts a prompt's tokens for --tpm
    completion_budget: int | None = None  # the most tokens an answer may take, for --tpm
