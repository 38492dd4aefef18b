"""OpenAI's API and every server that speaks it (vLLM, llama.cpp, SGLang, gateways):
the chat transport (http.py) and the Batch API (openai_batch.py)."""

from __future__ import annotations

from typing import Any

from .base import Backend


def _transport(base_url: str, model: str, api_key: str | None, timeout: float,
               options: dict[str, Any]) -> Any:
    from .http import HttpTransport

    return HttpTransport(base_url, model, api_key, timeout, **_think(options))


def _batch(base_url: str, api_key: str | None, timeout: float) -> Any:
    from .openai_batch import BatchClient

    return BatchClient(base_url, api_key, timeout)


def _think(options: dict[str, Any]) -> dict[str, Any]:
    """The inline reasoning tags to split (think.py), where the run says (its default otherwise)."""
    return {"think": options["think_tags"]} if "think_tags" in options else {}


BACKEND = Backend(name="openai", transport=_transport, batch=_batch, api_key_env="OPENAI_API_KEY",
                  describe="OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, gateways)")
