"""`generate --batch` against a fake Batch API on loopback (tests/batch_api_server.py):
the same plan, ids, bodies and store as online mode; error lines by fault class; files
split at the limits (and after a 413); expired and failed batches' requests resubmitted.

Every test checks the stored rows: each answer must be the answer to the very prompt
stored beside it (the fake derives answers from prompts, as the test teacher does).
"""

from __future__ import annotations

import logging
import os

import duckdb
import orjson
import pytest
from batch_api_server import BatchAPIServer
from teacher_server import answer, make_prompts, write_jsonl

import synthgen
from synthgen.backends.http import HttpTransport
from synthgen.errors import RunAborted
from synthgen.types import Request

FAST = {"batch_poll_interval": 0.01, "batch_poll_max": 0.05}


@pytest.fixture
def api():
    with BatchAPIServer() as server:
        yield server


def run_batch(api, inp, db, **options):
    return synthgen.generate(input=inp, db=db, model="m", base_urls=[api.base_url], batch=True,
                             **{**FAST, **options})


def rows(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def corpus(db):
    return rows(db, "SELECT request_id, messages->>'$[0].content', params->>'seed', response, attempts "
                    "FROM corpus")


def assert_each_answer_is_its_own(found) -> None:
    ids = [r[0] for r in found]
    assert len(ids) == len(set(ids)), "a request is stored twice"
    for _, prompt, seed, response, _ in found:
        assert response == answer(prompt, int(seed) if seed is not None else None), (prompt, response)


def test_a_batch_run_stores_every_answer_once_with_its_own_prompt(api, tmp_path, caplog):
    prompts = make_prompts(30)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p, "i": i} for i, p in enumerate(prompts)])
    api.flaky_polls = 2  # two polls answered 500: retried with backoff, not fatal
    api.poll_latency = 0.02
    with caplog.at_level(logging.INFO, logger="synthgen"):
        summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb", n=2, seed=7,
                            batch_max_requests=25, price_in=1.0, price_out=2.0)
    assert (summary.status, summary.answered, summary.failed, summary.pending) == ("done", 60, 0, 0)
    assert summary.batches_submitted == 3 and api.batch_posts == 3  # 60 requests, 25 per file
    found = corpus(tmp_path / "c.duckdb")
    assert sorted(r[1] for r in found) == sorted(prompts * 2)
    assert_each_answer_is_its_own(found)
    assert {r[4] for r in found} == {1}
    meta = rows(tmp_path / "c.duckdb", "SELECT metadata->>'i', messages->>'$[0].content' FROM corpus")
    assert all(prompts[int(i)] == p for i, p in meta), "metadata travels with its own prompt"
    # It went through every status the API reports, and the store says each batch is done.
    said = caplog.text
    for status in ("validating", "in_progress", "finalizing", "completed"):
        assert status in said
    assert rows(tmp_path / "c.duckdb", "SELECT DISTINCT state, status FROM batches") == [
        ("ingested", "completed")]
    # Cost: the tokens at the prices given, less the batch discount (half by default).
    tokens = rows(tmp_path / "c.duckdb", "SELECT sum(prompt_tokens), sum(completion_tokens) FROM corpus")[0]
    assert summary.cost == pytest.approx((tokens[0] * 1.0 + tokens[1] * 2.0) / 1e6 / 2)
    [run] = synthgen.status(tmp_path / "c.duckdb")
    assert run["batch"] and run["cost"] == pytest.approx(summary.cost)


