"""A recipe file -> `Recipe`: its settings, and its stages in order, checked before anything
runs, every error naming the file and line (or the `--set` key) it is about.

    name: self-instruct
    settings: {seeds: ../data/seeds.jsonl, prompts: 24}   # --set prompts=8 overrides
    files: [seeds]            # settings that name files: found from the current directory,
                              # else from the recipe's own folder
    stages:
      - name: instructions    # its rows become a view of this name
        input: {sql: "SELECT ... FROM read_json('${seeds}')"}   # or {file: x.jsonl}
        template: "..."       # inline Jinja (every input column is a variable), a list
                              # of {role, content}, or a prompts/ name
        n: 2                  # sampling keys, as generate's flags: n, temperature, ...
        response_schema: {...}  # or a schema file
        columns: {instruction: "trim(response)"}   # more columns on the stage's view
        keep: [ "finish_reason = 'stop'", {filter: self-instruct, field: instruction} ]
        judge: true           # each row is a verdict on the input row it came from (its
                              # request_id): export, report and view show the rated rows,
                              # with this stage's columns (score...) beside them

`${name}` is a setting's value (the whole string `${n}` keeps its type). A stage without a
template generates nothing: it filters rows already in the store (its SQL returns their
`request_id`), like the `dedup` recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import yamlmap
from .filters import FILTERS, check_params
from .paths import resolve

BUILTIN_DIR = Path(__file__).parent / "prompts"
SAMPLING = ("n", "temperature", "top_p", "max_tokens", "seed", "stop", "logprobs", "extra_body")
STAGE_KEYS = ("name", "input", "template", "columns", "keep", "response_schema", "judge", *SAMPLING)
SETTABLE = (*SAMPLING, "response_schema")
RECIPE_KEYS = ("name", "description", "settings", "files", "stages")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SQL_START = re.compile(r"^\s*(select|with|from|values|\()", re.IGNORECASE)
# Relations of the store a stage's view must not shadow (its name is the view's name).
RESERVED = frozenset({
    "corpus", "requests", "responses", "failures", "runs", "plans", "plan_requests",
    "invalid_inputs", "duplicate_inputs", "evals", "stages", "stage_rows", "pass_rates",
    "preference_pairs", "stage_requests", "schema_migrations"})
CORPUS_COLUMNS = frozenset({
    "request_id", "run_id", "line", "sample_index", "messages", "response", "finish_reason",
    "prompt_tokens", "completion_tokens", "model", "logprobs", "metadata", "params", "latency_ms",
    "attempts", "endpoint", "created_at", "reasoning", "tool_calls", "refusal", "json",
    "logprobs_mode", "logprobs_temperature", "parent_request_id"})
# What an export of a stage adds beside its columns (store/selection.py): not a column's name.
DECISION_COLUMNS = frozenset({"kept", "removed_by", "removed_detail", "judged_by"})


@dataclass
class Keep:
    """One rule of a stage's `keep`: a SQL predicate on its rows, or a built-in filter."""

    line: int
    sql: str | None = None
    filter: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.filter if self.filter else "keep"


@dataclass
class Stage:
    name: str
    position: int
    where: str  # "file:line: stage NAME", for errors
    file: str = ""  # the recipe's path, for errors about a line of it
    input_sql: str | None = None
    input_file: Path | None = None
    template: Any = None  # inline text, a list of messages, or a loaded Template (a name)
    sampling: dict[str, Any] = field(default_factory=dict)
    response_schema: dict[str, Any] | None = None
    columns: dict[str, str] = field(default_factory=dict)
    keep: list[Keep] = field(default_factory=list)
    judge: bool = False  # its rows are verdicts on the rows they came from

    @property
    def generates(self) -> bool:
        """False for a stage that only filters rows already stored."""
        return self.template is not None

    def spec(self) -> dict[str, Any]:
        """What the stage is, as stored in `stages.spec`."""
        return {"input_sql": self.input_sql, "input_file": str(self.input_file) if self.input_file else None,
                "template": getattr(self.template, "source", self.template), "sampling": self.sampling,
                "response_schema": self.response_schema, "columns": self.columns,
                "keep": [{"sql": k.sql, "filter": k.filter, **k.params} for k in self.keep],
                "judge": self.judge}


