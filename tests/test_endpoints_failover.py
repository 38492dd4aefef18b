"""Several --base-url: one endpoint dies mid-run; nothing is lost, nothing stored twice;
and a dead endpoint is probed and put back once it answers again."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time

import duckdb
from teacher_server import TeacherServer, answer, make_prompts, write_jsonl

from synthgen.backends.http import HttpTransport
from synthgen.engine.governor import Governor
from synthgen.errors import ConnectionFault
from synthgen.run import generate
from synthgen.types import Request


def kill_after(server: TeacherServer, requests: int) -> threading.Thread:
    def watch() -> None:
        while sum(server.received.values()) < requests:
            time.sleep(0.005)
        server.stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_one_of_two_endpoints_killed_mid_run_loses_no_prompt(tmp_path):
    prompts = make_prompts(1200)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    with TeacherServer(latency=0.02) as alive:
        doomed = TeacherServer(latency=0.02).start()
        killer = kill_after(doomed, 300)
        summary = generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m",
                           base_urls=[doomed.base_url, alive.base_url], concurrency=32,
                           progress=io.StringIO())
        killer.join(10)
        doomed.stop()
    assert summary.status == "done", summary.message
    assert summary.answered == len(prompts) and summary.failed == 0
    assert summary.errors.get("connection", 0) > 0, "the endpoint was not killed mid-run"
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    rows = con.execute("SELECT request_id, messages->>'$[0].content', response FROM corpus").fetchall()
    endpoints = dict(con.execute("SELECT endpoint, count(*) FROM corpus GROUP BY 1").fetchall())
    assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
    con.close()
    assert len({r[0] for r in rows}) == len(rows) == len(prompts), "a prompt stored twice or lost"
    assert sorted(r[1] for r in rows) == sorted(prompts)
    assert all(resp == answer(prompt) for _, prompt, resp in rows)
    assert len(endpoints) == 2, endpoints  # both served until one died


def test_a_dead_endpoint_is_taken_out_probed_and_put_back():
    body = Request("r1", '[{"role":"user","content":"hi"}]', "{}", 1, 0)

    async def scenario(a: TeacherServer, b: TeacherServer) -> None:
        async with HttpTransport(a.base_url, "m", None, 5.0) as ta, \
                HttpTransport(b.base_url, "m", None, 5.0) as tb:
            client = Governor.with_health([ta, tb])
            health = client.health
            port = a.port
            await asyncio.to_thread(a.stop)
            for _ in range(3):  # the first may fail on the dead one; the rest go elsewhere
                with contextlib.suppress(ConnectionFault):
                    await client.send(body)
            assert health.up == [1]
            served = sum(b.received.values())
            for _ in range(5):
                await client.send(body)
            assert sum(b.received.values()) == served + 5
            await asyncio.to_thread(a.start, port)
            for _ in range(200):  # the probe's first try comes after PROBE_FIRST seconds
                if health.up == [0, 1]:
                    break
                await asyncio.sleep(0.05)
            assert health.up == [0, 1]
            await client.send(body)
            await client.send(body)
            assert a.received["hi"] >= 1
            await client.aclose()

    with TeacherServer() as a, TeacherServer() as b:
        asyncio.run(scenario(a, b))
