"""A run's plan through a Batch API: the same pending requests, the same body the online
transport sends (`transport.body`), answers stored by the same INSERTs (synthgen/batch/)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..engine.core import FETCH_ROWS
from ..engine.progress import report
from ..errors import RunAborted
from ..store import runs
from .session import Ended

if TYPE_CHECKING:
    from .session import Run


async def drive(run: Run, transport: Any, client: Any) -> Ended:
    """Every request settled, or why the run stopped (see BatchRunner.run): a stop other than
    a Ctrl-C or a cancelled batch is raised once the run's row is closed."""
    from ..batch.runner import BatchRunner  # with aiohttp: only a batch run needs it

    cfg, stats, planner = run.cfg, run.stats, run.planner
    assert planner is not None
    planner.start(stats)
    recorder = run.con.cursor()

    def should_stop() -> bool:
        if run.stop.is_set():
            planner.stop()
            return True
        return False

    def record() -> None:
        runs.record_counts(recorder, run.run_id, stats)

    runner = BatchRunner(run.con, client, lambda: planner.pending(cfg.retry_failed, FETCH_ROWS),
                         transport.body, run.run_id, planner.key, cfg.batching, stats,
                         should_stop=should_stop, on_progress=record)
    heard = run.reporting
    reporter = asyncio.create_task(report(stats, heard.stream, heard.interval, heard.callback))
    try:
        reason = await runner.run()
        stopped_early = reason not in (None, "interrupted", "cancelled")
        return Ended(reason, RunAborted(reason) if stopped_early else None)
    finally:
        planner.stop()
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        run.summary.batches_open = len(runner.open)
        run.summary.batches_submitted = runner.submitted
        recorder.close()