@dataclass
class Recipe:
    name: str
    path: Path
    description: str
    settings: dict[str, Any]
    stages: list[Stage]


def find_recipe(name: str, prompts_dir: Path = Path("prompts")) -> Path:
    """A recipe by path, or by name: prompts/NAME.yaml here, else the bundled one."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"recipe {name}: no such file")
        return path
    for folder in (prompts_dir, BUILTIN_DIR):
        for suffix in (".yaml", ".yml"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    raise ConfigError(f"recipe {name!r} not found in {prompts_dir}/ nor among the built-in ones "
                      f"({', '.join(builtin_names())})")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_recipe(path: Path, sets: list[str] | None = None, prompts_dir: Path = Path("prompts")) -> Recipe:
    """Read and check the recipe at `path` with `sets` ("key=value", "stage.key=value")."""
    doc = yamlmap.load(path)
    if not isinstance(doc, yamlmap.Lined):
        raise ConfigError(f"{path}: a recipe is a mapping with `stages:` (a list)")
    _no_unknown(doc, RECIPE_KEYS, path, "the recipe")
    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}:{doc.line_of('settings')}: settings must be a mapping of names to values")
    settings = dict(settings)
    stage_sets = _apply_sets(settings, sets or [], path)
    files = doc.get("files") or []
    if not isinstance(files, list) or any(f not in settings for f in files):
        raise ConfigError(f"{path}:{doc.line_of('files')}: files must list settings of this recipe")
    for name in files:
        settings[name] = _resolve_files(settings[name], path, f"setting {name}")
    raw_stages = doc.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError(f"{path}:{doc.line_of('stages')}: stages must be a non-empty list")
    stages = []
    for i, raw in enumerate(raw_stages, 1):
        if not isinstance(raw, yamlmap.Lined):
            raise ConfigError(f"{path}: stage {i} must be a mapping with a name")
        stages.append(_stage(raw, i, path, settings, prompts_dir))
    names = [s.name for s in stages]
    for stage in stages:
        if names.count(stage.name) > 1:
            raise ConfigError(f"{stage.where}: two stages are named {stage.name!r}")
    for key, (stage_name, value) in stage_sets.items():
        target = next((s for s in stages if s.name == stage_name), None)
        if target is None:
            raise ConfigError(f"--set {key}: the recipe has no stage {stage_name!r} "
                              f"(stages: {', '.join(names)})")
        _override(target, key.partition(".")[2], value, key)
    return Recipe(str(doc.get("name") or path.stem), path, str(doc.get("description") or ""),
                  settings, stages)


def _apply_sets(settings: dict[str, Any], sets: list[str], path: Path) -> dict[str, tuple[str, Any]]:
    """Put `--set name=value` into the settings; return the `stage.key=value` ones."""
    staged: dict[str, tuple[str, Any]] = {}
    for item in sets:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {item}: give key=value (a setting, or stage.key for a stage's "
                              "sampling key, e.g. answers.max_tokens=128)")
        value = yamlmap.scalar(text)
        if "." in key:
            staged[key] = (key.partition(".")[0], value)
        elif key in settings:
            settings[key] = value
        else:
            known = ", ".join(settings) or "none"
            raise ConfigError(f"--set {key}: {path.name} has no setting {key!r} (settings: {known}; "
                              "a stage's own keys are set as STAGE.KEY)")
    return staged


def _override(stage: Stage, key: str, value: Any, shown: str) -> None:
    if key not in SETTABLE:
        raise ConfigError(f"--set {shown}: {key!r} cannot be set on a stage "
                          f"(these can: {', '.join(SETTABLE)})")
    if not stage.generates:
        raise ConfigError(f"--set {shown}: stage {stage.name} generates nothing, so it has no {key}")
    if key == "response_schema":
        stage.response_schema = _schema(value, Path("."), f"--set {shown}")
    else:
        stage.sampling[key] = value


def _resolve_files(value: Any, recipe: Path, what: str) -> Any:
    return resolve(value, recipe.parent, what)


def _substitute(value: Any, settings: dict[str, Any], where: str) -> Any:
    """`${name}` -> the setting's value, in every string (the whole string keeps the type)."""
    if isinstance(value, str):
        whole = VAR.fullmatch(value.strip())
        if whole:
            return _setting(whole.group(1), settings, where)
        return VAR.sub(lambda m: _text(_setting(m.group(1), settings, where)), value)
    if isinstance(value, yamlmap.Lined):
        out = yamlmap.Lined({k: _substitute(v, settings, where) for k, v in value.items()})
        out.line, out.lines = value.line, value.lines
        return out
    if isinstance(value, dict):
        return {k: _substitute(v, settings, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, settings, where) for v in value]
    return value


