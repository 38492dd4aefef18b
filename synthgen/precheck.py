"""What `generate()` checks before it starts a teacher or creates a store.

    check(spec, template, model) -> Checked
        the input file is there and every line of it is valid (plan.check_rows, the
        planner's own rules), unless the store planned this very file already (its lines
        were checked then); and whether the store has answered all of that plan, so a
        finished store is not served again

Starting the bundled teacher takes seconds, and a store opened for a run is a file left
behind: `generate --input missing.jsonl` must fail before either, a file with a bad line
likewise, and `synthgen demo` run again on a finished store must not start a teacher to
send nothing. Against a teacher that is already up (a base URL) only the file's presence
is checked here: its lines are read once, by the planner, with the run's signal handling.
An input query (`--input-sql`) runs on the store itself, so it is checked where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import store
from .errors import StoreError
from .ids import PlanSpec, fingerprint, plan_key, require_input
from .inputs import read_rows
from .plan import check_rows
from .store.plans import has_plan, plan_counts

if TYPE_CHECKING:
    from .inputs.templates import Template


@dataclass
class Checked:
    """What the check found: the file's content hash and the requests its valid lines
    make (the planner need not read it again), and whether nothing is left to send."""

    fingerprint: str | None = None
    expected: int | None = None
    finished: bool = False

    @property
    def validated(self) -> tuple[str, int] | None:
        """For `Planner(checked=...)`: the file validated here, by its hash."""
        if self.fingerprint is None or self.expected is None:
            return None
        return self.fingerprint, self.expected


def check(spec: PlanSpec, template: Template | None, model: Callable[[], str | None] | None,
          should_stop: Callable[[], bool] = lambda: False) -> Checked | None:
    """Check the input file of `spec` (a run's planning part). With `model` (a run that would
    start the bundled teacher: the name it serves, asked once the file is found; it is part
    of every request id), also every line and whether the store has answered them all.
    Raises ConfigError (no such file) or InputError (bad lines); None when `should_stop`
    said so (a signal)."""
    if spec.input is None or spec.given_plan is not None:
        return Checked()
    require_input(spec)  # ConfigError: "input: x.jsonl: no such file"
    if model is None:  # a teacher that is already up: the planner reads the lines, once
        return Checked()
    spec = spec.with_model(model())
    found, _ = fingerprint(spec)
    planned, finished = _in_store(spec, found, template)
    if planned:
        return Checked(found, finished=finished)
    expected = check_rows(read_rows(spec.input, None), spec, template, should_stop)
    return None if expected is None else Checked(found, expected)


def _in_store(spec: PlanSpec, found: str, template: Template | None) -> tuple[bool, bool]:
    """(the store holds this plan, nothing of it is left to send). A store that cannot be
    read now (locked by a run, damaged) is for the run itself to say so."""
    if not spec.model or not spec.db.is_file():
        return False, False
    key = plan_key(spec, found, template)
    try:
        con = store.connect(spec.db, read_only=True)
    except StoreError:
        return False, False
    try:
        if isinstance(con, store.LiveConnection):
            return False, False
        if not has_plan(con, key):
            return False, False
        counts = plan_counts(con, key)
        left = counts["pending"] + (counts["failed"] if spec.retry_failed else 0)
        return True, left == 0
    finally:
        con.close()
