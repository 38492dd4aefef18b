"""One exception tree for synthgen.

    SynthgenError                 anything synthgen raises on purpose
    ├── ConfigError               a bad flag or config-file field (names the field)
    ├── InputError                bad input rows (names each line and why)
    ├── StoreError                the DuckDB file cannot be opened or is not a synthgen store
    ├── TeacherError              a local or vLLM teacher could not be started
    └── RunAborted                the run stopped early on purpose (bad key, teacher gone)

    TeacherFault                  one attempt at one request went wrong
    ├── RetryableFault            worth another attempt
    │   ├── ConnectionFault       refused, reset, dropped mid-body
    │   ├── TimeoutFault          no complete answer within --timeout
    │   ├── StatusFault           408/409/429/5xx (carries Retry-After)
    │   └── InvalidResponse       200 with a truncated or malformed body
    └── RejectedFault             any other 4xx: the request itself is wrong
        └── AuthFault             401/403: the endpoint refuses us, not the prompt

What is retried is decided by class (see `retry.py`), never by reading a message.
"""

from __future__ import annotations


class SynthgenError(Exception):
    """Base class for errors synthgen reports to the user without a traceback."""


class ConfigError(SynthgenError):
    """A configuration value is invalid; the message names the field."""


class InputError(SynthgenError):
    """Input rows are invalid. `problems` holds (line, reason) pairs, first ones only."""

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None, count: int = 0):
        super().__init__(message)
        self.problems = problems or []
        self.count = count or len(self.problems)


class StoreError(SynthgenError):
    """The store cannot be used (locked, not a synthgen database, newer schema)."""


class TeacherError(SynthgenError):
    """A teacher server could not be started or reached."""


class RunAborted(SynthgenError):
    """The engine stopped early on purpose; the store is consistent and resumable."""


class TeacherFault(Exception):
    """One failed attempt at one request.

    `kind` is the short name stored in `failures.error_type` and shown in progress.
    """

    kind = "error"

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


class RetryableFault(TeacherFault):
    kind = "retryable"


class ConnectionFault(RetryableFault):
    kind = "connection"


class TimeoutFault(RetryableFault):
    kind = "timeout"


class StatusFault(RetryableFault):
    """An HTTP status the server means as "not now": 408, 409, 429, 5xx."""

    kind = "http"

    def __init__(self, message: str, status_code: int, retry_after: float | None = None):
        super().__init__(message, status_code, retry_after)
        self.kind = "rate_limit" if status_code == 429 else f"http_{status_code}"


class InvalidResponse(RetryableFault):
    kind = "invalid_response"


class RejectedFault(TeacherFault):
    """A 4xx that another attempt will not fix (400, 404, 422, ...)."""

    kind = "rejected"

    def __init__(self, message: str, status_code: int):
        super().__init__(message, status_code)
        self.kind = f"http_{status_code}"


class AuthFault(RejectedFault):
    """401/403: the endpoint refuses the key, so every request would fail the same way."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message, status_code)
        self.kind = "auth"
