"""`synthgen view`: the corpus in a real headless Chromium (browse, filter, open a row with
its reasoning, logprob heat-map and student answers; hostile text stays text), and the
server as an attacker sees it: 127.0.0.1 only, a token, Host and Origin checked, GET only,
SQL that can only read the store; and it works while a run writes the store."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import duckdb
import pytest
import see_store
from browser import chromium, open_page
from conftest import clean_env, start_synthgen, synthgen
from teacher_server import TeacherServer, make_prompts, write_jsonl


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return see_store.build(tmp_path_factory.mktemp("view"))


class Viewer:
    """`synthgen view` as a real process; `url` is what it printed."""

    def __init__(self, db: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "synthgen", "view", "--db", str(db)],
                                     stderr=subprocess.PIPE, text=True, env=clean_env())
        deadline = time.monotonic() + 30
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            line = self.proc.stderr.readline()
            if not line:
                break
            if line.strip().startswith("http://"):
                self.url = line.strip()
        assert self.url, "synthgen view printed no URL"
        parts = urllib.parse.urlsplit(self.url)
        self.port = parts.port
        self.token = urllib.parse.parse_qs(parts.query)["token"][0]

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                token: bool = True) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        if token:
            sent.setdefault("X-Synthgen-Token", self.token)
        conn.request(method, path, headers=sent)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body

    def api(self, path: str, **params: str) -> dict:
        status, body = self.request("GET", path + "?" + urllib.parse.urlencode(params))
        assert status == 200, (status, body)
        return json.loads(body)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture
def viewer(store):
    v = Viewer(store)
    yield v
    v.close()


def test_browse_filter_and_open_a_row_in_a_real_browser(viewer, store, tmp_path):
    con = duckdb.connect(str(store), read_only=True)
    [(with_reasoning,)] = con.execute("SELECT request_id FROM corpus WHERE reasoning IS NOT NULL "
                                      "ORDER BY line LIMIT 1").fetchall()
    [(xss_id,)] = con.execute("SELECT request_id FROM corpus WHERE metadata->>'topic' = 'xss'").fetchall()
    [(answered,)] = con.execute("SELECT count(*) FROM corpus").fetchall()
    con.close()
    from playwright.sync_api import expect

    with chromium() as context:
        seen = open_page(context, viewer.url + "#row=" + with_reasoning)
        page = seen.page
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert page.locator("#rows tr").count() == answered
        assert page.locator("#chart svg").count() == 1, "the finish-reasons chart"
        # the row from the URL: prompt, answer, reasoning, heat-map, student vs teacher
        detail = page.inner_text("#detail")
        for needle in ("Prompt", "Answer", "Reasoning", "First I think about", "Logprob heat-map",
                       "Student vs teacher", "STUDENT says", "eval e1", "eval e2"):
            assert needle in detail, needle
        tokens = page.locator("#heatmap .tok")
        assert tokens.count() >= 2
        assert "rgb(" in tokens.first.evaluate("t => getComputedStyle(t).backgroundColor")
        assert "p 0." in tokens.first.get_attribute("title") and "top:" in tokens.first.get_attribute("title")
        assert page.locator("#detail svg").count() == 1, "the token-probability histogram"
        page.screenshot(path=str(tmp_path / "view-row.png"), full_page=True)
        # hostile text stays text
        page.locator(f"#rows tr[data-id='{xss_id}']").click()
        expect(page.locator("#detail")).to_contain_text("onerror")
        assert page.title().startswith("synthgen view") and page.locator("#detail img").count() == 0
        # filters: the SQL box, finish reason, text
        page.fill("#where", "metadata->>'topic' = 'math'")
        page.click("#apply")
        expect(page.locator("#count")).to_have_text(re.compile(r"^20 rows"))
        page.fill("#where", "")
        page.select_option("#finish", "stop")
        page.fill("#q", "what is 7 + 7")
        page.click("#apply")
        expect(page.locator("#count")).to_have_text(re.compile(r"^1 rows"))
        # a bad query is said on the page, not logged as an error
        page.fill("#q", "")
        page.fill("#where", "no_such_column > 1")
        page.click("#apply")
        expect(page.locator("#list-error")).not_to_be_empty()
        assert "no_such_column" in page.inner_text("#list-error")
        page.click("#evals-tab")
        expect(page.locator("#detail")).to_contain_text("Evaluations")
        assert page.locator("#detail tbody tr").count() == 6
        assert page.locator("svg").count() >= 1
        page.screenshot(path=str(tmp_path / "view.png"), full_page=True)
        assert seen.console_errors == [], seen.console_errors
        outside = {u for u in seen.requests if not u.startswith(f"http://127.0.0.1:{viewer.port}/")}
        assert outside == set()
        print(f"screenshots: {tmp_path / 'view-row.png'} {tmp_path / 'view.png'}")


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def test_it_listens_on_127_0_0_1_only(viewer):
    assert _listening_addresses(viewer.port) == {"0100007F"}  # 127.0.0.1, little-endian
    for address in _other_addresses():
        with pytest.raises(OSError), socket.create_connection((address, viewer.port), timeout=2):
            pass


def _other_addresses() -> list[str]:
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [a for a in out.split() if "." in a and not a.startswith("127.")]


def test_an_attacker_page_gets_nothing(viewer):
    port = viewer.port
    ok, _ = viewer.request("GET", "/api/facets")
    assert ok == 200
    # no token: neither the page nor the API
    assert viewer.request("GET", "/", token=False)[0] == 403
    assert viewer.request("GET", "/api/rows", token=False)[0] == 403
    assert viewer.request("GET", "/api/rows", {"X-Synthgen-Token": "guess"})[0] == 403
    # DNS rebinding: the attacker's name resolved to 127.0.0.1
    assert viewer.request("GET", "/api/rows", {"Host": f"evil.example:{port}"})[0] == 421
    assert viewer.request("GET", "/api/rows", {"Host": "127.0.0.1:1"})[0] == 421
    # another origin, a cross-site fetch
    assert viewer.request("GET", "/api/rows", {"Origin": "http://evil.example"})[0] == 403
    assert viewer.request("GET", "/api/rows", {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert viewer.request("GET", "/api/rows", {"Origin": f"http://localhost:{port}"})[0] == 200
    # nothing but GET, even with the token
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, _ = viewer.request(method, "/api/rows")
        assert status == 405, method
    page_status, page = viewer.request("GET", f"/?token={viewer.token}", token=False)
    assert page_status == 200 and b"<script nonce=" in page
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/?token={viewer.token}", headers={"Host": f"127.0.0.1:{port}"})
    headers = dict(conn.getresponse().getheaders())
    conn.close()
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"


# Statements smuggled after the WHERE text never run: the whole query is parsed first and
# must be one SELECT (the wrapping parenthesis usually makes them a syntax error before that).
REFUSED = r"one SELECT|syntax error"


def test_sql_from_the_page_can_only_read_the_store(viewer, store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    before = _counts(viewer)
    for where, needle in [
        ("1=1); DROP TABLE responses; --", REFUSED),
        ("1=1); UPDATE responses SET text = 'x'; --", REFUSED),
        ("1=1); ATTACH '/tmp/x.duckdb'; --", REFUSED),
        ("1=1); COPY responses TO '/tmp/out.csv'; --", REFUSED),
        ("1=1); SET enable_external_access = true; --", REFUSED),
        (f"response IN (SELECT content FROM read_text('{secret}'))", "Permission"),
        (f"response IN (SELECT * FROM read_csv('{secret}'))", "Permission"),
        ("response IN (SELECT file FROM glob('/etc/*'))", "Permission"),
    ]:
        data = viewer.api("/api/rows", where=where)
        assert data["ok"] is False and re.search(needle, data["error"]), (where, data)
    assert _counts(viewer) == before
    # a SELECT reaching other tables of the store is fine: it is the store, read-only
    union = viewer.api("/api/rows", where="request_id IN (SELECT request_id FROM failures)")
    assert union["ok"] and union["data"]["total"] == 0
    # and the viewer holds no lock between requests: a writer can open the store
    con = duckdb.connect(str(store))
    con.close()


def _counts(viewer) -> int:
    return viewer.api("/api/facets")["data"]["total"]


def test_the_viewer_works_during_a_run(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in make_prompts(400)])
    db = tmp_path / "c.duckdb"
    # 8 answers/s: the run lasts 50 s, longer than the viewer's start and reads on a busy
    # machine (at 0.05 s it ended first there), and is stopped as soon as they are done
    with TeacherServer(latency=0.25) as teacher:
        run = start_synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                             "--base-url", teacher.base_url, "--concurrency", "2")
        try:
            deadline = time.monotonic() + 60
            while sum(teacher.received.values()) < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            viewer = Viewer(db)
            try:
                first = viewer.api("/api/facets")["data"]
                time.sleep(1.5)
                second = viewer.api("/api/facets")["data"]
                rows = viewer.api("/api/rows", limit="5")["data"]["rows"]
                one = viewer.api("/api/row", id=rows[0]["request_id"])["data"]
                bad = viewer.api("/api/rows", where="1=1); DELETE FROM responses; --")
                assert run.poll() is None, "the run ended before the reads; the test proves nothing"
            finally:
                viewer.close()
        finally:
            run.terminate()
            run.communicate(timeout=30)
    assert first["live_run"] == 1 and 0 < first["total"] < second["total"] < 400
    assert re.match(r"ANSWER\[prompt \d+", one["response"])
    assert bad["ok"] is False


def test_bad_flags_name_the_flag(tmp_path):
    missing = synthgen("view", "--db", tmp_path / "nope.duckdb")
    assert missing.returncode == 2 and "no such database" in missing.stderr
    assert "Traceback" not in missing.stderr
    port = synthgen("view", "--db", tmp_path / "nope.duckdb", "--port", "70000")
    assert port.returncode == 2 and "--port" in port.stderr
