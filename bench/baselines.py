"""The baselines: a bare client + asyncio.Semaphore, no storage (answers kept in a list).

    python bench/baselines.py {aiohttp,openai,httpx} --input prompts.jsonl \
        --base-url http://127.0.0.1:PORT/v1 --concurrency 256

Reads the same JSONL the engine reads, sends each prompt once as a chat completion, keeps
the answer text in memory, and prints one JSON line: {"sent", "ok", "seconds"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import orjson


async def drive(prompts, one, concurrency):
    """Acquire a slot, then start the request's task: at most `concurrency` tasks exist at
    once (gathering one coroutine per prompt up front would make 20,000 tasks that all wait
    on the semaphore, which slows the baseline down and bloats it)."""
    sem = asyncio.Semaphore(concurrency)
    tasks = set()

    async def guarded(p):
        try:
            await one(p)
        finally:
            sem.release()

    for p in prompts:
        await sem.acquire()
        t = asyncio.create_task(guarded(p))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


def load(path: str) -> list[str]:
    with open(path, "rb") as fh:
        return [orjson.loads(line)["prompt"] for line in fh if line.strip()]


async def run_aiohttp(prompts, url, model, concurrency):
    import aiohttp

    out = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(p):
            body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": p}]})
            async with session.post(url + "/chat/completions", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                data = orjson.loads(await resp.read())
            out.append(data["choices"][0]["message"]["content"])
        await drive(prompts, one, concurrency)
    return out


async def run_openai(prompts, url, model, concurrency):
    from openai import AsyncOpenAI

    out = []
    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    async with client:
        async def one(p):
            r = await client.chat.completions.create(model=model,
                                                     messages=[{"role": "user", "content": p}])
            out.append(r.choices[0].message.content)
        await drive(prompts, one, concurrency)
    return out


async def run_httpx(prompts, url, model, concurrency):
    import httpx

    out = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        async def one(p):
            r = await client.post(url + "/chat/completions",
                                  json={"model": model, "messages": [{"role": "user", "content": p}]})
            out.append(r.json()["choices"][0]["message"]["content"])
        await drive(prompts, one, concurrency)
    return out


RUNNERS = {"aiohttp": run_aiohttp, "openai": run_openai, "httpx": run_httpx}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("client", choices=sorted(RUNNERS))
    ap.add_argument("--input", required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default="bench")
    ap.add_argument("--concurrency", type=int, default=256)
    args = ap.parse_args()
    prompts = load(args.input)
    t0 = time.perf_counter()
    out = asyncio.run(RUNNERS[args.client](prompts, args.base_url, args.model, args.concurrency))
    print(json.dumps({"sent": len(prompts), "ok": len(out), "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
