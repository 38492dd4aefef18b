"""Batch files without an API: `synthgen batch write` for `vllm run-batch`, `synthgen batch
ingest` for what it writes back, and the line format both sides share.

`run_batch_like_vllm` does what `vllm run-batch -i IN -o OUT` does with a file (vLLM is no
dependency of the tests): each line must parse as vLLM's BatchRequestInput (custom_id,
method, url /v1/chat/completions, a chat body with model and messages); its body is POSTed
to a real OpenAI-compatible server (the loopback teacher), and the answer is written as a
BatchRequestOutput line: a 200 with the completion as `response.body`, an error with
`response.status_code` and `error` set, as vLLM's run_batch writes them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
from conftest import synthgen
from teacher_server import answer, make_prompts, write_jsonl

from synthgen.backends.http import HttpTransport
from synthgen.backends.openai_batch import BadLine, BatchInfo, outcome, request_line
from synthgen.batch.files import Splitter
from synthgen.errors import (
    AuthFault,
    BatchFailed,
    InvalidResponse,
    NotRun,
    RateLimited,
    RejectedFault,
    ServerFault,
)
from synthgen.types import Answer, Request

CHAT_KEYS = {"model", "messages"}


def run_batch_like_vllm(src: Path, dst: Path, base_url: str) -> int:
    lines = 0
    with open(src, "rb") as fh, open(dst, "wb") as out, httpx.Client(timeout=30) as client:
        for raw in fh:
            line = orjson.loads(raw)
            assert set(line) == {"custom_id", "method", "url", "body"}, line.keys()
            assert isinstance(line["custom_id"], str) and line["method"] == "POST"
            assert line["url"] == "/v1/chat/completions"
            assert set(line["body"]) >= CHAT_KEYS and isinstance(line["body"]["messages"], list)
            resp = client.post(base_url + "/chat/completions", json=line["body"])
            if resp.status_code == 200:
                result = {"id": f"vllm-{uuid.uuid4().hex}", "custom_id": line["custom_id"],
                          "response": {"status_code": 200, "request_id": f"vllm-batch-{uuid.uuid4().hex}",
                                       "body": resp.json()}, "error": None}
            else:
                error = {"object": "error", "message": resp.json()["error"]["message"],
                         "type": "BadRequestError", "param": None, "code": resp.status_code}
                result = {"id": f"vllm-{uuid.uuid4().hex}", "custom_id": line["custom_id"],
                          "response": {"status_code": resp.status_code,
                                       "request_id": f"vllm-batch-{uuid.uuid4().hex}", "body": None},
                          "error": error}
            out.write(orjson.dumps(result) + b"\n")
            lines += 1
    return lines


def corpus(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, messages->>'$[0].content', params->>'seed', response, "
                           "endpoint FROM corpus").fetchall()
    finally:
        con.close()


def test_write_then_ingest_round_trips_through_the_vllm_format(teacher, tmp_path):
    prompts = [*make_prompts(11), "refused #always=400"]
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db, out = tmp_path / "c.duckdb", tmp_path / "batches"
    written = synthgen("batch", "write", "--db", db, "--out", out, "--input", tmp_path / "in.jsonl",
                       "--model", "m", "--n", "2", "--seed", "5", "--max-tokens", "32",
                       "--batch-max-requests", "10")
    assert written.returncode == 0, written.stderr
    assert "planned 24 requests" in written.stderr and "wrote 24 requests in 3 files" in written.stderr
    files = sorted(out.glob("batch-*.jsonl"))
    assert [len(f.read_bytes().splitlines()) for f in files] == [10, 10, 4]
    outputs = []
    for f in files:
        dst = f.with_suffix(".out.jsonl")
        run_batch_like_vllm(f, dst, teacher.base_url)
        outputs.append(dst)
    ingested = synthgen("batch", "ingest", "--db", db, *outputs)
    assert ingested.returncode == 0, ingested.stderr
    rows = corpus(db)
    assert len(rows) == 22 and len({r[0] for r in rows}) == 22
    for _, prompt, seed, response, endpoint in rows:
        assert response == answer(prompt, int(seed)), (prompt, response)
        assert endpoint.startswith("file:batch-")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*), min(error_type), min(attempts) FROM failures").fetchone() == (
        2, "http_400", 1)
    assert [s for (s,) in con.execute("SELECT status FROM runs ORDER BY run_id").fetchall()] == [
        "planned", "done"]
    con.close()
    # The same files again store nothing: every answer is there already.
    again = synthgen("batch", "ingest", "--db", db, *outputs)
    assert again.returncode == 0, again.stderr
    assert "0 answers stored" in again.stdout and "stored before" in again.stdout
    assert len(corpus(db)) == 22
    # Nothing is pending now (the refused ones are failures): nothing to write.
    empty = tmp_path / "empty"
    rewritten = synthgen("batch", "write", "--db", db, "--out", empty)
    assert rewritten.returncode == 0 and "nothing pending" in rewritten.stderr
    # The planned requests are what `generate` would send: the same ids, so no resend.
    teacher.received.clear()
    online = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--n", "2", "--seed", "5", "--max-tokens", "32", "--base-url", teacher.base_url)
    assert online.returncode == 0, online.stderr
    assert sum(teacher.received.values()) == 0


def test_ingest_refuses_what_is_not_its_own(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(3)])
    db, out = tmp_path / "c.duckdb", tmp_path / "b"
    assert synthgen("batch", "write", "--db", db, "--out", out, "--input", tmp_path / "in.jsonl",
                    "--model", "m").returncode == 0
    [f] = out.glob("batch-*.jsonl")
    # An input file is not an output file; a line for another store's request is left alone.
    stranger = tmp_path / "stranger.jsonl"
    body = {"choices": [{"message": {"content": "hi"}}]}
    stranger.write_bytes(orjson.dumps({"id": "x", "custom_id": "0" * 32, "error": None, "response": {
        "status_code": 200, "request_id": "r", "body": body}}) + b"\n")
    result = synthgen("batch", "ingest", "--db", db, f, stranger)
    assert result.returncode == 1
    assert "3 lines that are not batch output" in result.stdout
    assert "1 lines for requests this store does not have" in result.stdout
    assert not corpus(db)
    # Writing into a directory that already holds batch files is refused (stale files).
    again = synthgen("batch", "write", "--db", db, "--out", out)
    assert again.returncode == 2 and "already holds batch-*.jsonl" in again.stderr
    missing = synthgen("batch", "ingest", "--db", db, tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_batch_write_leaves_out_requests_in_flight_at_an_api(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(5)])
    db = tmp_path / "c.duckdb"
    first = synthgen("batch", "write", "--db", db, "--out", tmp_path / "a", "--input",
                     tmp_path / "in.jsonl", "--model", "m")
    assert first.returncode == 0 and "wrote 5 requests in 1 files" in first.stderr, first.stderr
    # Three of them go into a batch at an API (as `generate --batch` records it) ...
    con = duckdb.connect(str(db))
    ids = [r for (r,) in con.execute("SELECT request_id FROM requests ORDER BY line LIMIT 3").fetchall()]
    con.execute("INSERT INTO batches (batch_key, endpoint, state, requests) "
                "VALUES ('k', 'x', 'submitted', 3)")
    con.execute("INSERT INTO batch_requests SELECT 'k', unnest($1), 1", [ids])
    con.close()
    # ... so a file for elsewhere must not carry them: they would be paid for twice.
    result = synthgen("batch", "write", "--db", db, "--out", tmp_path / "b")
    assert result.returncode == 0, result.stderr
    assert "3 pending requests are in flight" in result.stderr and "wrote 2 requests" in result.stderr
    [f] = (tmp_path / "b").glob("batch-*.jsonl")
    assert not {orjson.loads(line)["custom_id"] for line in f.read_bytes().splitlines()} & set(ids)
    status = synthgen("batch", "status", "--db", db)
    assert status.returncode == 0 and "1 batches, 1 in flight (3 requests)" in status.stdout, status.stdout


# -- the line format ----------------------------------------------------------------------

REQUEST = Request("ab" * 16, '[{"content":"hi","role":"user"}]', '{"max_tokens":8,"seed":3}', 1, 0)


def test_a_request_line_carries_the_online_body_byte_for_byte():
    body = HttpTransport("http://127.0.0.1:9/v1", "gpt-x").body(REQUEST)
    line = request_line(REQUEST.request_id, body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = orjson.loads(line)
    assert data == {"custom_id": REQUEST.request_id, "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-x", "messages": [{"content": "hi", "role": "user"}],
                             "max_tokens": 8, "seed": 3}}
    assert line[line.index(b'"body":') + 7:-2] == body


def _line(**fields) -> bytes:
    return orjson.dumps({"id": "batch_req_1", "custom_id": "c1", "response": None, "error": None, **fields})


COMPLETION = {"model": "m", "choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


@pytest.mark.parametrize(("line", "expected"), [
    (_line(response={"status_code": 200, "request_id": "r", "body": COMPLETION}), Answer),
    (_line(response={"status_code": 429, "request_id": "r", "body": {"error": {"message": "slow"}}}),
     RateLimited),
    (_line(response={"status_code": 500, "request_id": "r", "body": {"error": {"message": "x"}}}),
     ServerFault),
    (_line(response={"status_code": 401, "request_id": "r", "body": {"error": {"message": "key"}}}),
     AuthFault),
    (_line(response={"status_code": 400, "request_id": "r", "body": None}, error="vLLM: bad"), RejectedFault),
    (_line(error={"code": "batch_expired", "message": "not run"}), NotRun),
    (_line(error={"code": "batch_cancelled", "message": "not run"}), NotRun),
    (_line(error={"code": "server_error", "message": "boom"}), InvalidResponse),
    (_line(response={"status_code": 200, "request_id": "r", "body": {"choices": []}}), InvalidResponse),
], ids=["answer", "429", "500", "401", "vllm-400", "expired", "cancelled", "other-error", "broken-200"])
def test_every_output_line_maps_to_an_answer_or_a_fault_class(line, expected):
    custom_id, result = outcome(line, "e")
    assert custom_id == "c1"
    assert isinstance(result, expected), result
    if isinstance(result, Answer):
        assert (result.text, result.prompt_tokens, result.endpoint) == ("yes", 3, "e")
    if expected is RejectedFault:
        assert "vLLM: bad" in result.message and result.status_code == 400


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"id": 1}',
                                 b'{"custom_id": "c", "method": "POST", "url": "/v1/chat/completions"}'])
def test_a_line_that_is_no_batch_output_is_said_to_be(raw):
    with pytest.raises(BadLine):
        outcome(raw, "e")


def test_a_failed_batch_names_its_lines_or_fails_them_all():
    info = BatchInfo.of({"id": "b", "status": "failed", "errors": {"data": [
        {"code": "invalid_request", "message": "bad", "line": 2},
        {"code": "too_long", "message": "x", "line": None}]}})
    faults = info.line_faults()
    assert list(faults) == [2] and isinstance(faults[2], RejectedFault) and faults[2].kind == "batch_invalid"
    assert isinstance(info.failure(), BatchFailed) and "too_long" in info.message()


def test_the_splitter_never_passes_a_limit(tmp_path):
    splitter = Splitter(tmp_path, max_requests=3, max_bytes=100)
    files = []
    for i, size in enumerate([40, 40, 20, 30, 101, 10, 10, 10, 99]):
        done = splitter.add(f"r{i}", b"x" * (size - 1) + b"\n")
        if done is not None:
            files.append(done)
    files.append(splitter.finish())
    assert [f.request_ids for f in files] == [["r0", "r1", "r2"], ["r3", "r5", "r6"], ["r7"], ["r8"]]
    assert [f.size for f in files] == [100, 50, 10, 99]
    assert all(f.path.stat().st_size == f.size for f in files)
    assert splitter.oversized == ["r4"]


def test_output_lines_with_odd_typed_fields_are_stored_every_time(teacher, tmp_path):
    """Issue 24 #4: three lines with `"prompt_tokens": "12"` crashed ingest on every run,
    and the 1,000 answers the API had completed were never stored. Each field is now read
    as the store can hold it, and a second ingest stores nothing more."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(12)])
    db, out = tmp_path / "c.duckdb", tmp_path / "batches"
    assert synthgen("batch", "write", "--db", db, "--out", out, "--input", tmp_path / "in.jsonl",
                    "--model", "m").returncode == 0
    [src] = sorted(out.glob("batch-*.jsonl"))
    dst = tmp_path / "out.jsonl"
    run_batch_like_vllm(src, dst, teacher.base_url)
    lines = [orjson.loads(line) for line in dst.read_bytes().splitlines()]
    odd = [{"prompt_tokens": "12"}, {"prompt_tokens": "12", "completion_tokens": 2**40},
           {"prompt_tokens": "12", "completion_tokens": {"n": 1}}]
    for line, usage in zip(lines, odd, strict=False):
        line["response"]["body"]["usage"] = usage
    lines[3]["response"]["body"]["model"] = {"name": "m"}
    lines[4]["response"]["body"]["choices"][0]["finish_reason"] = [1]
    lines[5]["response"]["status_code"] = True  # not a status: retried in a later batch
    lines[6]["response"]["body"]["choices"][0]["message"]["content"] = {"not": "text"}
    dst.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    result = synthgen("batch", "ingest", "--db", db, dst)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = corpus(db)
    assert len(rows) == 10 and all(response == answer(prompt) for _, prompt, _, response, _ in rows)
    con = duckdb.connect(str(db), read_only=True)
    tokens = con.execute("SELECT prompt_tokens, completion_tokens FROM responses").fetchall()
    con.close()
    assert tokens.count((12, None)) == 3  # "12" read as 12; 2**40 and an object as unknown
    again = synthgen("batch", "ingest", "--db", db, dst)
    assert again.returncode == 0 and "0 answers stored" in again.stdout, again.stderr
    assert len(corpus(db)) == 10
