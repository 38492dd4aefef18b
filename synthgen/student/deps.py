"""The `synthgen[train]` extra, imported only when a student command runs."""

from __future__ import annotations

import importlib.util

from ..errors import SynthgenError
from ..hints import pip_install

TRAIN_MODULES = ("torch", "transformers", "trl", "peft", "accelerate", "rouge_score")


class TrainExtraMissing(SynthgenError):
    """The student commands need packages the engine does not install."""


class StudentError(SynthgenError):
    """A student run cannot go on: bad data, a broken chat template, an unusable model."""


def require_train_extra() -> None:
    """Fail with one line naming the install command, before any import can traceback."""
    missing = [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise TrainExtraMissing(
            f"training needs {', '.join(missing)}: install them with: {pip_install('train')}"
        )
