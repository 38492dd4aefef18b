"""Issue 13, security and inputs: sql reads only the store, credentials stay with their
host, no secret is printed, redirects are not followed, keys and preflight say what is
wrong, input fields cannot overwrite synthgen's own columns, BOM and compressed inputs."""

from __future__ import annotations

import gzip
import json
import signal
import time

import duckdb
import pytest
import zstandard
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import TeacherServer, answer, make_prompts, write_jsonl

from synthgen.store import connect


@pytest.fixture
def two_stores(tmp_path, teacher):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(5)])
    for name in ("c", "other"):
        r = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / f"{name}.duckdb",
                     "--model", "m", "--base-url", teacher.base_url)
        assert r.returncode == 0, r.stderr
    return tmp_path / "c.duckdb", tmp_path / "other.duckdb"


def answers_in(db) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM responses").fetchone()[0]
    finally:
        con.close()


# 1. sql is read-only for real
@pytest.mark.parametrize("query", [
    "ATTACH '{other}' AS o (READ_WRITE); DELETE FROM o.responses",
    "COPY (SELECT 'x') TO '{tmp}/evil.sh'",
    "EXPORT DATABASE '{tmp}/dump'",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_csv('{other}')",
    "INSTALL httpfs",
    "LOAD json",
    "SET memory_limit = '1GB'",
    "PRAGMA enable_profiling",
    "WITH d AS (DELETE FROM responses RETURNING *) SELECT count(*) FROM d",
    "SELECT 1; DELETE FROM responses",
])
def test_sql_reads_the_store_and_nothing_else(two_stores, tmp_path, query):
    db, other = two_stores
    result = synthgen("sql", "--db", db, query.format(other=other, tmp=tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("error: sql:") and "Traceback" not in result.stderr
    assert answers_in(db) == 5 and answers_in(other) == 5
    assert not (tmp_path / "evil.sh").exists() and not (tmp_path / "dump").exists()


def test_several_statements_show_every_result_or_are_refused(two_stores):
    db, _ = two_stores
    both = synthgen("sql", "--db", db, "SELECT 41 + 1 AS first; SELECT 'second' AS second")
    assert both.returncode == 0, both.stderr
    assert "42" in both.stdout and "second" in both.stdout
    csv = synthgen("sql", "--db", db, "--format", "csv", "SELECT 1; SELECT 2")
    assert csv.returncode == 2 and "2 statements" in csv.stderr and csv.stdout == ""


def test_allow_files_reads_local_files_and_still_writes_nothing(two_stores, tmp_path):
    db, _ = two_stores
    duckdb.sql(f"COPY (SELECT 7 AS x) TO '{tmp_path / 'side.parquet'}' (FORMAT parquet)")
    query = f"SELECT x FROM read_parquet('{tmp_path / 'side.parquet'}')"
    refused = synthgen("sql", "--db", db, "--format", "csv", query)
    assert refused.returncode == 2 and "disabled by configuration" in refused.stderr
    allowed = synthgen("sql", "--db", db, "--format", "csv", "--allow-files", query)
    assert allowed.returncode == 0 and allowed.stdout.splitlines() == ["x", "7"]
    write = synthgen("sql", "--db", db, "--allow-files", f"COPY (SELECT 1) TO '{tmp_path / 'w.csv'}'")
    assert write.returncode == 2 and not (tmp_path / "w.csv").exists()


@pytest.mark.parametrize("query", [
    "EXPLAIN ANALYZE COPY (SELECT 'pwned') TO '{tmp}/x.csv'",
    "explain analyse copy (select 1) to '{tmp}/x.csv'",
    "EXPLAIN (FORMAT json) COPY (SELECT 1) TO '{tmp}/x.csv'",
    "EXPLAIN /* a comment */ ANALYZE COPY (SELECT 1) TO '{tmp}/x.csv'",
    "EXPLAIN ANALYZE INSERT INTO responses SELECT * FROM responses",
    "EXPLAIN ANALYZE ATTACH '{tmp}/x.duckdb'",
])
@pytest.mark.parametrize("allow", [True, False])
def test_an_explain_of_a_write_is_a_write(two_stores, tmp_path, query, allow):
    """Issue 24 #5: EXPLAIN ANALYZE runs the statement it explains; under --allow-files it
    wrote the file although the flag says the query is still read-only."""
    db, _ = two_stores
    result = synthgen("sql", "--db", db, *(["--allow-files"] if allow else []),
                      query.format(tmp=tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("error: sql:") and "Traceback" not in result.stderr
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.duckdb").exists()
    assert answers_in(db) == 5
    plain = synthgen("sql", "--db", db, *(["--allow-files"] if allow else []),
                     "EXPLAIN ANALYZE SELECT count(*) FROM corpus")
    assert plain.returncode == 0, plain.stderr


def test_allow_files_never_fetches_an_extension(two_stores, tmp_path):
    """... nor lets DuckDB download and load httpfs for a URL in FROM."""
    db, _ = two_stores
    home = tmp_path / "home"
    home.mkdir()
    result = synthgen("sql", "--db", db, "--allow-files", "SELECT * FROM 'https://example.com/x.parquet'",
                      env=clean_env(HOME=str(home)))
    assert result.returncode == 2 and "requires the extension httpfs" in result.stderr, result.stderr
    assert "install" not in result.stderr.split("Please try")[0], "DuckDB tried to download it"
    assert not list(home.rglob("*.duckdb_extension*")), "an extension was downloaded"


# 2. credentials stay with their host; a query string stays a query string
def test_each_endpoint_gets_its_own_credentials_and_query(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(40)])
    with TeacherServer(latency=0.01) as a, TeacherServer(latency=0.01) as b:
        url_a = a.base_url.replace("http://", "http://alice:A-secret@") + "?api-version=2024-06"
        url_b = b.base_url.replace("http://", "http://bob:B-secret@")
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--model", "m", "--base-url", url_a, "--base-url", url_b, "--concurrency", "4")
        assert result.returncode == 0, result.stderr
        assert a.headers and b.headers, "both endpoints served"
        import base64

        basic = {name: "Basic " + base64.b64encode(name.encode()).decode()
                 for name in ("alice:A-secret", "bob:B-secret")}
        assert all(h["Authorization"] == basic["alice:A-secret"] for h in a.headers)
        assert all(h["Authorization"] == basic["bob:B-secret"] for h in b.headers)
        assert set(a.urls) == {"/v1/chat/completions?api-version=2024-06"}
        assert set(b.urls) == {"/v1/chat/completions"}


# 3. no secret is printed
def test_the_resume_hint_and_errors_print_no_secret(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(2000)])
    with TeacherServer(latency=0.05) as teacher:
        url = teacher.base_url.replace("http://", "http://user:pw-SECRET-1@") + "?api_key=SECRET-2&v=1"
        proc = start_synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                              "--model", "m", "--base-url", url, "--concurrency", "4")
        while sum(teacher.received.values()) < 20:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Resume with" in err and "SECRET" not in err
    assert "http://***@127.0.0.1" in err and "api_key=***" in err and "v=1" in err
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    stored = str(con.execute("SELECT * FROM runs").fetchall()) + str(con.execute(
        "SELECT DISTINCT endpoint FROM responses").fetchall())
    con.close()
    assert "SECRET" not in stored


def test_a_credential_in_extra_body_is_refused_and_not_echoed(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    for body in ('{"api_key": "zz-SECRET-3"}', '{"x": {"y": "sk-SECRETSECRETSECRET4"}}',
                 '{"extra_headers": {"api-key": "zz-SECRET-5"}}',  # issue 24 #11: at any depth
                 '{"extra_headers": {"Authorization": "token zz-SECRET-6"}}',
                 '{"a": [{"b": {"password": "zz-SECRET-7"}}]}'):
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--model", "m", "--base-url", teacher.base_url, "--extra-body", body)
        assert result.returncode == 2 and "looks like a credential" in result.stderr
        assert "SECRET" not in result.stderr + result.stdout
    assert sum(teacher.received.values()) == 0
    # a nested name that merely contains a credential word is no credential
    fine = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                    "--model", "m", "--base-url", teacher.base_url, "--extra-body",
                    '{"chat_template_kwargs": {"tokenizer": "x", "keywords": "y"}}')
    assert fine.returncode == 0, fine.stderr


# 4. redirects are not followed
def test_a_redirect_to_another_origin_is_not_followed(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"{p} #always=redirect"} for p in make_prompts(30)])
    with TeacherServer() as teacher, TeacherServer() as elsewhere:
        teacher.redirect_to = elsewhere.base_url
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--model", "m", "--base-url", teacher.base_url, "--concurrency", "2")
        assert sum(elsewhere.received.values()) == 0, "the redirect was followed"
    assert result.returncode == 3, result.stderr
    assert "redirects to" in result.stderr and "does not follow redirects" in result.stderr
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM responses").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0, "left pending, not failed"
    con.close()


