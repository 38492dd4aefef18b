"""`--help` people can work from: every command has examples that parse, options in groups
with their defaults and what is required, the environment variables it reads; no flag is
lost from the help; errors name the flag, not the config field."""

from __future__ import annotations

import re
import shlex

import click
import pytest
from conftest import synthgen
from teacher_server import write_jsonl

from synthgen.cli import COMMANDS, cli
from synthgen.cli.help import SPECS, TOP


def _command(path: str) -> click.Command:
    ctx = click.Context(cli)
    command: click.Command = cli
    for part in path.split():
        command = command.get_command(ctx, part)  # type: ignore[union-attr]
        assert command is not None, path
    return command


def _help(path: str) -> str:
    result = synthgen(*path.split(), "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("path", sorted(SPECS))
def test_every_command_has_examples_and_loses_no_flag(path):
    text = _help(path)
    assert "Examples:" in text and f"synthgen {path}" in text.split("Examples:")[1]
    for param in _command(path).params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                assert opt in text, (path, opt)


def test_every_command_has_a_spec():
    assert set(COMMANDS) <= set(SPECS)
    teacher = _command("teacher")
    assert {f"teacher {n}" for n in teacher.commands} <= set(SPECS)  # type: ignore[attr-defined]


def _example_commands():
    for spec in [TOP, *SPECS.values()]:
        for _, text in spec.examples:
            for line in text.replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    if part.strip().startswith("synthgen "):
                        yield shlex.split(part)[1:]


@pytest.mark.parametrize("argv", list(_example_commands()), ids=lambda a: " ".join(a)[:60])
def test_every_example_parses_with_the_real_flags(argv):
    command, rest, name = cli, list(argv), "synthgen"
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest[0]
        command = command.get_command(click.Context(command), rest.pop(0))
        assert command is not None, argv
    command.make_context(name, rest)  # raises on an unknown flag or a missing required one


def test_generate_help_groups_options_and_shows_defaults_and_requirements():
    text = _help("generate")
    sections = [line.rstrip(":") for line in text.splitlines() if line and not line.startswith(" ")
                and line.endswith(":")]
    for title in ("Input", "Store", "Teacher", "Sampling (a change makes new requests)",
                  "Limits and retries"):
        assert title in sections, sections
    flat = re.sub(r"-\s+", "-", " ".join(text.split()))  # click may wrap "--base-url" at its dash
    for needle in ("[default: 64]", "[default: 5]", "[default: OPENAI_API_KEY]",
                   "[required (here or in --config)]", "[required with --base-url]",
                   "[this or --input-sql is required]"):
        assert needle in flat, needle
    env = text.split("Environment:")[1]
    for var in ("OPENAI_API_KEY", "SYNTHGEN_LLAMA_SERVER", "XDG_RUNTIME_DIR"):
        assert var in env
    top = _help("")
    for var in ("OPENAI_API_KEY", "SYNTHGEN_LLAMA_SERVER", "SYNTHGEN_CACHE"):
        assert var in top.split("Environment:")[1]


def test_errors_name_the_flag_or_the_file_key(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    db = tmp_path / "c.duckdb"
    no_model = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--base-url",
                        "http://127.0.0.1:9/v1")
    assert no_model.returncode == 2 and "--model is required with --base-url" in no_model.stderr
    both = synthgen("generate", "--input", tmp_path / "in.jsonl", "--input-sql", "SELECT 1", "--db", db)
    assert "exactly one of --input (a file) or --input-sql (a query)" in both.stderr
    hot = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--temperature", "5")
    assert hot.returncode == 2 and "--temperature: " in hot.stderr
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'input = "{tmp_path / "in.jsonl"}"\ndb = "{db}"\ntop-p = 7\n')
    from_file = synthgen("generate", "--config", cfg)
    assert from_file.returncode == 2 and f"top-p (in {cfg}): " in from_file.stderr
    assert "Traceback" not in no_model.stderr + both.stderr + hot.stderr + from_file.stderr