def _setting(name: str, settings: dict[str, Any], where: str) -> Any:
    if name not in settings:
        raise ConfigError(f"{where}: ${{{name}}} is not a setting of this recipe "
                          f"(settings: {', '.join(settings) or 'none'})")
    return settings[name]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):  # a list in SQL: ['a', 'b']
        return "[" + ", ".join("'" + str(v).replace("'", "''") + "'" for v in value) + "]"
    return str(value)


def _stage(raw: yamlmap.Lined, position: int, path: Path, settings: dict[str, Any],
           prompts_dir: Path) -> Stage:
    where = f"{path}:{raw.line}"
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: stage {position} needs a name: lower case letters, digits and _, "
                          f"starting with a letter (it becomes a view), got {name!r}")
    if name in RESERVED:
        raise ConfigError(f"{where}: stage name {name!r} is a relation of the store; choose another")
    where = f"{path}:{raw.line}: stage {name}"
    _no_unknown(raw, STAGE_KEYS, path, f"stage {name}")
    raw = _substitute(raw, settings, f"{path}:{raw.line}")
    stage = Stage(name, position, where, str(path))
    _input(stage, raw, path)
    at = f"{path}:{raw.line_of('template')}: stage {name}"
    template = raw.get("template")
    if template is not None:
        stage.template = _template(template, name, at, path, prompts_dir)
    stage.sampling = {k: raw[k] for k in SAMPLING if k in raw}
    if "response_schema" in raw:
        stage.response_schema = _schema(raw["response_schema"], path.parent,
                                        f"{path}:{raw.line_of('response_schema')}: stage {name}")
    if not stage.generates and (stage.sampling or stage.response_schema):
        given = [*stage.sampling, *(["response_schema"] if stage.response_schema else [])]
        raise ConfigError(f"{where}: a stage without a template generates nothing, so "
                          f"{', '.join(given)} mean nothing there")
    if not stage.generates and stage.input_sql is None:
        raise ConfigError(f"{where}: a stage without a template filters rows already stored: its input "
                          "must be SQL returning their request_id")
    columns = raw.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise ConfigError(f"{path}:{raw.line_of('columns')}: stage {name}: columns maps names to "
                          "SQL expressions")
    for col in columns:
        if not NAME.match(col) or col in CORPUS_COLUMNS or col in DECISION_COLUMNS:
            raise ConfigError(f"{path}:{raw.line_of('columns')}: stage {name}: column {col!r} must be a "
                              "new name (lower case), not one of corpus's nor "
                              f"{', '.join(sorted(DECISION_COLUMNS))}")
    stage.columns = dict(columns)
    judge = raw.get("judge", False)
    if not isinstance(judge, bool):
        raise ConfigError(f"{path}:{raw.line_of('judge')}: stage {name}: judge is true or false")
    if judge and not stage.generates:
        raise ConfigError(f"{path}:{raw.line_of('judge')}: stage {name}: a judge stage writes verdicts: "
                          "it needs a template")
    stage.judge = judge
    stage.keep = _keep(raw.get("keep"), path, raw.line_of("keep"), name)
    return stage


