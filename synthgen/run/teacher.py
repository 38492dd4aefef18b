"""The teacher a run talks to when it is given none: the bundled one, started for the run
(recipes start it once for all their stages) and stopped when the run ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("synthgen")


def local_model() -> str:
    """The name the bundled teacher serves (part of every request id sent to it)."""
    from ..teacher.local import MODEL_NAME

    return MODEL_NAME


@contextlib.contextmanager
def teacher_settings(base_urls: list[str], threads: int | None = None,
                     concurrency_given: bool = False) -> Iterator[dict[str, Any]]:
    """The settings that point a run at its teacher: none when `base_urls` are given;
    else the bundled local teacher is started (and stopped when the block ends), and
    these are its URL, its model name, its logprobs' mode (raw) and, unless one was given,
    a concurrency that suits it (64 requests queued on 4 CPU slots only slow Ctrl-C down)."""
    if base_urls:
        yield {}
        return
    from ..teacher import start_teacher

    with start_teacher("local", threads=threads, announce=log.info) as teacher:
        # llama.cpp's server reports the model's own (raw, temperature-1) probabilities.
        update: dict[str, Any] = {"base_urls": teacher.base_urls, "model": teacher.model,
                                  "logprobs_mode": "raw"}
        if not concurrency_given and teacher.concurrency_hint:
            update["concurrency"] = teacher.concurrency_hint
        yield update
