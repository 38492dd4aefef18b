"""Before a single prompt is sent: is each teacher reachable, does it take the key, does it
serve the model? One `GET /models` per endpoint, all at once, through the run's own
transports (the openai SDK cost 0.6 s of import and set-up on every run).

A wrong model name on a vLLM or llama.cpp server makes every request a 404, which would
file a million prompts under failures; a bad key would do the same with 401s. Both are
caught here in a moment, with a message that says what to fix. What a response means is
the transport's to say (by fault class); what to do about it is decided here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from ..errors import (
    AuthFault,
    ConnectionFault,
    EndpointRefused,
    Redirected,
    RunAborted,
    TeacherFault,
    TimeoutFault,
)

PREFLIGHT_TIMEOUT = 15.0


class ListsModels(Protocol):
    endpoint: str

    async def list_models(self, timeout: float | None = None) -> list[str] | None: ...


async def check_teachers(transports: Sequence[ListsModels], model: str) -> list[str]:
    """Return warnings for endpoints that are down; raise RunAborted when none can be used
    or one refuses the key or the model. Endpoints without a `/models` route (some
    proxies) are trusted as they are."""
    results = await asyncio.gather(*(_ask(t) for t in transports), return_exceptions=True)
    warnings: list[str] = []
    usable = 0
    for transport, result in zip(transports, results, strict=True):
        shown = transport.endpoint
        if isinstance(result, AuthFault):
            raise RunAborted(f"{shown} refused the request ({result.message}); check the API key "
                             "or --api-key-env")
        if isinstance(result, Redirected | EndpointRefused):
            raise RunAborted(f"{shown}: {result.message}")
        if isinstance(result, ConnectionFault | TimeoutFault):
            warnings.append(f"{shown} is unreachable ({type(result).__name__}: {result.message})")
            continue
        if isinstance(result, TeacherFault):
            warnings.append(f"{shown} answered {result.message} to GET /models")
            usable += 1  # a 5xx now may pass; the engine's retries deal with it
            continue
        if isinstance(result, BaseException):
            raise result
        served = result
        if served and model not in served:
            raise RunAborted(
                f"{shown} does not serve model {model!r} (it serves: {', '.join(served[:10])}"
                f"{', ...' if len(served) > 10 else ''}); pass one of these to --model, "
                "or --skip-preflight if the server routes names it does not list"
            )
        usable += 1
    if not usable:
        raise RunAborted("no teacher is reachable: " + "; ".join(warnings))
    return warnings


async def _ask(transport: ListsModels) -> list[str] | None:
    return await transport.list_models(timeout=PREFLIGHT_TIMEOUT)
