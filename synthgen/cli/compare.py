"""`synthgen compare`: a thin click layer over student/side_by_side.py (no torch needed).

Progress to stderr; the table to stdout (`--json`: one JSON object).
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.option("--teacher", "teacher_url", required=True, metavar="URL",
              help="The teacher's llama.cpp server (its base URL).")
@click.option("--student", "student_url", required=True, metavar="URL",
              help="The student's llama.cpp server (its base URL).")
@click.option("--db", required=True, type=click.Path(dir_okay=False),
              help="The store whose held-out rows are the prompts (and whose evals get the table).")
@click.option("--split", "split_dir", default=None, type=click.Path(file_okay=False),
              help="The student's training directory: its split.json picks the held-out rows "
              "[default: synthgen train's default split of --db].")
@click.option("--query", default=None, help="Rows to use instead (SQL over corpus).")
@click.option("--prompts", type=int, default=8, show_default=True, help="Held-out prompts timed per pass.")
@click.option("--max-tokens", type=int, default=64, show_default=True, help="Greedy tokens per answer.")
@click.option("--repeat", type=int, default=3, show_default=True,
              help="Timing passes; speeds are the median, with the range.")
@click.option("--nll-rows", type=int, default=None, help="Score only the first N rows [default: all].")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where `teacher start` recorded the servers (for pids and files) "
              "[default: ~/.cache/synthgen/teachers].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare(teacher_url: str, student_url: str, db: str, split_dir: str | None, query: str | None,
            prompts: int, max_tokens: int, repeat: int, nll_rows: int | None, state_dir: Path | None,
            as_json: bool) -> None:
    """Measure a served teacher and student on the same held-out prompts: one table."""
    from ..student.deps import StudentError
    from ..student.side_by_side import compare_served, table

    if not Path(db).is_file():
        raise StudentError(f"--db {db}: no such file")
    if split_dir is not None and not (Path(split_dir) / "split.json").is_file():
        raise StudentError(f"--split {split_dir}: no split.json there (write one with synthgen train)")

    result = compare_served(db, teacher_url, student_url, split_dir, query, prompts, max_tokens, repeat,
                            nll_rows, state_dir, echo=_echo)
    click.echo(json.dumps(result) if as_json else table(result))
