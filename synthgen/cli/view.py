"""`synthgen view`: the corpus in the browser (synthgen/view/), until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--db", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The DuckDB store.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: any free one).")
def view(db: Path, port: int) -> None:
    """Browse and filter the corpus in a local web page (127.0.0.1 only, read-only).

    Filter by stage, finish reason, score, text or an SQL WHERE; open a row to see its
    prompt, answer, reasoning, a heat-map of the teacher's token logprobs, and the
    student's answer where an evaluation stored one. Works during a run. Prints the URL
    to open (it holds an access token), and serves until Ctrl-C.
    """
    from ..view import ViewServer
    from ..view.queries import check_store

    check_store(db)
    try:
        server = ViewServer(db, port)
    except OSError as exc:
        raise click.BadParameter(f"cannot listen on 127.0.0.1:{port} ({exc.strerror})",
                                 param_hint="--port") from None
    click.echo(f"synthgen view: serving {db} read-only at\n  {server.url}\n(Ctrl-C stops it)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.close()
