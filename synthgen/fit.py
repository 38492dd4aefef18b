"""Does an answer fit the run's schema? `AnswerSchema(schema).parse(answer)` gives the
parsed object, or raises `SchemaMismatch` (a retryable fault, kind 'schema') saying why.

One check for every way an answer arrives: online through `SchemaCheck`, a transport
wrapped around the governor, and from Batch API output files (batch/ingest.py, which
finds each request's schema in its stored params). A misfit is sent again as a new
attempt (another sample); one that never fits within --max-attempts ends in `failures`
with error_type 'schema' and the validator's message. An answer max_tokens cut is
retried only --length-retries times, and never where sampling is deterministic (it
would be cut the same way): error_type 'length'. Every misfit was paid for, so the fault
carries the answer and its usage is stored (`wasted_attempts`). Online the check sits outside the
governor on purpose: an answer of the wrong shape says nothing about the endpoint's
health or the rate limits.

Servers that constrain decoding to the schema (backends/structured.py) rarely miss, but
a truncated answer (max_tokens), a server that ignores the field, or a refusal would.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import CutShort, LengthCut, SchemaMismatch, TeacherFault
from .types import Answer, Request

if TYPE_CHECKING:
    from .backends.base import Transport

SHOWN_CHARS = 80
SHOWN_ERRORS = 3


def validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for `schema` (its own $schema draft, else 2020-12), with
    format checks. Raises jsonschema's SchemaError when `schema` is not a valid schema."""
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def load_schema(value: Any) -> dict[str, Any] | None:
    """A response schema from a JSON file's path, a pydantic model class or a dict,
    checked to be a valid JSON Schema; ValueError names the file and what is wrong."""
    if value is None:
        return None
    where = "the schema"
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        value = value.model_json_schema()  # a pydantic model
    elif isinstance(value, str | Path):
        where = str(value)
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the schema file ({exc.strerror})") from None
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: a JSON Schema is an object, got {type(value).__name__}")
    from jsonschema.exceptions import SchemaError

    try:
        validator(value)
    except SchemaError as exc:
        at = "/".join(str(p) for p in exc.path) or "the top level"
        raise ValueError(f"{where}: not a valid JSON Schema at {at}: {exc.message}") from None
    return value


class AnswerSchema:
    def __init__(self, schema: dict[str, Any]):
        self.validator = validator(schema)

    @classmethod
    @functools.lru_cache(maxsize=64)
    def of_text(cls, schema_json: str) -> AnswerSchema:
        """The check of a schema stored as JSON text (a request's params), built once."""
        return cls(orjson.loads(schema_json))

    def parse(self, answer: Answer) -> Any:
        """The answer's object, or SchemaMismatch saying why it is not one."""
        if answer.text is None:
            what = "a refusal" if answer.refusal else "tool calls"
            raise SchemaMismatch(f"the answer is {what}, not JSON")
        try:
            obj = orjson.loads(answer.text)
        except orjson.JSONDecodeError as exc:
            cut = " (cut by max_tokens)" if answer.finish_reason == "length" else ""
            raise SchemaMismatch(f"the answer is not JSON{cut}: {exc}; it begins "
                                 f"{answer.text[:SHOWN_CHARS]!r}") from None
        errors = sorted(self.validator.iter_errors(obj), key=lambda e: e.json_path)
        if errors:
            said = "; ".join(f"at {e.json_path if e.path else 'the top level'}: {_short(e.message)}"
                             for e in errors[:SHOWN_ERRORS])
            more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
            raise SchemaMismatch(f"the answer does not fit the schema {said}{more}")
        return obj


class SchemaCheck:
    """A transport whose answers must fit `schema`: the inner transport's, checked."""

    def __init__(self, inner: Transport, schema: dict[str, Any]):
        self.inner = inner
        self.schema = AnswerSchema(schema)

    async def send(self, request: Request) -> Answer:
        answer = await self.inner.send(request)
        try:
            answer.json = self.schema.parse(answer)
        except SchemaMismatch as misfit:
            raise paid_misfit(misfit, answer, request.params) from None
        return answer


def paid_misfit(misfit: SchemaMismatch, answer: Answer, params: str) -> TeacherFault:
    """The fault for a misfit answer, carrying the answer (it was paid for). One that
    max_tokens cut is a `LengthCut`, retried only --length-retries times; where sampling is
    deterministic (temperature 0, or a seed) it is `CutShort`: the same request would be cut
    the same way again, and paid again, so it fails now with a hint."""
    fault: TeacherFault = misfit
    if answer.finish_reason == "length":
        sampling = orjson.loads(params) if params else {}
        budget = sampling.get("max_tokens") or sampling.get("max_completion_tokens")
        hint = (f"max_tokens ({budget}) cut the answer before it fit the schema; raise max_tokens"
                if budget else "max_tokens cut the answer before it fit the schema; raise max_tokens")
        if sampling.get("temperature") == 0 or sampling.get("seed") is not None:
            fault = CutShort(f"{hint} (not retried: at temperature 0 or with a seed another "
                             f"attempt is cut the same way): {misfit.message}")
        else:
            fault = LengthCut(f"{hint}: {misfit.message}")
    fault.paid = answer
    return fault


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
