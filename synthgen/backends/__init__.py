"""Backends: how one request reaches a teacher and comes back as an `Answer`.

A backend is anything with `async send(request) -> Answer` that raises a `TeacherFault`
(see `base.Transport`). `http` is the OpenAI-compatible chat endpoint over aiohttp;
`mock` answers in-process from a function, for fast engine tests. `openai_batch` is
the other way to reach a teacher: the Batch API's files and batches (used by
`synthgen.batch`, not by the engine), with each output line mapped to an Answer or a
fault by the same map as `http`.
"""
