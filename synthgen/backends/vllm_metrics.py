"""vLLM's own word on its queue: `GET /metrics` (Prometheus text), read for backpressure.

vLLM never answers 429. A request beyond what it can run at once (`--max-num-seqs`, the
KV cache, the step's token budget) waits in its scheduler, and a client sees only a slower
answer, after the fact. Its /metrics says so at once, per engine and model:

    vllm:num_requests_waiting   queued, not running yet
    vllm:num_requests_running   in the running batch
    vllm:kv_cache_usage_perc    0..1 (vllm:gpu_cache_usage_perc before v0.10)

The route sits at the server's root, beside /v1, and takes no API key. A server that has
no such route, or no vLLM gauges in it, reads as None: no word, no signal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ..urls import strip_credentials

READ_TIMEOUT = 2.0
_SAMPLE = re.compile(r"^(vllm:[a-z_]+)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass(frozen=True)
class ServerLoad:
    """One reading of a vLLM server: requests waiting and running (summed over its engines),
    and the fullest engine's KV cache (None when it does not say)."""

    waiting: float
    running: float
    kv_usage: float | None


def parse_metrics(text: str) -> ServerLoad | None:
    """The load in a /metrics page; None when it holds no vLLM queue gauge."""
    sums: dict[str, float] = {}
    kv: float | None = None
    for name, _labels, value in _SAMPLE.findall(text):
        try:
            number = float(value)
        except ValueError:
            continue
        if name in _KV:
            kv = number if kv is None else max(kv, number)
        elif name in ("vllm:num_requests_waiting", "vllm:num_requests_running"):
            sums[name] = sums.get(name, 0.0) + number
    if "vllm:num_requests_waiting" not in sums:
        return None
    return ServerLoad(sums["vllm:num_requests_waiting"], sums.get("vllm:num_requests_running", 0.0), kv)


def metrics_url(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port/metrics (credentials and query dropped)."""
    parts = urlsplit(strip_credentials(base_url))
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path + "/metrics", "", ""))


class MetricsReader:
    """Reads one server's /metrics; `async with` it, then `read()` as often as wanted."""

    def __init__(self, base_url: str):
        self.url = metrics_url(base_url)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MetricsReader:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=READ_TIMEOUT))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def read(self) -> ServerLoad | None:
        """The server's load now; None if it cannot say (no route, down, not vLLM)."""
        assert self._session is not None, "use `async with MetricsReader(...)`"
        try:
            async with self._session.get(self.url, allow_redirects=False) as resp:
                if resp.status != 200:
                    return None
                return parse_metrics(await resp.text())
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            return None
