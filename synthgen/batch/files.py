"""Batch input files: request lines split so that no file exceeds the API's limits.

OpenAI takes at most 50,000 requests and 200 MB per file, and answers a larger upload with
413 (curator #610: files split by count alone ran to 564 MB). The splitter closes a file
before the line that would break either limit, so a file is never larger than allowed;
a single line larger than a whole file is set aside (it can never be sent as a batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


@dataclass
class BatchFile:
    """One finished file: where it is, the request ids of its lines in order, its bytes."""

    path: Path
    request_ids: list[str] = field(default_factory=list)
    size: int = 0


class Splitter:
    """Lines in, files out: `add` returns a file when the new line did not fit in it (the
    line starts the next file); `finish` returns the last one. Limits may be lowered
    between lines (after a 413 the run learns the server's real limit)."""

    def __init__(self, directory: Path, max_requests: int, max_bytes: int, prefix: str = "batch",
                 first: int = 1):
        self.directory = directory
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.oversized: list[str] = []  # request ids whose line alone exceeds max_bytes
        self._number = first
        self._current: BatchFile | None = None
        self._fh: BinaryIO | None = None

    def add(self, request_id: str, line: bytes) -> BatchFile | None:
        if len(line) > self.max_bytes:
            self.oversized.append(request_id)
            return None
        done = None
        cur = self._current
        if cur is not None and (len(cur.request_ids) >= self.max_requests
                                or cur.size + len(line) > self.max_bytes):
            done = self._close()
        if self._current is None:
            self._open()
        assert self._current is not None and self._fh is not None
        self._fh.write(line)
        self._current.request_ids.append(request_id)
        self._current.size += len(line)
        return done

    def finish(self) -> BatchFile | None:
        return self._close() if self._current is not None else None

    def discard(self) -> None:
        """Drop the file being filled (a run that stops halfway)."""
        if self._current is not None:
            path = self._current.path
            self._close()
            with contextlib.suppress(OSError):
                path.unlink()

    def _open(self) -> None:
        path = self.directory / f"{self.prefix}-{self._number:05d}.jsonl"
        self._number += 1
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by _close, across calls
        self._current = BatchFile(path)

    def _close(self) -> BatchFile:
        assert self._current is not None and self._fh is not None
        self._fh.close()
        done, self._current, self._fh = self._current, None, None
        return done


def read_lines(path: Path, chunk: int) -> Iterator[list[bytes]]:
    """A file's non-empty lines, `chunk` at a time (bounded memory at any file size)."""
    out: list[bytes] = []
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                out.append(line)
                if len(out) >= chunk:
                    yield out
                    out = []
    if out:
        yield out
