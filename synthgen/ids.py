"""Content-hashed ids: a request's id is a hash of canonical JSON of (model, sampling
parameters, messages, sample index), and a plan's key one of (input, template, model,
parameters). The same content gives the same id in every run: that is resume and cache."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import ConfigError

if TYPE_CHECKING:
    from .inputs.templates import Template


@dataclass(frozen=True)
class PlanSpec:
    """What a plan is made of: the input, what each of its requests asks, and where it is
    stored (the planning part of a run's configuration, `GenerateConfig.planning`). The
    planner, the pre-start check and these ids read this, never the whole config."""

    db: Path
    model: str | None = None
    input: Path | None = None
    input_sql: str | None = None
    given_plan: str | None = None  # a shard's plan, written into its store by its driver
    limit: int | None = None
    skip_invalid: bool = False
    retry_failed: bool = False
    n: int = 1
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # what every request sends

    def request_params(self) -> dict[str, Any]:
        return dict(self.params)

    def with_model(self, model: str | None) -> PlanSpec:
        return dataclasses.replace(self, model=model)

_SORT = orjson.OPT_SORT_KEYS


def canonical(value: Any) -> bytes:
    """Sorted-key compact JSON: equal content gives equal bytes, so equal ids."""
    return orjson.dumps(value, option=_SORT, default=str)


def request_id(model: str, params_json: bytes, messages_json: bytes, sample_index: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(model.encode())
    h.update(b"\x00")
    h.update(params_json)
    h.update(b"\x00")
    h.update(messages_json)
    h.update(b"\x00%d" % sample_index)
    return h.hexdigest()


def sample_params(cfg: PlanSpec) -> list[bytes]:
    """Canonical parameters for each sample index: a seed moves with the index, so the
    n samples of one prompt are different draws even against a seeded teacher."""
    base = cfg.request_params()
    out = []
    for k in range(cfg.n):
        params = dict(base)
        if cfg.seed is not None:
            params["seed"] = cfg.seed + k
        out.append(canonical(params))
    return out


def plan_key(cfg: PlanSpec, fingerprint: str, template: Template | None) -> str:
    spec = {
        "fingerprint": fingerprint,
        "template": template.source if template else None,
        "model": cfg.model,
        "params": [p.decode() for p in sample_params(cfg)],
        "limit": cfg.limit,
        "skip_invalid": cfg.skip_invalid,
    }
    return hashlib.blake2b(canonical(spec), digest_size=16).hexdigest()


def fingerprint(cfg: PlanSpec) -> tuple[str, bool]:
    """(fingerprint, reusable): a file's content hash, or the query text (never reused:
    the tables behind a query may have changed)."""
    if cfg.input_sql is not None:
        return "sql:" + hashlib.blake2b(cfg.input_sql.encode(), digest_size=16).hexdigest(), False
    require_input(cfg)
    assert cfg.input is not None
    h = hashlib.blake2b(digest_size=16)
    with cfg.input.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "file:" + h.hexdigest(), True


def require_input(cfg: PlanSpec) -> None:
    """An input file that is not there is refused here, naming it."""
    if cfg.input is not None and not cfg.input.is_file():
        raise ConfigError(f"input: {cfg.input}: no such file")


