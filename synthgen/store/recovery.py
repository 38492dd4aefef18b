"""Answers that were paid for but could not be committed (a full disk): saved to a file,
stored first by the next run.

The file goes beside the store when it can, else to a directory on another filesystem
(the temp dir, then the user cache): the disk that refused the store may refuse it too.
Its name carries a hash of the store's real path, so the next run of the same store finds
it wherever it went. Each line is one answer or failure with its run id; storing them
uses the writer's own INSERTs, so an answer already stored is never stored twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson

from .. import coerce
from ..types import Answer, Failure, Wasted
from .commit import by_kind, commit_safely

SUFFIX = ".unsaved.jsonl"


def _tag(db: str | Path) -> str:
    return hashlib.blake2b(str(Path(db).resolve()).encode(), digest_size=8).hexdigest()


def places(db: str | Path) -> list[Path]:
    """Where recovery files of `db` may be, in the order they are tried."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthgen" / "recovery"
    return [Path(db).resolve().parent, Path(tempfile.gettempdir()), cache]


def save(db: str | Path, run_id: int, answers: list[tuple], failures: list[Failure],
         wasted: list[Wasted] | None = None) -> Path:
    """Write them to the first place that takes the whole file; raise the last OSError."""
    lines = [orjson.dumps({"run_id": run_id, "answer": [rid, k, _answer(a), lat, att]}) + b"\n"
             for rid, k, a, lat, att in answers]
    lines += [orjson.dumps({"run_id": run_id, "failure": _failure(f)}) + b"\n" for f in failures]
    lines += [orjson.dumps({"run_id": run_id, "wasted": [w.request_id, w.key, w.error_type,
                                                         _answer(w.answer)]}) + b"\n"
              for w in wasted or []]
    error: OSError | None = None
    name = f"{Path(db).name}.{_tag(db)}.run{run_id}-{os.getpid()}-{time.time_ns()}{SUFFIX}"
    for place in places(db):
        path = place / name
        try:
            place.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as fh:
                fh.writelines(lines)
                fh.flush()
                os.fsync(fh.fileno())
            return path
        except OSError as exc:
            error = exc
            with contextlib.suppress(OSError):
                path.unlink()  # a part of it is no use: the whole file goes elsewhere
    assert error is not None
    raise error


def found(db: str | Path) -> list[Path]:
    pattern = f"{Path(db).name}.{_tag(db)}.run*{SUFFIX}"
    return sorted({p for place in places(db) if place.is_dir() for p in place.glob(pattern)})


def restore(con: duckdb.DuckDBPyConnection, db: str | Path) -> int:
    """Store what recovery files of `db` hold, then delete them; return how many rows.

    Whatever a file holds (a count of "x" an older synthgen saved, a field a newer one
    added, a line cut short), what can be stored is: each record is coerced on the way in
    (synthgen.coerce) and committed with `commit_safely`, so a bad value costs that row,
    never the file. Only the database failing (a full disk) leaves the file for next time."""
    total = 0
    for path in found(db):
        by_run: dict[int, list] = {}
        for record in _records(path):
            parsed = _outcome(record)
            if parsed is not None:
                by_run.setdefault(parsed[0], []).append(parsed[1])
        for run_id, outcomes in by_run.items():
            answers, failures, wasted = by_kind(outcomes)
            commit_safely(con, run_id, answers, failures, wasted=wasted)
            total += len(answers) + len(failures)
        path.unlink()
    return total


def _outcome(record: Any) -> tuple[int, tuple | Failure | Wasted] | None:
    """One saved line -> (run id, an answer row, a Failure or a Wasted), its fields coerced;
    None for a line that holds none of them (nothing in it can be stored)."""
    if type(record) is not dict or coerce.count(record.get("run_id")) is None:
        return None
    run_id = coerce.count(record["run_id"])
    item = record.get("wasted")
    if (type(item) is list and len(item) == 4 and type(item[0]) is str and type(item[1]) is str
            and type(item[3]) is dict):
        return run_id, Wasted(item[0], item[1], coerce.label(item[2]) or "error", _answer_of(item[3]))
    item = record.get("answer")
    if type(item) is list and len(item) == 5 and type(item[0]) is str and type(item[2]) is dict:
        rid, k, fields, latency, attempts = item
        answer = _answer_of(fields)
        return run_id, (rid, coerce.count(k) or 0, answer,
                        float(latency) if type(latency) in (int, float) else 0.0,
                        coerce.count(attempts) or 1)
    item = record.get("failure")
    if type(item) is dict and type(item.get("request_id")) is str and type(item.get("messages")) is str:
        return run_id, Failure(item["request_id"], item["messages"],
                               coerce.label(item.get("error_type")) or "error",
                               coerce.status(item.get("status_code")),
                               coerce.message(item.get("message") or "", 2000),
                               coerce.count(item.get("attempts")) or 1)
    return None


def _answer_of(fields: dict) -> Answer:
    known = {f: fields.get(f) for f in Answer.__slots__ if f != "quota_pause"}
    if type(known["text"]) is not str:
        known["text"] = None
    return coerce.answer(Answer(**{**known, "endpoint": known["endpoint"] or ""}))


def _records(path: Path) -> Iterator[Any]:
    with open(path, "rb") as fh:
        for line in fh:
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut short by the full disk: that answer is sent again


def _answer(a: Answer) -> dict:
    return {k: getattr(a, k) for k in Answer.__slots__ if k != "quota_pause"}


def _failure(f: Failure) -> dict:
    return {k: getattr(f, k) for k in Failure.__slots__}
