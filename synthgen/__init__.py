"""synthgen: build distillation corpora from any OpenAI-compatible teacher into DuckDB.

    import synthgen
    summary = synthgen.generate(input="prompts.jsonl", db="corpus.duckdb",
                                model="gpt-4o-mini", base_urls=["https://api.openai.com/v1"])
    con = synthgen.open_store("corpus.duckdb")
    con.sql("SELECT messages, response FROM corpus LIMIT 5").show()

Names are imported on first use (PEP 562), so `synthgen sql` never loads aiohttp or the engine.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    InputError,
    RunAborted,
    StoreError,
    SynthgenError,
    TeacherError,
)

# The library never prints: what it logs goes nowhere unless the application (the CLI,
# or yours) adds a handler; without this, Python would print warnings to stderr.
logging.getLogger("synthgen").addHandler(logging.NullHandler())

_LAZY = {
    "Answer": "synthgen.types",
    "Engine": "synthgen.engine.core",
    "GenerateConfig": "synthgen.config",
    "MockTransport": "synthgen.backends.mock",
    "Request": "synthgen.types",
    "RunSummary": "synthgen.run",
    "Stats": "synthgen.types",
    "Transport": "synthgen.backends.base",
    "generate": "synthgen.run",
    "export": "synthgen.store.export",
    "to_dataset": "synthgen.store.dataset",
    "status": "synthgen.store.status",
    "open_store": "synthgen.store",
    "load_recipe": "synthgen.recipes",
    "find_recipe": "synthgen.recipes",
    "run_recipe": "synthgen.recipes",
}

if TYPE_CHECKING:
    from .backends.base import Transport
    from .backends.mock import MockTransport
    from .config import GenerateConfig
    from .engine.core import Engine
    from .recipes import find_recipe, load_recipe, run_recipe
    from .run import RunSummary, generate
    from .store import open_store
    from .store.dataset import to_dataset
    from .store.export import export
    from .store.status import status
    from .types import Answer, Request, Stats

__all__ = [
    "Answer",
    "ConfigError",
    "Engine",
    "GenerateConfig",
    "InputError",
    "MockTransport",
    "Request",
    "RunAborted",
    "RunSummary",
    "Stats",
    "StoreError",
    "SynthgenError",
    "TeacherError",
    "Transport",
    "export",
    "find_recipe",
    "generate",
    "load_recipe",
    "open_store",
    "run_recipe",
    "status",
    "to_dataset",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synthgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