# 6. keys and preflight answers
def test_an_unset_api_key_variable_is_said_at_once(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "m", "--base-url", teacher.base_url, "--api-key-env", "NO_SUCH_KEY_VAR")
    assert result.returncode == 2 and "--api-key-env NO_SUCH_KEY_VAR" in result.stderr
    assert "not set" in result.stderr and sum(teacher.received.values()) == 0


class RefusingModels(TeacherServer):
    """/models answers with a status and a message of the test's choosing."""

    def __init__(self, status: int, message: str):
        super().__init__()
        self.models_status, self.models_message = status, message

    async def _models(self, request):
        from aiohttp import web

        return web.json_response({"error": {"message": self.models_message}}, status=self.models_status)


@pytest.mark.parametrize(("status", "message", "said"), [
    (400, "Invalid API key provided: sk-***", "check the API key"),
    (500, "No connected db. Set DATABASE_URL", "No connected db"),
    (403, "forbidden", "check the API key"),
])
def test_a_preflight_refusal_is_reported_as_what_it_is(tmp_path, status, message, said):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    with RefusingModels(status, message) as teacher:
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--model", "m", "--base-url", teacher.base_url)
        assert sum(teacher.received.values()) == 0
    assert result.returncode == 3 and said in result.stderr, result.stderr
    assert "no /models route" not in result.stderr


