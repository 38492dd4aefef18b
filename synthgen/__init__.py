"""synthgen: build distillation corpora from any OpenAI-compatible teacher into DuckDB.

    import synthgen
    summary = synthgen.generate(input="prompts.jsonl", db="corpus.duckdb",
                                model="gpt-4o-mini", base_urls=["https://api.openai.com/v1"])
    con = synthgen.open_store("corpus.duckdb")
    con.sql("SELECT messages, response FROM corpus LIMIT 5").show()
"""

from .config import GenerateConfig
from .errors import (
    ConfigError,
    InputError,
    RunAborted,
    StoreError,
    SynthgenError,
    TeacherError,
)
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
