"""`python -m synthgen` is the `synthgen` command (the console script calls `run` too)."""

import sys


def run() -> None:
    """The `synthgen` command. The CLI is imported in here, so a Ctrl-C while it loads (the
    first tenth of a second) ends with "interrupted", as one later does, not a traceback."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