def test_a_run_where_every_request_failed_the_same_way_exits_nonzero(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"{p} #always=400"} for p in make_prompts(12)])
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "m", "--base-url", teacher.base_url)
    assert result.returncode == 1 and "every request of this run failed the same way" in result.stderr
    assert "http_400" in result.stderr


# 11. input fields named like synthgen's own columns
def test_an_input_field_named_like_an_export_column_is_refused_with_its_line(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "source": "x"}, {"prompt": "b", "model": "gpt-x"},
                                        {"prompt": "c", "request_id": "mine"}])
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--model", "m", "--base-url", teacher.base_url)
    assert result.returncode != 0 and sum(teacher.received.values()) == 0
    assert "in.jsonl:2: field 'model'" in result.stderr and "in.jsonl:3: field 'request_id'" in result.stderr


# 13. BOM and compressed inputs
def test_bom_and_compressed_inputs_read_like_plain_ones(teacher, tmp_path):
    rows = [{"prompt": p, "i": i} for i, p in enumerate(make_prompts(6))]
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + lines)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfprompt,i\n" + "".join(
        f'"{r["prompt"]}",{r["i"]}\n' for r in rows).encode())
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "in.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    for name in ("bom.jsonl", "bom.csv", "in.jsonl.gz", "in.jsonl.zst"):
        db = tmp_path / f"{name}.duckdb"
        result = synthgen("generate", "--input", tmp_path / name, "--db", db, "--model", "m",
                          "--base-url", teacher.base_url)
        assert result.returncode == 0, (name, result.stderr)
        con = connect(db, read_only=True)
        got = con.execute("SELECT messages->>'$[0].content', metadata->>'i', response FROM corpus").fetchall()
        con.close()
        assert sorted(g[0] for g in got) == sorted(make_prompts(6)), name
        assert all(resp == answer(p) and int(i) == rows[int(i)]["i"] for p, i, resp in got)
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(lines)[:-12])
    cut = synthgen("generate", "--input", tmp_path / "cut.jsonl.gz", "--db", tmp_path / "cut.duckdb",
                   "--model", "m", "--base-url", teacher.base_url, env=clean_env())
    assert cut.returncode == 2 and "cannot be decompressed" in cut.stderr and "Traceback" not in cut.stderr
