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
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    InputError,
    RunAborted,
    StoreError,
    SynthgenError,
    TeacherError,
)

_LAZY = {
    "GenerateConfig": "synthgen.config",
    "RunSummary": "synthgen.run",
    "generate": "synthgen.run",
    "export": "synthgen.export",
    "status": "synthgen.status",
    "open_store": "synthgen.store",
}

if TYPE_CHECKING:
    from .config import GenerateConfig
    from .export import export
    from .run import RunSummary, generate
    from .status import status
    from .store import open_store

__all__ = [
    "ConfigError",
    "GenerateConfig",
    "InputError",
    "RunAborted",
    "RunSummary",
    "StoreError",
    "SynthgenError",
    "TeacherError",
    "export",
    "generate",
    "open_store",
    "status",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synthgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
