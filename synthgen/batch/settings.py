"""What a run tells its Batch API runner: file limits, polling, attempts (the batch part
of a run's configuration, `GenerateConfig.batching`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    max_requests: int = 50_000  # per file (OpenAI's limit)
    max_bytes: int = 200_000_000  # per file
    poll_interval: float = 15.0  # first wait between polls (doubles)
    poll_max: float = 300.0  # longest wait between polls
    max_attempts: int = 5
    # Batches in a row that ended (expired) without running a single request before the
    # run stops: an API that never runs them would otherwise be resubmitted forever.
    max_idle_batches: int = 3
