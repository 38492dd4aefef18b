"""`synthgen student export`: a thin click layer over student/export_gguf.py.

Progress goes to stderr; the check's summary to stdout (`--json`: one JSON object).
"""

from __future__ import annotations

import json

import click

from ..student.deps import require_train_extra
from .sample import sample_command

QUANT_CHOICES = ("f16", "q8_0", "q4_k_m", "f32")  # teacher/gguf_tools.QUANTS, without importing it


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def student() -> None:
    """Sample a student into the store, or ship it: a GGUF file that llama.cpp serves."""


student.add_command(sample_command)


@student.command("export")
@click.option("--model", "model_dir", required=True, metavar="DIR|FILE.gguf|teacher",
              help="The student directory (from synthgen train; a LoRA run is merged), or a GGUF "
              "to requantize (`teacher`: the bundled teacher), so compare can set teacher and "
              "student side by side at the same quantization.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The GGUF file to write.")
@click.option("--quant", type=click.Choice(QUANT_CHOICES), default="q8_0", show_default=True,
              help="Weights: q8_0 and f16 by llama.cpp's converter, q4_k_m by llama-quantize "
              "(compiled once per machine), f32 lossless.")
@click.option("--db", default=None, type=click.Path(dir_okay=False),
              help="The store: check on the student's held-out prompts [default: a few plain prompts].")
@click.option("--prompts", type=int, default=4, show_default=True,
              help="Prompts the served GGUF answers greedily against transformers (0: no serving check).")
@click.option("--max-new-tokens", type=int, default=32, show_default=True, help="Greedy tokens per prompt.")
@click.option("--threads", type=int, default=None, help="CPU threads for llama-quantize and the server.")
@click.option("--json", "as_json", is_flag=True, help="Print the check as one JSON object.")
def export(model_dir: str, out: str, quant: str, db: str | None, prompts: int, max_new_tokens: int,
           threads: int | None, as_json: bool) -> None:
    """Convert a student to GGUF with llama.cpp's own tools, then check it served."""
    require_train_extra()
    from ..student.export_gguf import export_gguf
    from ..student.gguf_check import summary

    report = export_gguf(model_dir, out, quant, db=db, prompts=prompts, max_new_tokens=max_new_tokens,
                         threads=threads, echo=_echo)
    click.echo(json.dumps(report) if as_json else summary(report))
