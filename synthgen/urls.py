"""Base URLs: accept what users type, and never show or store what is secret in them."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters whose values are credentials (Azure's api-key, ?key=, ?token=...).
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|auth|sig|signature|credential)",
                           re.IGNORECASE)


def normalize_base_url(url: str) -> str:
    """Accept `http://host:port` as well as `http://host:port/v1` (the OpenAI convention)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{redact_url(url)!r} is not an http(s) URL")
    path = parts.path.rstrip("/")
    return urlunsplit(parts._replace(path=path or "/v1", fragment=""))


def strip_credentials(url: str) -> str:
    """`https://user:key@host/v1?api_key=x` -> `https://host/v1`: keys never reach the store."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_url(url: str) -> str:
    """The URL as it may be printed: userinfo and secret-looking query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_VALUE = re.compile(r"^(sk|pk|rk|sess|key)-[A-Za-z0-9_\-]{12,}$|^Bearer\s", re.IGNORECASE)


def looks_secret(name: str, value: object) -> bool:
    """A parameter that is a credential by its name (api_key, token...) or its value (sk-...)."""
    if _SECRET_PARAM.search(name) and isinstance(value, str) and value:
        return True
    return isinstance(value, str) and bool(_SECRET_VALUE.match(value.strip()))


def redact_argv(argv: list[str]) -> list[str]:
    """A command line as it may be printed (the "resume with" hint): URLs redacted."""
    return [redact_url(a) if "://" in a else a for a in argv]
