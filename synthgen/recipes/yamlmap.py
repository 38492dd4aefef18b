"""YAML that remembers where each key was written, so an error in a recipe can name its
file and line ("recipe.yaml:14: stage answers: max_tokens: ...") instead of a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


class Lined(dict):
    """A mapping from the YAML file: `line` is where it starts, `lines[key]` where each key is."""

    line: int = 0
    lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Lined:
    loader.flatten_mapping(node)
    out = Lined()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(f"line {key_node.start_mark.line + 1}: keys must be names, got {key!r}")
        if key in out:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path: Path) -> Any:
    """The YAML document in `path`; ConfigError naming the file and line when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: data only
    except ConfigError as exc:
        raise ConfigError(f"{path}:{str(exc).removeprefix('line ')}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def scalar(text: str) -> Any:
    """A `--set` value read as YAML reads a scalar (4 is a number, [a, b] a list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
