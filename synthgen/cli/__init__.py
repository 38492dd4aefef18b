"""The `synthgen` command: a thin click layer over the Python API.

Subcommands live in the module of the idea they belong to and are imported only
when used, so `synthgen sql` never pays for importing torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import DAMAGE, SynthgenError

# name -> "module:attribute"; each module owns its own click command.
COMMANDS = {
    "generate": "synthgen.cli.generate:generate",
    "run": "synthgen.cli.run:run",
    "converse": "synthgen.cli.converse:converse",
    "episodes": "synthgen.cli.episodes:episodes",
    "status": "synthgen.cli.store:status",
    "sql": "synthgen.cli.store:sql",
    "export": "synthgen.cli.store:export",
    "merge": "synthgen.cli.merge:merge",
    "report": "synthgen.cli.report:report",
    "view": "synthgen.cli.view:view",
    "batch": "synthgen.cli.batch:batch",
    "teacher": "synthgen.cli.teacher:teacher",
    "demo": "synthgen.cli.demo:demo",
    "train": "synthgen.cli.student:train",
    "eval": "synthgen.cli.student:eval_command",
    "student": "synthgen.cli.export_gguf:student",
    "compare": "synthgen.cli.compare:compare",
    "score": "synthgen.cli.score:score_command",
    "distill": "synthgen.cli.distill:distill_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        from .help import decorate

        return decorate(getattr(importlib.import_module(module), attr), name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="synthgen")
def cli() -> None:
    """Build distillation corpora from an OpenAI-compatible teacher into DuckDB.

    Run `synthgen COMMAND --help` for a command's options and examples.
    """


def _top_help() -> None:
    from .help import top_level

    top_level(cli)


_top_help()


def main() -> None:
    """Entry point: user errors print one clear line and exit 2 (or the error's own
    `exit_code`: 1 for an export that matched nothing), never a traceback."""
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SynthgenError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except OSError as exc:  # a file that cannot be read or written: say which, no traceback
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
            raise  # a bug: its traceback is what a report needs
        if type(exc).__name__ == "InterruptException":  # Ctrl-C while DuckDB was working
            click.echo("interrupted", err=True)
            sys.exit(130)
        # The database refused something the store layer did not foresee (a damaged file):
        # one line, not a traceback.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if DAMAGE.search(first):
            click.secho(f"error: the store file is damaged ({first}): restore it from a copy, or "
                        "start a new --db", fg="red", err=True)
            sys.exit(2)
        click.secho(f"error: the store could not be used: {first}", fg="red", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
