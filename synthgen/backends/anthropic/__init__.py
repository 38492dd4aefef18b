"""Anthropic's API as one backend (`--api anthropic`): the Messages API (messages.py) and
its Message Batches (batches.py), with what the API cannot do refused before sending."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ..base import Backend


def _check(cfg: Any) -> list[str]:
    """What the Messages API cannot do, refused before anything is sent."""
    if cfg.logprobs is not None:
        raise ConfigError("--logprobs: Anthropic's API gives no log-probabilities; distil from its "
                          "text, or from an open teacher that gives them (vLLM, llama.cpp)")
    warnings = [] if cfg.seed is None else ["--seed: Anthropic's API has no seed; it is not sent"]
    if cfg.top_p is not None and cfg.temperature is not None and "top_p" in cfg.model_fields_set:
        warnings.append("--top-p: not sent beside --temperature (newer Claude models refuse both)")
    if cfg.response_schema is not None:
        warnings.append("--response-schema: the schema is not sent (the Messages API has no such "
                        "field): say in the prompt what JSON to write; every answer is validated "
                        "against it and one that does not fit is sent again, as with any teacher")
    return warnings


def _transport(base_url: str, model: str, api_key: str | None, timeout: float,
               options: dict[str, Any]) -> Any:
    from .messages import AnthropicTransport  # aiohttp: only a run that sends imports it

    return AnthropicTransport(base_url, model, api_key, timeout, bool(options.get("cache_prompt")))


def _batch(base_url: str, api_key: str | None, timeout: float) -> Any:
    from .batches import MessageBatches

    return MessageBatches(base_url, api_key, timeout)


BACKEND = Backend(name="anthropic", transport=_transport, batch=_batch, api_key_env="ANTHROPIC_API_KEY",
                  check=_check, describe="Anthropic's Messages API (and its Message Batches)",
                  base_url="https://api.anthropic.com/v1")
