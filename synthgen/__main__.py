"""`python -m synthgen` is the `synthgen` command."""

from .cli import main

main()
