"""A teacher behind a gateway that behaves like LiteLLM's proxy with an rpm limit.

Requests are counted in fixed windows of `window` seconds; beyond `limit` in a window the
answer is a 429 whose only hint is `llm_provider-retry-after` (no Retry-After, no reset),
and every success carries `x-ratelimit-remaining-requests` without a reset header: the
headers LiteLLM 1.108 sends (measured in issue 13).
"""

from __future__ import annotations

import time

from aiohttp import web
from teacher_server import TeacherServer


class GatewayTeacher(TeacherServer):
    def __init__(self, limit: int, window: float = 1.0, retry_after: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit
        self.window = window
        self.gateway_retry_after = retry_after
        self.refused = 0
        self.answered = 0
        self._window_start = 0.0
        self._in_window = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        if now - self._window_start >= self.window:
            self._window_start, self._in_window = now, 0
        self._in_window += 1
        if self._in_window > self.limit:
            self.refused += 1
            return web.json_response(
                {"error": {"message": "litellm.RateLimitError: rpm limit reached", "code": "429"}},
                status=429, headers={"llm_provider-retry-after": str(self.gateway_retry_after)})
        resp = await super()._chat(request)
        if resp.status == 200:
            self.answered += 1
            resp.headers["x-ratelimit-remaining-requests"] = str(max(0, self.limit - self._in_window))
            resp.headers["x-ratelimit-limit-requests"] = str(self.limit)
        return resp
