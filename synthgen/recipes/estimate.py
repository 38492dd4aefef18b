"""`synthgen run RECIPE --dry-run [--pilot N]`: what a recipe's first generating stage would
send and cost, before anything is sent.

Only that stage can be estimated: every later stage makes its requests from the rows of
the stages before it (`FROM evolved`), which a dry run does not answer, so its size is not
known yet. Each later stage is listed with that reason rather than a guessed figure. The
first stage is planned into the store as the real recipe run plans it (same plan key), so
the run reuses the plan, and a pilot's answers are the run's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import store
from ..estimate import Estimate, estimate
from .runner import _config, _input_sql
from .spec import Recipe, Stage


@dataclass
class StageEstimate:
    stage: Stage
    estimate: Estimate | None = None
    why_not: str = ""  # why a stage has no estimate


def estimate_recipe(recipe: Recipe, db: str | Path, options: dict[str, Any] | None = None,
                    pilot: int = 0, **reporting: Any) -> list[StageEstimate]:
    """One StageEstimate per stage of `recipe`: the first generating stage's estimate (with
    a pilot of `pilot` requests where given), and why each other stage has none."""
    base = {k: v for k, v in (options or {}).items() if v is not None}
    out: list[StageEstimate] = []
    estimated: Stage | None = None
    for stage in recipe.stages:
        if not stage.generates:
            out.append(StageEstimate(stage, why_not="filters stored rows: sends nothing"))
            continue
        if estimated is not None:
            out.append(StageEstimate(stage, why_not=f"its requests are made from the rows of earlier "
                                                    f"stages ({estimated.name} first), which a dry run "
                                                    "does not answer"))
            continue
        con = store.connect(db)
        try:
            input_sql, _ = _input_sql(con, stage)
        finally:
            con.close()
        cfg = _config(stage, Path(db), base, input_sql)
        out.append(StageEstimate(stage, estimate(cfg, pilot, stage.template, **reporting)))
        estimated = stage
    return out
