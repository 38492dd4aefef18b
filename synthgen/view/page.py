"""The viewer's page: one HTML document with its own CSS and script (static/, inlined into
the page, so nothing is fetched from elsewhere; the script runs under the response's CSP
nonce).

Every value from the store is put on the page with `textContent` or as an SVG attribute
value, never parsed as HTML: prompts and answers are untrusted text (a teacher can be
made to answer `<script>`).
"""

from __future__ import annotations

from functools import cache
from html import escape
from importlib import resources


@cache
def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def html(token: str, nonce: str, db: str) -> str:
    """The page, with the access token for its API calls and the CSP nonce of this response."""
    body = _static("viewer.html").replace("{db}", escape(db))
    css = _static("viewer.css")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>synthgen view: {escape(db)}</title><style nonce="{nonce}">{css}</style>'
            f'</head><body data-token="{escape(token)}">{body}'
            f'<script nonce="{nonce}">{_static("viewer.js")}</script></body></html>\n')
