"""Which backends `--api NAME` can name: the built-in ones, and any package's.

A package adds a backend with an entry point in the `synthgen.backends` group naming a
`base.Backend` object; it is found without any change here:

    [project.entry-points."synthgen.backends"]
    mycloud = "mycloud_synthgen:BACKEND"

A built-in backend is one module with a `BACKEND`, and one line below.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from ..errors import ConfigError
from .base import Backend

GROUP = "synthgen.backends"
BUILT_IN = {
    "openai": "synthgen.backends.openai",  # OpenAI and every OpenAI-compatible server
    "anthropic": "synthgen.backends.anthropic",
}


@cache
def _plugins() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    return sorted({*BUILT_IN, *_plugins()})


@cache
def get(name: str) -> Backend:
    """The backend named `name`; ConfigError naming the ones there are."""
    if name in BUILT_IN:
        backend = importlib.import_module(BUILT_IN[name]).BACKEND
    elif name in _plugins():
        try:
            backend = _plugins()[name].load()  # type: ignore[attr-defined]
        except Exception as exc:  # a broken plugin is the plugin's, said as such
            raise ConfigError(f"--api {name}: its entry point in {GROUP!r} failed to load "
                              f"({type(exc).__name__}: {exc})") from None
    else:
        raise ConfigError(f"--api {name}: no such backend (there are: {', '.join(names())}; "
                          f"a package adds one through the {GROUP!r} entry point group)")
    if not isinstance(backend, Backend):
        raise ConfigError(f"--api {name}: its entry point gives {type(backend).__name__}, not a "
                          "synthgen.backends.base.Backend")
    return backend