def _input(stage: Stage, raw: yamlmap.Lined, path: Path) -> None:
    value = raw.get("input")
    where = f"{path}:{raw.line_of('input')}: stage {stage.name}: input"
    if isinstance(value, dict) and set(value) in ({"sql"}, {"file"}):
        sql, file = value.get("sql"), value.get("file")
    elif isinstance(value, str) and value.strip():
        sql, file = (value, None) if SQL_START.match(value) else (None, value)
    else:
        raise ConfigError(f"{where}: give a file, or {{sql: QUERY}} (a query over the store, where each "
                          "earlier stage is a view of its name)")
    if sql is not None:
        if not isinstance(sql, str) or not sql.strip():
            raise ConfigError(f"{where}: sql must be a query")
        stage.input_sql = sql.strip().rstrip(";")
    else:
        stage.input_file = Path(_resolve_files(str(file), path, where))


def _template(value: Any, stage: str, where: str, path: Path, prompts_dir: Path) -> Any:
    from ..inputs.templates import inline_template, load_template

    if isinstance(value, str) and re.fullmatch(r"[\w.-]+", value.strip()):
        for folder in (path.parent, prompts_dir):
            try:
                return load_template(value.strip(), folder)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: template {value!r} not found in {path.parent}/ or {prompts_dir}/")
    return inline_template(f"{path.stem}.{stage}", value, where)


def _schema(value: Any, base: Path, where: str) -> dict[str, Any]:
    from ..fit import load_schema

    if isinstance(value, str):
        found = base / value if not Path(value).is_file() and (base / value).is_file() else Path(value)
        value = found
    try:
        return load_schema(value)  # type: ignore[return-value]
    except ValueError as exc:
        raise ConfigError(f"{where}: response_schema: {exc}") from None


def _keep(value: Any, path: Path, line: int, stage: str) -> list[Keep]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    rules = []
    for item in items:
        at = item.line if isinstance(item, yamlmap.Lined) else line
        where = f"{path}:{at}: stage {stage}: keep"
        if isinstance(item, str) and item.strip():
            _check_predicate(item, where)
            rules.append(Keep(at, sql=item.strip()))
        elif isinstance(item, dict) and isinstance(item.get("filter"), str):
            name = item["filter"]
            if name not in FILTERS:
                raise ConfigError(f"{where}: no built-in filter {name!r} "
                                  f"(there are: {', '.join(sorted(FILTERS))})")
            params = {k: v for k, v in item.items() if k != "filter"}
            try:
                params = check_params(name, params, path.parent)
            except ConfigError as exc:
                key = str(exc).partition(":")[0]
                line = item.line_of(key) if isinstance(item, yamlmap.Lined) else at
                raise ConfigError(f"{path}:{line}: stage {stage}: keep: filter {name}: {exc}") from None
            rules.append(Keep(at, filter=name, params=params))
        else:
            raise ConfigError(f"{where}: each rule is a SQL condition on the stage's rows, or "
                              "{filter: NAME, ...} (a built-in filter)")
    return rules


def _check_predicate(sql: str, where: str) -> None:
    from ..store.readonly import read_statements

    try:
        statements = read_statements(f"SELECT 1 FROM corpus WHERE ({sql})")
    except Exception as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('sql: ')}") from None
    if len(statements) != 1:
        raise ConfigError(f"{where}: a condition, not statements of its own")


def _no_unknown(raw: dict, allowed: tuple[str, ...], path: Path, what: str) -> None:
    for key in raw:
        if key not in allowed:
            line = raw.line_of(key) if isinstance(raw, yamlmap.Lined) else 0
            raise ConfigError(f"{path}:{line}: {what}: unknown key {key!r} (keys: {', '.join(allowed)})")
