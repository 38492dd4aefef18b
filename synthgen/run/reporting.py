"""Who asked to hear about a run, and how often: the library prints nothing on its own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from ..types import Stats

log = logging.getLogger("synthgen")


@dataclass
class Reporting:
    stream: TextIO | None = None  # plain progress lines, and warnings
    interval: float | None = None
    callback: Callable[[Stats], None] | None = None  # the live Stats, every interval
    retry_sleep: Any = None  # tests: a sleep that does not wait

    def warn(self, message: str) -> None:
        log.warning(message)
        if self.stream is not None:
            self.stream.write(f"warning: {message}\n")
