"""How each server is asked for an answer in the shape of a JSON Schema: body format only.

The planner stores the schema in a request's canonical params under `response_schema` (as
JSON text, keeping the order of its properties: servers generate them in that order), so
the schema is part of the request id (another schema makes other requests, never the old
answers). What the wire carries depends on the server, and that is the backend's to say:

    openai     response_format: {type: json_schema, json_schema: {name, schema, strict}}
               (strict only where the schema is in OpenAI's strict subset: every object
               closed with additionalProperties false and all its properties required;
               vLLM and llama.cpp read this form too, so it is the default)
    vllm       structured_outputs: {json: schema}   (vLLM 0.10.2 on; guided_json before)
    llamacpp   json_schema: schema                  (llama.cpp's server, turned into a grammar)

Which server an endpoint is comes from its `GET /models` (`owned_by`), read by the
preflight. Whatever the server does, every answer is still validated (fit.py).
"""

from __future__ import annotations

from typing import Any

from ..types import SCHEMA_KEY

__all__ = ["SCHEMA_KEY", "dialect_for", "schema_fields", "strict_allowed"]
DIALECTS = ("openai", "vllm", "llamacpp")
SCHEMA_NAME = "response"


def dialect_for(owned_by: str | None) -> str:
    """The body format for a server that says it is `owned_by` (None: not said)."""
    owner = (owned_by or "").lower()
    if owner == "vllm":
        return "vllm"
    if owner in ("llamacpp", "llama.cpp", "llama-cpp"):
        return "llamacpp"
    return "openai"


def schema_fields(schema: dict[str, Any], dialect: str) -> dict[str, Any]:
    """The body fields that ask `dialect`'s server for answers that fit `schema`."""
    if dialect == "vllm":
        return {"structured_outputs": {"json": schema}}
    if dialect == "llamacpp":
        return {"json_schema": schema}
    return {"response_format": {"type": "json_schema", "json_schema": {
        "name": SCHEMA_NAME, "schema": schema, "strict": strict_allowed(schema)}}}


def strict_allowed(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts `schema`: every object schema must list all its
    properties as required and set additionalProperties to false. A schema outside that
    subset is sent with strict false (the server then guides without guaranteeing), since
    strict mode would refuse the request outright."""
    if isinstance(schema, list):
        return all(strict_allowed(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    props = schema.get("properties")
    is_object = schema.get("type") == "object" or props is not None
    if is_object:
        if schema.get("additionalProperties") is not False:
            return False
        if sorted(schema.get("required", [])) != sorted(props or {}):
            return False
    return all(strict_allowed(v) for k, v in schema.items()
               if isinstance(v, dict | list) and k not in ("enum", "const", "default", "examples"))
