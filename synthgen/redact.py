"""The one redaction of credentials from text a teacher sent back.

A server (or the gateway in front of it) may echo the request's headers in an error body:
`{"error": "bad header Authorization: Bearer sk-..."}`. That text becomes a fault's
message, which is printed ("stopped early: ..."), stored (`failures.message`,
`runs.message`) and logged. So every transport passes each fault through its `Redactor`,
built from the credentials it was given, before anything else sees it:

    the key itself, `Bearer <key>`          -> ***
    `user:pass@` of the URL: the password, and `Basic base64(user:pass)` -> ***
    a secret-looking query value of the URL (?api-key=...)                 -> ***
    and, whatever the run's own secrets: `Bearer|Basic <token>`, `x-api-key: <v>`,
    `api-key=<v>`, `sk-...`-shaped keys

Values shorter than MIN_SECRET characters are left to the generic patterns: redacting every
"ab" in a message would destroy it and hide nothing.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import TeacherFault

MIN_SECRET = 4
MASK = "***"
_SECRET_PARAM = re.compile(r"key|token|secret|password|passwd|auth|sig|signature|credential", re.I)


def _basic(match: re.Match) -> str:
    """`Basic <base64 of user:pass>` -> `Basic ***`; "Basic usage" stays as it is."""
    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except ValueError:
        return match.group(0)
    return f"{match.group(1)}{MASK}" if b":" in decoded else match.group(0)


_GENERIC = (
    (re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{6,}", re.I), rf"\1{MASK}"),
    (re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{4,}={0,2})", re.I), _basic),
    (re.compile(r"\b((?:x-)?api[-_]?key|authorization|access[-_]?token|password|secret)"
                r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)"  # the separator, quoted or not
                r"(?!\*\*\*|(?:Bearer|Basic)\b)[^\s\"',;&}\\]+", re.I), rf"\1\2{MASK}"),
    (re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-]{12,}"), rf"\1-{MASK}"),
)


class Redactor:
    """Replaces the given secrets, and anything shaped like a credential, with ***."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        found = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)
        self._exact = re.compile("|".join(map(re.escape, found))) if found else None

    @classmethod
    def for_endpoint(cls, base_url: str, api_key: str | None = None) -> Redactor:
        """The secrets one endpoint is sent: its key, its URL's password and query keys."""
        parts = urlsplit(base_url)
        secrets: list[str | None] = [api_key]
        if parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
            secrets += [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
        secrets += [v for k, v in parse_qsl(parts.query, keep_blank_values=True)
                    if _SECRET_PARAM.search(k)]
        return cls(secrets)

    def __call__(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(MASK, text)
        for pattern, replacement in _GENERIC:
            text = pattern.sub(replacement, text)
        return text

    def fault(self, fault: TeacherFault) -> TeacherFault:
        """The same fault, its message redacted (the exception's args too)."""
        clean = self(fault.message)
        if clean != fault.message:
            fault.message = clean
            fault.args = (clean, *fault.args[1:])
        return fault
