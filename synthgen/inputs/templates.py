"""Prompt templates: `--template NAME` renders `prompts/NAME.*` with a row's fields.

Two forms, both Jinja2 in a sandbox (a corpus file is data, never code):

- `NAME.jinja` / `NAME.j2` / `NAME.txt`: the rendered text is one user message;
- `NAME.yaml`: a list of `{role, content}` whose contents are each rendered.

A variable the row lacks is an error that names it (StrictUndefined), never an empty string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigError
from .messages import ROLES, RenderError

TEXT_SUFFIXES = (".jinja", ".j2", ".txt")


class Template:
    """A compiled prompt template: `render(row)` returns an OpenAI messages list."""

    def __init__(self, name: str, path: Path | None, parts: list[tuple[str, Any]],
                 source: str | None = None):
        self.name = name
        self.path = path
        # what the plan key hashes: the file's text, or an inline template's own
        self.source = source if source is not None else path.read_text(encoding="utf-8")
        self._parts = parts

    def render(self, row: dict[str, Any]) -> list[dict[str, str]]:
        try:
            return [{"role": role, "content": tpl.render(row)} for role, tpl in self._parts]
        except UndefinedError as exc:
            raise RenderError(f"template {self.name!r}: {exc.message}") from None
        except TemplateError as exc:
            raise RenderError(f"template {self.name!r}: {exc}") from None


def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)


def inline_template(name: str, spec: Any, where: str) -> Template:
    """A template written in place (a recipe stage's `template:`): a string is one user
    message, a list of {role, content} is the messages. `where` (file:line) names it in
    errors."""
    import orjson

    env = _environment()
    try:
        if isinstance(spec, str):
            parts = [("user", env.from_string(spec.strip()))]
        elif isinstance(spec, list) and spec:
            parts = []
            for i, msg in enumerate(spec, 1):
                if not isinstance(msg, dict) or _role(msg) not in ROLES or not isinstance(
                        msg.get("content"), str):
                    raise ConfigError(f"{where}: template message {i} needs a role in {sorted(ROLES)} "
                                      "and a content string")
                parts.append((msg["role"], env.from_string(msg["content"])))
        else:
            raise ConfigError(f"{where}: a template is a string (one user message) or a list of "
                              "{role, content} messages")
    except TemplateError as exc:
        raise ConfigError(f"{where}: template syntax error: {exc}") from None
    return Template(name, None, parts, source=orjson.dumps(spec).decode())


def load_template(name: str, prompts_dir: Path) -> Template:
    env = _environment()
    candidates = [prompts_dir / f"{name}{s}" for s in (*TEXT_SUFFIXES, ".yaml", ".yml")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        available = sorted({p.stem for p in prompts_dir.glob("*") if p.is_file()})
        raise ConfigError(
            f"template {name!r} not found in {prompts_dir}/ (available: {', '.join(available) or 'none'})"
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in TEXT_SUFFIXES:
            return Template(name, path, [("user", env.from_string(text.strip()))])
        spec = yaml.safe_load(text)
        if not isinstance(spec, list) or not spec:
            raise ConfigError(f"{path}: expected a list of {{role, content}} messages")
        parts = []
        for i, msg in enumerate(spec, 1):
            if not isinstance(msg, dict) or _role(msg) not in ROLES or not isinstance(
                msg.get("content"), str
            ):
                raise ConfigError(f"{path}: message {i} needs a role in {sorted(ROLES)} and a content string")
            parts.append((msg["role"], env.from_string(msg["content"])))
        return Template(name, path, parts)
    except TemplateError as exc:
        raise ConfigError(f"{path}: template syntax error: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def _role(msg: dict) -> str | None:
    """A template message's role, if it is a string (a YAML list or mapping is no role)."""
    role = msg.get("role")
    return role if isinstance(role, str) else None
