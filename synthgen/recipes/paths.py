"""Files a recipe names: found from the current directory, else from the recipe's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError


def resolve(value: Any, base: Path, what: str) -> Any:
    """The path(s) in `value`, absolute: as given where that exists, else under `base`
    (the recipe's folder). Absolute, so SQL and readers find them from anywhere."""
    if isinstance(value, list):
        return [resolve(v, base, what) for v in value]
    if value in (None, ""):
        return value
    given = Path(str(value)).expanduser()
    for candidate in (given, base / given):
        if candidate.is_file():
            resolved = str(candidate.resolve())
            if "'" in resolved:
                raise ConfigError(f"{what}: {resolved}: a path with a quote (') cannot be put in SQL; "
                                  "rename or move the file")
            return resolved
    raise ConfigError(f"{what}: {value}: no such file (looked in {Path.cwd()} and {base})")