def test_batch_lines_carry_the_online_body_and_the_online_ids(api, teacher, tmp_path):
    """One plan, two ways to send it: the same request ids, and each line's body is byte for
    byte what the online transport POSTs for that request."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(12)])
    options = {"temperature": 0.5, "max_tokens": 64, "stop": ["\n\n"], "extra_body": {"top_k": 20},
               "logprobs": 2}
    run_batch(api, tmp_path / "in.jsonl", tmp_path / "b.duckdb", **options)
    synthgen.generate(input=tmp_path / "in.jsonl", db=tmp_path / "o.duckdb", model="m",
                      base_urls=[teacher.base_url], **options)
    ids_sql = "SELECT request_id FROM corpus ORDER BY 1"
    assert rows(tmp_path / "b.duckdb", ids_sql) == rows(tmp_path / "o.duckdb", ids_sql)
    [content] = [v for v in api.files.values() if b'"custom_id"' in v and b'"method"' in v]
    transport = HttpTransport(api.base_url, "m")
    requests = {r[0]: Request(*r) for r in rows(
        tmp_path / "b.duckdb", "SELECT request_id, messages::VARCHAR, params::VARCHAR, line, sample_index "
                               "FROM requests")}
    for raw in content.splitlines():
        line = orjson.loads(raw)
        body = raw[raw.index(b'"body":') + 7:-1]
        assert body == transport.body(requests[line["custom_id"]]), "a second body format"
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
    assert orjson.loads(body)["top_k"] == 20 and orjson.loads(body)["top_logprobs"] == 2


def test_error_lines_are_requeued_or_failed_by_class(api, tmp_path):
    prompts = ["ok", "once #batch=500", "twice #batch=429,503", "refused #batchalways=400",
               "sick #batchalways=502"]
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb", max_attempts=3)
    assert (summary.answered, summary.failed, summary.pending) == (3, 2, 0)
    # Retryable lines went into later batches; a refused one was not sent again.
    assert api.submitted == {"ok": 1, "once #batch=500": 2, "twice #batch=429,503": 3,
                             "refused #batchalways=400": 1, "sick #batchalways=502": 3}
    found = {r[1]: r for r in corpus(tmp_path / "c.duckdb")}
    assert {p: found[p][4] for p in found} == {"ok": 1, "once #batch=500": 2, "twice #batch=429,503": 3}
    assert_each_answer_is_its_own(found.values())
    failures = rows(tmp_path / "c.duckdb", "SELECT messages->>'$[0].content', error_type, status_code, "
                                           "attempts FROM failures ORDER BY 1")
    assert failures == [("refused #batchalways=400", "http_400", 400, 1),
                        ("sick #batchalways=502", "http_502", 502, 3)]
    assert summary.errors == {"http_500": 1, "rate_limit": 1, "http_503": 1, "http_502": 3}


def test_files_are_split_at_the_request_and_byte_limits(api, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(50)])
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "n.duckdb", batch_max_requests=7)
    assert summary.answered == 50
    assert [lines for _, lines in api.uploads] == [7] * 7 + [1]
    api.uploads.clear()
    limit = 4096
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "b.duckdb", batch_max_bytes=limit)
    assert summary.answered == 50
    sizes = [size for size, _ in api.uploads]
    assert max(sizes) <= limit and sum(sizes) > 2 * limit, sizes
    assert all(size + 250 > limit for size in sizes[:-1]), "a file was closed long before the limit"
    assert_each_answer_is_its_own(corpus(tmp_path / "b.duckdb"))


def test_a_413_splits_the_file_and_loses_nothing(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(40)])
    with BatchAPIServer(max_upload=2500) as api:
        summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb")
    assert (summary.answered, summary.failed, summary.pending) == (40, 0, 0)
    assert api.refused_uploads, "the server never refused a file: the test proves nothing"
    assert max(size for size, _ in api.uploads) <= 2500
    assert sum(lines for _, lines in api.uploads) == 40, "a refused file's requests went up twice"
    assert set(api.submitted.values()) == {1}
    assert_each_answer_is_its_own(corpus(tmp_path / "c.duckdb"))


@pytest.mark.parametrize("lines", [True, False], ids=["expired-lines", "no-lines"])
def test_an_expired_batchs_remainder_is_resubmitted(api, tmp_path, lines):
    prompts = make_prompts(10)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    api.expire_next, api.expire_writes_lines = 4, lines
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb")
    assert (summary.status, summary.answered, summary.pending) == ("done", 10, 0)
    assert api.batch_posts == 2
    assert [api.submitted[p] for p in prompts] == [1] * 4 + [2] * 6
    assert [b["status"] for b in api.batches.values()] == ["expired", "completed"]
    found = corpus(tmp_path / "c.duckdb")
    assert_each_answer_is_its_own(found)
    # A request the expired batch never ran had no attempt: it is its first.
    assert {r[4] for r in found} == {1}


def test_a_failed_batch_is_resubmitted_and_a_refused_line_fails(api, tmp_path):
    prompts = make_prompts(6)
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    api.fail_next = [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "a.duckdb")
    assert (summary.answered, summary.failed) == (6, 0)
    assert summary.errors == {"batch_failed": 6}
    assert {r[4] for r in corpus(tmp_path / "a.duckdb")} == {2}, "the failed batch was an attempt"
    message = rows(tmp_path / "a.duckdb", "SELECT message FROM batches WHERE status = 'failed'")
    assert "token_limit_exceeded" in message[0][0]
    # Validation errors that name a line: that request is refused, the others never ran.
    api.fail_next = [{"code": "invalid_request", "message": "bad body", "line": 2}]
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "b.duckdb")
    assert (summary.answered, summary.failed) == (5, 1)
    assert rows(tmp_path / "b.duckdb", "SELECT messages->>'$[0].content', error_type FROM failures") == [
        (prompts[1], "batch_invalid")]
    assert {r[4] for r in corpus(tmp_path / "b.duckdb")} == {1}


def test_a_refused_key_stops_the_run_and_is_never_stored(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(5)])
    secret = "sk-batch-test-secret-0123456789"
    with BatchAPIServer(api_key="sk-the-right-one") as api:
        os.environ["SYNTHGEN_TEST_BATCH_KEY"] = secret
        try:
            with pytest.raises(RunAborted, match="POST /files"):
                run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb", skip_preflight=True,
                          api_key_env="SYNTHGEN_TEST_BATCH_KEY")
        finally:
            del os.environ["SYNTHGEN_TEST_BATCH_KEY"]
        assert api.headers[-1]["Authorization"] == f"Bearer {secret}"
        assert api.batch_posts == 0
    assert secret.encode() not in (tmp_path / "c.duckdb").read_bytes()
    [(status, message)] = rows(tmp_path / "c.duckdb", "SELECT status, message FROM runs")
    assert status == "aborted" and secret not in message
    assert rows(tmp_path / "c.duckdb", "SELECT count(*) FROM responses") == [(0,)]


def test_an_online_run_warns_about_batches_in_flight(api, teacher, tmp_path, caplog):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(3)])
    db = tmp_path / "c.duckdb"
    con = synthgen.open_store(db, read_only=False)
    con.execute("INSERT INTO batches (batch_key, endpoint, state, requests) "
                "VALUES ('k', 'x', 'submitted', 3)")
    con.close()
    with caplog.at_level(logging.WARNING, logger="synthgen"):
        synthgen.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url])
    assert "3 requests are in 1 Batch API batches still in flight" in caplog.text


def test_batch_settings_are_checked_with_their_names(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    with pytest.raises(synthgen.ConfigError, match="batch needs exactly one base_url"):
        synthgen.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m", batch=True)
    with pytest.raises(synthgen.ConfigError, match="batch_max_requests"):  # the Python API names fields
        synthgen.generate(input=tmp_path / "in.jsonl", db=tmp_path / "c.duckdb", model="m", batch=True,
                          base_urls=["http://127.0.0.1:9/v1"], batch_max_requests=50_001)


def test_batch_answers_are_held_to_the_response_schema_as_online_ones(api, tmp_path):
    # The fake Batch API answers plain text, which never fits: each try is a new batch line
    # until --max-attempts, then a 'schema' failure; nothing is stored as an answer.
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(3)])
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb", response_schema=schema,
                        max_attempts=2, price_in=1.0, price_out=2.0)
    assert (summary.answered, summary.failed) == (0, 3)
    assert api.batch_posts == 2, "a misfit is retried in a later batch, up to --max-attempts"
    assert rows(tmp_path / "c.duckdb", "SELECT count(*) FROM responses") == [(0,)]
    failed = rows(tmp_path / "c.duckdb", "SELECT error_type, message FROM failures")
    assert len(failed) == 3 and {f[0] for f in failed} == {"schema"}
    assert all("not JSON" in f[1] for f in failed)
    # Issue 29: every misfit line was billed; the bill counts all six, at the batch price.
    wasted = rows(tmp_path / "c.duckdb", "SELECT count(*), sum(prompt_tokens), sum(completion_tokens), "
                                         "count(DISTINCT attempt_key) FROM wasted_attempts")[0]
    assert wasted[0] == wasted[3] == 6 and wasted[1] > 0
    assert (summary.prompt_tokens, summary.completion_tokens) == (wasted[1], wasted[2])
    assert summary.cost == pytest.approx((wasted[1] * 1.0 + wasted[2] * 2.0) / 1e6 / 2)
    [run] = synthgen.status(tmp_path / "c.duckdb")
    assert run["cost"] == pytest.approx(summary.cost)


def test_batches_that_keep_expiring_unrun_are_not_resubmitted_forever(api, tmp_path):
    """Issue 24 #11: an API that lets every batch expire without running a line was sent
    the same requests again without limit. Three such batches in a row stop the run, with
    every request pending for the same command to send later."""
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(10)])
    api.expire_all = 0
    with pytest.raises(RunAborted, match="3 batches in a row expired without running a request"):
        run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb")
    assert api.batch_posts == 3
    assert rows(tmp_path / "c.duckdb", "SELECT status FROM runs") == [("aborted",)]
    assert rows(tmp_path / "c.duckdb", "SELECT count(*) FROM responses") == [(0,)]
    api.expire_all = None  # the API works again: the same command sends them, once
    summary = run_batch(api, tmp_path / "in.jsonl", tmp_path / "c.duckdb")
    assert (summary.status, summary.answered, summary.pending) == ("done", 10, 0)
    assert_each_answer_is_its_own(corpus(tmp_path / "c.duckdb"))
