"""`python -m synthgen.cli.serve_prebuilt FLAGS`: llama.cpp's server from the xllamacpp wheel.

It takes the llama-server flags that teacher/local.py emits and runs the same
C++ server in this process (see teacher/prebuilt.py for why this package).
Only those flags are accepted; any other exits with code 2 and a line naming
it, which the launcher quotes from the log. It is a program (its output is
the server's log), so it lives with the CLI, apart from teacher/prebuilt.py,
which the teacher package imports and which must not be half-imported when
this runs as __main__.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from ..teacher.prebuilt import DISTRIBUTION, installed_version


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The llama-server flags that teacher/local.py emits; exits 2 on any other."""
    p = argparse.ArgumentParser(prog="synthgen.cli.serve_prebuilt", description="llama.cpp server")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--alias", "-a")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--parallel", "-np", type=int, default=1)
    p.add_argument("--ctx-size", "-c", type=int, default=0)
    p.add_argument("--threads", "-t", type=int, default=-1)
    p.add_argument("--threads-batch", "-tb", type=int, default=-1)
    p.add_argument("--cont-batching", action="store_true")
    p.add_argument("--jinja", action="store_true")
    p.add_argument("--no-webui", action="store_true")
    p.add_argument("--no-repack", action="store_true")
    return p.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    """Start llama.cpp's HTTP server in this process and block until SIGTERM/SIGINT."""
    # Block the stop signals before the server's threads exist, so every thread
    # inherits the mask and only sigwait below sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    if args.alias:
        params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_size
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads_batch
    params.cont_batching = args.cont_batching or params.cont_batching
    params.use_jinja = args.jinja or params.use_jinja
    params.ui = not args.no_webui
    params.no_extra_bufts = args.no_repack
    print(f"synthgen: prebuilt llama.cpp server from {DISTRIBUTION} {installed_version()}", file=sys.stderr)
    print(xllamacpp.get_system_info(), file=sys.stderr, flush=True)
    server = xllamacpp.Server(params)  # loads the model, then listens
    print(f"synthgen: listening on {server.listening_address}", file=sys.stderr, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    sys.stderr.flush()
    # The server's threads hold the model; tearing them down one by one buys
    # nothing for a process that is exiting, so leave at once.
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    serve(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
