"""Before a single prompt is sent: is each teacher reachable, does it take the key, does it
serve the model? One `GET /models` per endpoint through the openai SDK.

A wrong model name on a vLLM or llama.cpp server makes every request a 404, which would
file a million prompts under failures; a bad key would do the same with 401s. Both are
caught here in a second, with a message that says what to fix.
"""

from __future__ import annotations

import logging

from .config import strip_credentials
from .errors import RunAborted

log = logging.getLogger("synthgen")


def check_teachers(base_urls: list[str], api_key: str | None, model: str, timeout: float = 15.0) -> list[str]:
    """Return the endpoints that answered; raise RunAborted when none can be used.

    Endpoints without a `/models` route (some proxies) are trusted as they are.
    Warnings for endpoints that are down are returned, so the caller can print them.
    """
    import openai  # imported here: it costs every `synthgen` process seconds otherwise

    warnings: list[str] = []
    usable = 0
    for url in base_urls:
        shown = strip_credentials(url)
        client = openai.OpenAI(base_url=url, api_key=api_key or "unused", timeout=timeout, max_retries=1)
        try:
            served = [m.id for m in client.models.list()]
        except openai.AuthenticationError as exc:
            raise RunAborted(f"{shown} refused the API key (HTTP {exc.status_code}); check the API key "
                             "or --api-key-env") from None
        except openai.PermissionDeniedError as exc:
            raise RunAborted(f"{shown} denied access (HTTP {exc.status_code}); check the API key") from None
        except (openai.NotFoundError, openai.UnprocessableEntityError, openai.BadRequestError):
            usable += 1  # no /models route: nothing to check
            continue
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            warnings.append(f"{shown} is unreachable ({type(exc).__name__})")
            continue
        except openai.APIStatusError as exc:
            warnings.append(f"{shown} answered HTTP {exc.status_code} to GET /models")
            usable += 1  # a 5xx now may pass; the engine's retries deal with it
            continue
        finally:
            client.close()
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
