"""The run configuration: one pydantic model that the flags, the config file and the
Python API all fill, so a bad value gets the same message naming the field everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .types import SCHEMA_KEY
from .urls import looks_secret, normalize_base_url, strip_credentials

if TYPE_CHECKING:
    from .batch.settings import Settings
    from .engine.limits import Limits
    from .ids import PlanSpec
    from .pricing import Prices

# What every request carries unless told otherwise (None: not sent, the server's own).
# Sent explicitly because servers' defaults differ (llama.cpp's GGUF: 0.8 / 0.95 and no
# length limit; vLLM without --max-tokens runs an answer to the context length). Changing
# one changes every request id: a store planned without them is planned again.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_TOKENS = 1024
NOT_SENT = "none"  # what the flags and config files take for "send no value"

# Fields that shape the request itself: a change to any of them makes new request ids.
REQUEST_FIELDS = ("temperature", "top_p", "max_tokens", "seed", "stop", "logprobs", "extra_body",
                  "response_schema")


class GenerateConfig(BaseModel):
    """Everything `synthgen generate` needs. Secrets are never fields: only the *name*
    of the environment variable that holds the API key is."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # input
    input: Path | None = None
    input_sql: str | None = None
    template: str | None = None
    prompts_dir: Path = Path("prompts")
    skip_invalid: bool = False
    limit: int | None = Field(default=None, ge=1)

    # store
    db: Path

    # teacher
    model: str | None = None
    base_urls: list[str] = Field(default_factory=list)
    api: str = "openai"  # which API the teacher speaks: a backend's name (backends/registry.py)
    api_key_env: str | None = None  # None: the backend's own (OPENAI_API_KEY, ANTHROPIC_API_KEY)
    skip_preflight: bool = False
    cache_prompt: bool = False  # ask the API to cache the shared prompt prefix (Anthropic's cache_control)
    # Inline reasoning split out of the content ("OPEN,CLOSE"; "none": kept as sent). How an
    # answer is read, not what is asked: no part of the request ids (backends/think.py).
    think_tags: str = "<think>,</think>"

    # sampling (these shape request ids)
    n: int = Field(default=1, ge=1, le=1024)
    temperature: float | None = Field(default=DEFAULT_TEMPERATURE, ge=0, le=2)
    top_p: float | None = Field(default=DEFAULT_TOP_P, gt=0, le=1)
    max_tokens: int | None = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    # Which distribution the teacher's logprobs are (stored with the run; KD reads it):
    # raw (temperature 1, before sampling: llama.cpp, vLLM's default) or processed (after
    # the request's temperature). None: unknown; the bundled teacher sets raw.
    logprobs_mode: Literal["raw", "processed"] | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # A JSON Schema every answer must fit (a file path, a dict, or a pydantic model class);
    # part of the params, so another schema makes other requests.
    response_schema: dict[str, Any] | None = None

    # engine
    concurrency: int | Literal["auto"] = 64
    timeout: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=100)
    rate_limit_wait: float = Field(default=1800.0, gt=0)  # seconds one request waits out 429s
    length_retries: int = Field(default=1, ge=0, le=100)  # retries of a max_tokens cut, T > 0
    retry_failed: bool = False
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    price_in: float | None = Field(default=None, ge=0)
    price_out: float | None = Field(default=None, ge=0)
    price_cached_in: float | None = Field(default=None, ge=0)  # prompt tokens read from a cache
    price_cache_write: float | None = Field(default=None, ge=0)  # prompt tokens written to one
    flush_interval: float = Field(default=0.1, gt=0, le=10)
    # Money (engine/budget.py): a total never crossed, counting what is in flight at its
    # worst; and dollars per sliding window ("USD/MIN": at most USD in any MIN minutes).
    budget: float | None = Field(default=None, gt=0)
    spend_per_window: str | None = None

    # batch mode: the same plan through a Batch API (files + batches) at its discount
    batch: bool = False
    batch_poll_interval: float = Field(default=15.0, gt=0)  # first wait between polls (doubles)
    batch_poll_max: float = Field(default=300.0, gt=0)  # longest wait between polls
    batch_max_requests: int = Field(default=50_000, ge=1, le=50_000)  # per file (OpenAI's limit)
    batch_max_bytes: int = Field(default=200_000_000, ge=4096, le=200 * 2**20)  # per file
    # off the prices; None: the price table's for the model, else 0.5 (pricing.py)
    batch_discount: float | None = Field(default=None, ge=0, le=1)

    # local teacher (used when no base_url is given)
    threads: int | None = Field(default=None, ge=1)

    # A shard of a sharded run (synthgen/sharding.py): send the plan its driver wrote into
    # this store under this key; the input is not read again (it may not even be on the
    # shard's node).
    given_plan: str | None = None

    verbose: int = 0

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto":
            try:
                value = int(value)
            except ValueError:
                raise ValueError("must be a positive integer or 'auto'") from None
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or 'auto'")
        return value

    @field_validator("api")
    @classmethod
    def _known_api(cls, name: str) -> str:
        from .backends.registry import get

        get(name)  # ConfigError naming the backends there are
        return name

    @property
    def key_env(self) -> str:
        """The environment variable that holds the API key (--api-key-env, or the API's own)."""
        if self.api_key_env:
            return self.api_key_env
        from .backends.registry import get

        return get(self.api).api_key_env

    @field_validator("base_urls", mode="before")
    @classmethod
    def _one_url(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("base_urls")
    @classmethod
    def _clean_urls(cls, urls: list[str]) -> list[str]:
        return [normalize_base_url(u) for u in urls]

    @field_validator("extra_body")
    @classmethod
    def _no_secrets_in_the_body(cls, body: dict[str, Any]) -> dict[str, Any]:
        found = sorted(path for path, name, v in _walk(body) if _credential(path, name, v))
        if found:
            raise ValueError(
                f"{', '.join(found)} looks like a credential; extra-body is sent and stored with "
                "every request: pass the key through --api-key-env (it is never stored)")
        return body

    @field_validator("response_schema", mode="before")
    @classmethod
    def _load_schema(cls, value: Any) -> Any:
        from .fit import load_schema

        return load_schema(value)

    @field_validator("think_tags")
    @classmethod
    def _think_tags(cls, value: str) -> str:
        from .backends.think import parse_tags

        tags = parse_tags(value)
        return "none" if tags is None else str(tags)

    @field_validator("temperature", "top_p", "max_tokens", mode="before")
    @classmethod
    def _not_sent(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == NOT_SENT else value

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_input(self) -> GenerateConfig:
        # {field} marks a field's name: describe_validation_error writes it as the flag
        # (--input-sql) for the CLI and as the field (input_sql) for the Python API.
        if (self.input is None) == (self.input_sql is None):
            raise ValueError("give exactly one of {input} (a file) or {input_sql} (a query)")
        if self.base_urls and not self.model:
            raise ValueError("{model} is required with {base_urls} (the name the teacher serves)")
        if self.budget is not None or self.spend_per_window is not None:
            if self.batch:
                raise ValueError("{budget} and {spend_per_window} hold back online requests one by one; "
                                 "a batch is priced whole: leave them out with {batch}")
            if not self.prices.known:
                raise ValueError("{budget} needs the teacher's prices: {price_in} and {price_out} "
                                 "(per million tokens), or a {model} the price table lists")
            if self.max_tokens_sent is None:
                raise ValueError("{budget} needs {max_tokens}: an answer's worst case is what the "
                                 "budget holds back for it")
            self.spend_window  # noqa: B018 (checks its form)
        if self.batch and len(self.base_urls) != 1:
            raise ValueError("{batch} needs exactly one {base_urls}, a Batch API (OpenAI's, or a "
                             "server with /v1/files and /v1/batches); for `vllm run-batch` on "
                             "a GPU box, write the files with `synthgen batch write`")
        return self

    def request_params(self) -> dict[str, Any]:
        """Sampling parameters sent with every request (None means: not sent)."""
        params: dict[str, Any] = {}
        for key in ("temperature", "top_p", "max_tokens", "stop"):
            value = getattr(self, key)
            if value is not None:
                params[key] = value
        if self.logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = self.logprobs
        params.update(self.extra_body)
        if self.response_schema is not None:
            # As JSON text in the schema's own key order: the params are canonical (sorted
            # keys), but the order of a schema's properties is the order servers that
            # constrain decoding (llama.cpp, vLLM, OpenAI strict) generate them in, so two
            # orders are two requests, and the order given is the order sent.
            import orjson

            params[SCHEMA_KEY] = orjson.dumps(self.response_schema).decode()
        return params

    @property
    def max_tokens_sent(self) -> int | None:
        """The longest answer a request allows (max_tokens, or extra_body's
        max_completion_tokens), None when no limit is sent."""
        limit = self.max_tokens or self.extra_body.get("max_completion_tokens")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    @property
    def spend_window(self) -> tuple[float, float] | None:
        """--spend-per-window "USD/MIN" as (dollars, seconds)."""
        from .engine.budget import parse_window

        return None if self.spend_per_window is None else parse_window(self.spend_per_window)

    # The config in parts: each room gets its own small typed share, never this model
    # (the engine its limits, the batch runner its settings, pricing its prices).
    PARTS: ClassVar[tuple[str, ...]] = ("planning", "limits", "prices", "batching")

    @property
    def planning(self) -> PlanSpec:
        from .ids import PlanSpec

        return PlanSpec(db=self.db, model=self.model, input=self.input, input_sql=self.input_sql,
                        given_plan=self.given_plan, limit=self.limit, skip_invalid=self.skip_invalid,
                        retry_failed=self.retry_failed, n=self.n, seed=self.seed,
                        params=self.request_params())

    @property
    def limits(self) -> Limits:
        from .engine.limits import Limits

        budget = self.max_tokens or self.extra_body.get("max_completion_tokens")
        return Limits(concurrency=self.concurrency, max_attempts=self.max_attempts,
                      rate_limit_wait=self.rate_limit_wait, length_retries=self.length_retries,
                      rpm=self.rpm, tpm=self.tpm, model=self.model,
                      completion_budget=budget if isinstance(budget, int) else None)

    @property
    def prices(self) -> Prices:
        from .pricing import Prices

        return Prices.resolve(self.model, self.price_in, self.price_out, self.price_cached_in,
                              self.price_cache_write, batch=self.batch, batch_discount=self.batch_discount)

    @property
    def batching(self) -> Settings:
        from .batch.settings import Settings

        return Settings(max_requests=self.batch_max_requests, max_bytes=self.batch_max_bytes,
                        poll_interval=self.batch_poll_interval, poll_max=self.batch_poll_max,
                        max_attempts=self.max_attempts)

    def public_dict(self) -> dict[str, Any]:
        """The config as stored in `runs.config`: no secret can be in it by construction
        (the key is read from the environment), and URLs lose any credentials."""
        data = self.model_dump(mode="json")
        data["base_urls"] = [strip_credentials(u) for u in self.base_urls]
        return data


# Below the top level a name counts only when it is a credential's whole name: a nested
# `tokenizer` or `keywords` is no key, a nested `api-key` or `Authorization` is.
_CREDENTIAL_NAME = re.compile(r"(x-)?(api[-_]?key|key|(access|auth|refresh)?[-_]?token|secret|password|"
                              r"passwd|authorization|credentials?|bearer|cookie)", re.IGNORECASE)


def _credential(path: str, name: str, value: Any) -> bool:
    """A value that looks like a key (sk-..., Bearer ...), or one named like a credential:
    any secret-sounding name at the top level, a credential's whole name below it."""
    if looks_secret("", value):
        return True
    named = path == name or bool(_CREDENTIAL_NAME.fullmatch(name))
    return named and looks_secret(name, value)


def _walk(value: Any, path: str = "", name: str = "") -> list[tuple[str, str, Any]]:
    """(path, name, value) of every leaf: a credential can hide at any depth of a JSON body
    (`extra_headers.api-key`). A leaf's name is its own key, so a JSON schema's property
    named `api_key` (an object of keywords: `type`, `description`) is not taken for one."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items()
                for leaf in _walk(v, f"{path}.{k}" if path else str(k), str(k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _walk(v, f"{path}[{i}]", name)]
    return [(path, name, value)]


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML config whose keys mirror the flags (dashes or underscores)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    import tomllib  # only runs with --config pay for the parsers

    import yaml

    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    if "base_url" in data:
        data["base_urls"] = data.pop("base_url")
    return data


def build_config(file_values: dict[str, Any], overrides: dict[str, Any], source: str) -> GenerateConfig:
    """Merge the config file with the flags (flags win) and validate once; an error names
    the flag (--model), or the key and the file where the value came from the file."""
    given = {k: v for k, v in overrides.items() if v is not None}
    merged = {**file_values, **given}
    try:
        return GenerateConfig(**merged)
    except ValidationError as exc:
        from_file = set(file_values) - set(given)
        raise ConfigError(describe_validation_error(
            exc, source, name=lambda f: f"{f.replace('_', '-')} (in {source})" if f in from_file
            else flag(f))) from None


# The flag of each field whose flag is not simply --field-name.
FLAGS = {"base_urls": "--base-url", "input": "--input", "config": "--config"}


def flag(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def describe_validation_error(exc: ValidationError, source: str,
                              name: Callable[[str], str] | None = None) -> str:
    """One line per error, each naming its field by `name(field)` (the field itself for the
    Python API; the CLI passes flags)."""
    name = name or (lambda f: f)
    lines = [f"invalid configuration ({source}):"]
    fields = set(GenerateConfig.model_fields)
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        msg = re.sub(r"\{(\w+)\}", lambda m: name(m.group(1)) if m.group(1) in fields else m.group(0), msg)
        lines.append(f"  {name(loc)}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)
