"""Issue 28's proof of the backend door: Anthropic's Messages API and Message Batches as one
backend (`--api anthropic`), against a fake of the API the tests start on loopback
(tests/anthropic_server.py, written from Anthropic's public API reference). Each answer is
its own prompt's; every test checks the stored rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import orjson
import pytest
from anthropic_server import AnthropicServer
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import answer, make_prompts, write_jsonl

from synthgen.backends.anthropic.messages import fault_for, message_body
from synthgen.errors import AuthFault, Overloaded, RateLimited, RejectedFault, ServerFault
from synthgen.types import Request

KEY = "sk-ant-test-key-0123456789"
ENV = clean_env(ANTHROPIC_API_KEY=KEY)


def rows(db, sql="SELECT request_id, messages->>'$[-1].content', response FROM corpus"):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def generate(tmp_path, server, *extra, prompts=None, lines=None, env=ENV, start=False):
    write_jsonl(tmp_path / "in.jsonl", lines or [{"prompt": p} for p in prompts])
    args = ["generate", "--api", "anthropic", "--base-url", server.base_url, "--model", "claude-test",
            "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb", *extra]
    return start_synthgen(*args, env=env) if start else synthgen(*args, env=env, timeout=900)


def assert_each_once(db, prompts) -> None:
    got = rows(db)
    assert len({r[0] for r in got}) == len(got), "an answer stored twice"
    assert sorted(r[1] for r in got) == sorted(prompts), "an answer lost"
    assert all(r[2] == answer(r[1]) for r in got), "an answer under another prompt"


def test_a_thousand_prompts_through_429s_529s_and_retry_after(tmp_path):
    faults = {0: " #fault=429", 1: " #fault=529,529", 2: " #fault=500", 3: " #fault=429,529"}
    prompts = [p + faults.get(i % 10, "") for i, p in enumerate(make_prompts(1000))]
    with AnthropicServer() as server:
        # --rpm: the pace is the user's (without it, a fifth of attempts refused would teach the
        # client a slow pace, as a real gateway's 429s should; test_trust_faults covers that)
        result = generate(tmp_path, server, "--concurrency", "64", "--max-attempts", "4",
                          "--rpm", "600000", prompts=prompts)
        assert result.returncode == 0, result.stderr
        assert "http_529" in result.stderr and "rate_limit" in result.stderr  # the faults happened
        assert_each_once(tmp_path / "c.duckdb", prompts)
        assert set(server.answered.values()) == {1}, "a prompt was answered (paid) twice"
        # every request body is the Messages API's own: the key in x-api-key, never Authorization
        body = server.bodies[0]
        assert body["max_tokens"] == 1024 and "stop" not in body and "seed" not in body


def test_faults_are_classed_as_the_api_means_them():
    def fault(status, kind):
        return fault_for(status, orjson.dumps({"type": "error", "error": {"type": kind, "message": "m"}}),
                         {"retry-after": "2"})
    assert isinstance(fault(529, "overloaded_error"), Overloaded)  # adaptive concurrency backs off
    limited = fault(429, "rate_limit_error")
    assert isinstance(limited, RateLimited) and limited.retry_after == 2.0
    assert isinstance(fault(401, "authentication_error"), AuthFault)
    assert isinstance(fault(500, "api_error"), ServerFault)
    assert type(fault(400, "invalid_request_error")) is RejectedFault
    assert fault(529, "overloaded_error").message == "HTTP 529: m"


def test_the_request_is_written_the_way_the_messages_api_wants_it():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "calc", "arguments": '{"x": 1}'}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "2"},
                {"role": "user", "content": "and?"}]
    params = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 99, "stop": ["END"], "seed": 4}
    body = message_body("claude-test", Request("r", json.dumps(messages), json.dumps(params), 1, 0),
                        cache_prompt=True)
    assert body["system"] == [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "t1", "name": "calc",
                                               "input": {"x": 1}}]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "2"}, {"type": "text", "text": "and?"}]
    assert body["stop_sequences"] == ["END"] and body["max_tokens"] == 99 and body["temperature"] == 0.7
    assert "seed" not in body and "top_p" not in body and "stop" not in body


def test_thinking_is_stored_as_reasoning(tmp_path):
    prompts = make_prompts(6)
    with AnthropicServer() as server:
        result = generate(tmp_path, server, "--extra-body",
                          '{"thinking": {"type": "enabled", "budget_tokens": 1024}}', prompts=prompts)
        assert result.returncode == 0, result.stderr
    got = rows(tmp_path / "c.duckdb", "SELECT messages->>'$[-1].content', response, reasoning FROM corpus")
    assert len(got) == 6 and all(r[1] == answer(r[0]) and r[2] == f"THINK[{r[0]}]" for r in got)


def test_a_cached_system_prompt_is_priced_as_the_cache_bills_it(tmp_path):
    system = "You are a careful teacher. " * 20
    lines = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": p}]}
             for p in make_prompts(5)]
    with AnthropicServer() as server:
        result = generate(tmp_path, server, "--cache-prompt", "--concurrency", "1", "--price-in", "3",
                          "--price-out", "15", "--price-cached-in", "0.3", "--price-cache-write", "3.75",
                          lines=lines)
        assert result.returncode == 0, result.stderr
    got = rows(tmp_path / "c.duckdb", "SELECT prompt_tokens, completion_tokens, cached_tokens, "
                                      "cache_write_tokens FROM corpus ORDER BY line")
    words = len(system.split())
    assert [r[3] for r in got] == [words, 0, 0, 0, 0]  # written to the cache once...
    assert [r[2] for r in got] == [0, words, words, words, words]  # ... then read from it
    prompt_t, out_t = sum(r[0] for r in got), sum(r[1] for r in got)
    fresh = prompt_t - 5 * words
    cost = (fresh * 3 + 4 * words * 0.3 + words * 3.75 + out_t * 15) / 1e6
    assert f"estimated cost: ${cost:,.4f}" in result.stderr, result.stderr
    status = synthgen("status", "--db", tmp_path / "c.duckdb", env=ENV)
    assert f"${cost:,.4f}" in status.stdout + status.stderr


def test_a_message_batch_killed_mid_poll_is_resumed_and_each_request_answered_once(tmp_path):
    prompts = [*make_prompts(40), "refused #batch=errored", "late #batch=expired"]
    with AnthropicServer() as server:
        server.polls_to_end = 10**6  # the batch stays in progress until the kill
        fast = ["--batch", "--batch-poll-interval", "0.05", "--batch-poll-max", "0.1"]
        proc = generate(tmp_path, server, *fast, prompts=prompts, start=True)
        deadline = time.monotonic() + 120
        while server.polls < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert server.batch_posts == 1 and server.polls >= 3, proc.stderr.read() if proc.poll() else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        server.polls_to_end = 2
        rerun = generate(tmp_path, server, *fast, prompts=prompts)
        assert rerun.returncode == 0, rerun.stderr
        assert "re-attached to 1 batches" in rerun.stderr
        # the first batch carried all 42; the expired one went into a second batch, alone
        assert server.batch_posts == 2 and server.batch_runs["late #batch=expired"] == 2
    assert_each_once(tmp_path / "c.duckdb", [p for p in prompts if "errored" not in p])
    assert rows(tmp_path / "c.duckdb", "SELECT error_type FROM failures") == [("http_400",)]
    assert all(server.answered[p] == 1 for p in prompts if "errored" not in p)


def test_what_the_api_cannot_do_is_refused_before_anything_is_sent(tmp_path):
    with AnthropicServer() as server:
        result = generate(tmp_path, server, "--logprobs", "5", prompts=["hi"])
        assert result.returncode == 2 and "gives no log-probabilities" in result.stderr, result.stderr
        wrong = generate(tmp_path, server, prompts=["hi"],
                         env=clean_env(ANTHROPIC_API_KEY="sk-ant-wrong-0000"))
        assert wrong.returncode != 0 and "refused the request" in wrong.stderr, wrong.stderr
        assert "sk-ant-wrong" not in wrong.stderr
        assert sum(server.received.values()) == 0


THROWAWAY = '''
from synthgen.backends.base import Backend
from synthgen.types import Answer


class Echo:
    """A backend of a few lines: every answer is its prompt's, spoken back."""

    def __init__(self, base_url, model, api_key, timeout, options):
        self.endpoint = "echo://" + model

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def send(self, request):
        import json
        prompt = json.loads(request.messages)[-1]["content"]
        return Answer(text="ECHO " + prompt, finish_reason="stop", prompt_tokens=1,
                      completion_tokens=2, model="echo", logprobs=None, endpoint=self.endpoint)


