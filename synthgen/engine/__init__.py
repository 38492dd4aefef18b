"""The engine room: everything between "a request is pending" and "its outcome is known".

    core.Engine      the asyncio loop: a worker per slot, stop and drain
    retry            the attempt loop and its tenacity policy (by fault class)
    governor         every attempt's client-side rules, around the transports
    limiter          requests in flight (a limit that can change while it runs)
    quota            --rpm / --tpm token buckets
    adaptive         --concurrency auto
    endpoints        several --base-url: health, take out, probe, put back
    preflight        key, model name and reachability, checked before sending

Nothing here imports DuckDB or a body format: requests come in as `types.Request` and go
out through a `backends.base.Transport`.
"""
