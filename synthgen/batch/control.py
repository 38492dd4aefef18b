"""`synthgen batch status` and `synthgen batch cancel`: what is in flight, and stopping it.

Both read the store the usual way, so they work while a `generate --batch` run holds it
(through its live socket). Cancelling asks the API to cancel every open batch; the run
that polls them (now or the next one) sees "cancelling", stores what the batches did
answer, submits nothing new, and leaves the rest pending. Cancel is its own small path
over the same client, not a flag of a run (curator #613: a cancel routed through the
run's own entry point broke on an argument it did not take).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import store
from ..backends.openai_batch import BatchClient, BatchInfo
from ..errors import StoreError, TeacherFault
from ..store.status import status as run_status
from . import records


def batch_status(db: str | Path) -> dict[str, Any]:
    """Every batch of the store, and the batch runs' tokens and cost."""
    con = store.connect(db, read_only=True)
    try:
        batches = records.list_batches(con)
    finally:
        con.close()
    runs = [r for r in run_status(db) if r.get("batch")]
    costs = [r["cost"] for r in runs if r["cost"] is not None]
    return {
        "batches": batches,
        "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in runs),
        "completion_tokens": sum(r["completion_tokens"] or 0 for r in runs),
        "cost": sum(costs) if costs else None,
    }


@dataclass
class Cancelled:
    batch_key: str
    batch_id: str | None
    status: str | None = None  # what the API says now
    error: str | None = None  # why it could not be cancelled


async def cancel_batches(db: str | Path, api_key: str | None, base_url: str | None = None
                         ) -> tuple[list[Cancelled], bool]:
    """Cancel every open batch of the store at its endpoint (or `base_url`); returns what
    each became, and whether the store recorded it (False while a run holds it: that run
    records it at its next poll)."""
    con = store.connect(db, read_only=True)
    try:
        rows = records.open_batches(con)
    finally:
        con.close()
    out: list[Cancelled] = []
    infos: dict[str, BatchInfo] = {}
    for row in rows:
        if row.state == "preparing":
            continue  # nothing of it reached the API; the next run forgets it
        result = Cancelled(row.batch_key, row.batch_id)
        async with BatchClient(base_url or row.endpoint, api_key) as client:
            try:
                batch_id = row.batch_id
                if batch_id is None:  # uploaded; created just before a kill, perhaps
                    assert row.input_file_id is not None
                    found = await client.find(row.input_file_id, row.batch_key)
                    batch_id = found.id if found is not None else None
                    result.batch_id = batch_id
                if batch_id is None:
                    result.error = "never created at the API (nothing runs)"
                else:
                    info = await client.cancel(batch_id)
                    infos[row.batch_key] = info
                    result.status = info.status
            except TeacherFault as exc:
                result.error = exc.message
        out.append(result)
    return out, _record(db, infos)


def _record(db: str | Path, infos: dict[str, BatchInfo]) -> bool:
    if not infos:
        return True
    try:
        con = store.connect(db)
    except StoreError:
        return False  # a run holds the store: it sees the cancellation when it polls
    try:
        for key, info in infos.items():
            records.set_status(con, key, info)
        return True
    finally:
        con.close()
