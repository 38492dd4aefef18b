"""One exception tree for synthgen.

    SynthgenError                 anything synthgen raises on purpose
    ├── ConfigError               a bad flag or config-file field (names the field)
    ├── InputError                bad input rows (names each line and why)
    ├── StoreError                the DuckDB file cannot be opened or is not a synthgen store
    │   └── StoreWriteError       a commit failed mid-run (full disk): what was kept, where
    ├── TeacherError              a local or vLLM teacher could not be started
    ├── ScoringError              a teacher cannot score given tokens, or not these (its
    │                             API cannot, its tokenizer is not the answers')
    └── RunAborted                the run stopped early on purpose (bad key, teacher gone)

    TeacherFault                  one attempt at one request went wrong
    ├── RetryableFault            worth another attempt
    │   ├── ConnectionFault       refused, reset, dropped mid-body
    │   ├── TimeoutFault          no complete answer within --timeout
    │   ├── InvalidResponse       200 with a truncated or malformed body
    │   │   └── SchemaMismatch    an answer that does not parse or fit --response-schema
    │   │       └── LengthCut     ... because max_tokens cut it (at temperature > 0)
    │   ├── StatusFault           an HTTP status that means "not now" (408, 409, odd 1xx/3xx)
    │   │   ├── RateLimited       429: a quota is spent (carries Retry-After)
    │   │   └── ServerFault       5xx: the server failed this attempt
    │   │       └── Overloaded    502/503/504: the server (or its gateway) has too much
    │   └── BatchFailed           the Batch API failed a whole batch without naming a line
    ├── RejectedFault             any other 4xx: the request itself is wrong
    │   ├── AuthFault             401/403: the endpoint refuses us, not the prompt
    │   ├── EndpointRefused       the endpoint says it cannot serve at all (no database...)
    │   ├── Redirected            3xx: the endpoint sends us elsewhere (never followed)
    │   └── TooLarge              413: the body (a batch file) is larger than it takes
    ├── CutShort                  cut by max_tokens where another attempt gives the same
    └── NotRun                    a batch ended (expired, cancelled) before this request ran

Only the backends look at status codes (`backends/http.py` for a chat request, and
`backends/openai_batch.py` for the lines of a batch file, through the same map): they
turn every response into the most specific class above. Every reaction (retry, the
shared pause, endpoint health, the adaptive limit, stopping early) is decided by class,
never by a status code or a message.

A fault whose attempt the teacher did answer (a misfit, a cut) carries that answer in
`paid`: it was billed, so its usage is stored (`wasted_attempts`) and priced like a kept one.
"""

from __future__ import annotations

import re
from typing import Any

# How DuckDB says a file is damaged (a block's checksum fails, a header makes no sense).
DAMAGE = re.compile(r"corrupt|checksum|not a valid DuckDB database", re.IGNORECASE)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none):
    what a one-line error quotes of a cause, e.g. a DuckDB error that goes on for lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


class StoreWriteError(StoreError):
    """A commit failed during a run (a full disk, say). Sending stopped; `committed` answers
    are stored, `unsaved` outcomes were received but not stored and sit in `saved_to` (a
    recovery file the next run stores first), or nowhere if that could not be written."""

    def __init__(self, cause: str, committed: int = 0, unsaved: int = 0,
                 saved_to: object = None, why: str = ""):
        kept = (f"{unsaved:,} received but not stored are saved in {saved_to} and are stored "
                "first by the next run" if saved_to else
                f"{unsaved:,} received were not stored{why}" if unsaved else
                "nothing received was left unstored")
        # A block whose checksum fails is a damaged file, not a full disk: more space would
        # not help, and running again on it would write more into a broken file.
        self.damaged = bool(DAMAGE.search(cause))
        advice = ("The store file is damaged: restore it from a copy (or start a new --db); "
                  "running again on this file would not help." if self.damaged else
                  "Free space (or fix the cause), then run the same command again: only what "
                  "is missing is sent.")
        what = "is damaged" if self.damaged else "could not be written"
        super().__init__(
            f"the store {what} ({cause}); sending stopped. {committed:,} answers of this run "
            f"are stored; {kept}. {advice}")
        self.committed = committed
        self.unsaved = unsaved
        self.saved_to = saved_to


class TeacherError(SynthgenError):
    """A teacher server could not be started or reached."""


class ScoringError(SynthgenError):
    """Teacher scoring cannot go ahead: the API cannot score given tokens, or the teacher's
    tokenizer is not the one the answers were written with; the message says what to do."""


class RunAborted(SynthgenError):
    """The engine stopped early on purpose; the store is consistent and resumable."""


class TeacherFault(Exception):
    """One failed attempt at one request.

    `kind` is the short name stored in `failures.error_type` and shown in progress.
    """

    kind = "error"
    paid: Any = None  # the Answer this attempt returned and the provider billed, if any

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


class InvalidResponse(RetryableFault):
    kind = "invalid_response"


class SchemaMismatch(InvalidResponse):
    """The answer is not JSON, or not JSON that fits the run's response schema. Another
    attempt is another sample (the teacher may well get it right), so it is retried; one
    that never fits is filed under failures as 'schema' with the validator's message."""

    kind = "schema"


class LengthCut(SchemaMismatch):
    """A misfit because max_tokens cut the answer, at a temperature where another sample
    may be shorter: retried, but only `--length-retries` times (each retry is paid)."""

    kind = "length"


class StatusFault(RetryableFault):
    """An HTTP status the server means as "not now"; `kind` is `http_<status>`."""

    kind = "http"

    def __init__(self, message: str, status_code: int, retry_after: float | None = None):
        super().__init__(message, status_code, retry_after)
        self.kind = f"http_{status_code}"


class RateLimited(StatusFault):
    """A quota is spent (429): every request should wait, not only this one."""

    def __init__(self, message: str, status_code: int = 429, retry_after: float | None = None):
        super().__init__(message, status_code, retry_after)
        self.kind = "rate_limit"


class ServerFault(StatusFault):
    """The server failed this attempt (5xx); several in a row say the endpoint is sick."""


class Overloaded(ServerFault):
    """The server or its gateway has more than it can take (502, 503, 504)."""


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


class Redirected(RejectedFault):
    """A 3xx: the answer would come from another URL, which is not the teacher we were
    given; every request would meet the same redirect, so the run stops early."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message, status_code)
        self.kind = "redirect"


class EndpointRefused(RejectedFault):
    """The endpoint says, in words, that it cannot serve anyone (a gateway whose database is
    missing, an unconfigured proxy): nothing the prompts can change."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message, status_code)
        self.kind = "endpoint"


class TooLarge(RejectedFault):
    """413: the body is larger than the endpoint takes. For one chat request that is the
    prompt's fault (kind stays `http_413`); for a batch file upload it means: split it."""


class CutShort(TeacherFault):
    """An answer that max_tokens cut before it fit the schema, at temperature 0 or with a
    seed: another attempt would be cut the same way and paid again, so there is none. The
    failure keeps the text and its usage; the fix is a larger max_tokens."""

    kind = "length"


class BatchFailed(RetryableFault):
    """The Batch API failed a whole batch (validation, a spent enqueued-token quota)
    without naming a line: each of its requests had an attempt that went wrong."""

    kind = "batch_failed"


class NotRun(TeacherFault):
    """A batch ended (expired, cancelled) before this request ran: no attempt was made,
    so it counts against nothing and goes to a later batch."""

    kind = "not_run"