BACKEND = Backend(name="echo", transport=Echo, api_key_env="ECHO_KEY", base_url="http://127.0.0.1:9/v1")
'''


def test_a_backend_another_package_adds_through_an_entry_point(tmp_path):
    """A new backend is one file and an entry point: nothing in synthgen names it."""
    site = tmp_path / "site"
    dist = site / "throwaway_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "throwaway_backend.py").write_text(THROWAWAY)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[synthgen.backends]\necho = throwaway_backend:BACKEND\n")
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(12)])
    env = clean_env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    result = synthgen("generate", "--api", "echo", "--model", "m", "--input", tmp_path / "in.jsonl",
                      "--db", tmp_path / "c.duckdb", env=env)
    assert result.returncode == 0, result.stderr
    got = rows(tmp_path / "c.duckdb")
    assert len(got) == 12 and all(r[2] == "ECHO " + r[1] for r in got)
    unknown = synthgen("generate", "--api", "nope", "--model", "m", "--input", tmp_path / "in.jsonl",
                       "--db", tmp_path / "d.duckdb", env=env)
    assert unknown.returncode == 2 and "no such backend (there are: anthropic, echo, openai" in unknown.stderr


def test_generate_takes_a_transport_from_python(tmp_path):
    """The Python API sends through any transport given: here the in-process mock."""
    import synthgen as sg
    from synthgen.backends.mock import MockTransport

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(7)])
    mock = MockTransport(lambda request: "MOCK " + json.loads(request.messages)[-1]["content"])
    summary = sg.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m", transport=mock)
    assert (summary.status, summary.answered) == ("done", 7)
    got = rows(tmp_path / "c.duckdb")
    assert all(r[2] == "MOCK " + r[1] for r in got) and len(mock.calls) == 7


@pytest.mark.parametrize("module", ["synthgen.backends.anthropic", "synthgen.backends.registry"])
def test_naming_a_backend_loads_no_http_client(module):
    """`--api` is checked by the config: that must not cost aiohttp's import."""
    code = f"import sys, {module}; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
