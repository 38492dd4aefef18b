"""Where the student's progress goes: the caller's callback, else the `synthgen.student`
logger. The library itself never writes to stdout or stderr; the CLI passes a callback
that prints to stderr.

The logger gets a NullHandler so that, in a program that never configures logging,
Python's last-resort handler does not print its warnings to stderr either.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("synthgen.student")
logger.addHandler(logging.NullHandler())

Echo = Callable[[str], None]


def echo_or_log(echo: Echo | None) -> Echo:
    """`echo` itself, or a function that sends each line to the logger at INFO."""
    return echo if echo is not None else logger.info


@contextmanager
def quiet() -> Iterator[None]:
    """Keep the libraries underneath from writing to the terminal while the student runs.

    transformers draws progress bars (saving a model draws one per shard) and prints its
    warnings through its own stderr handler; TRL and transformers also raise Python
    warnings, which Python prints to stderr. Inside this block the bars are off, the
    libraries' own loggers stay at errors, and every warning is passed on to our logger
    at WARNING instead; all of it is restored on the way out.
    """
    from .deps import require_train_extra

    require_train_extra()  # the clear one-line error, before any import can traceback
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # Reading a GGUF draws a raw tqdm bar that the switch above does not reach.
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    gguf_bar = gguf_utils.tqdm
    gguf_utils.tqdm = _no_bar
    quieted = {name: logging.getLogger(name) for name in THIRD_PARTY}
    levels = {name: lg.level for name, lg in quieted.items()}
    for lg in quieted.values():
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
        for w in caught:
            logger.warning("%s: %s", w.category.__name__, w.message)
    finally:
        for name, lg in quieted.items():
            lg.setLevel(levels[name])
        gguf_utils.tqdm = gguf_bar
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _no_bar(iterable: Any, *args: Any, **kwargs: Any) -> Any:
    return iterable


# Loggers of the stack that have no handler of their own: their warnings would reach
# stderr through Python's last-resort handler.
THIRD_PARTY = ("trl", "accelerate", "peft", "datasets", "torch")
