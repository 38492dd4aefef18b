"""e2e: the self-instruct demo on the bundled teacher, offline: seeds -> instructions grown
from in-context examples and filtered -> answers, each row's lineage one join away."""

from __future__ import annotations

import re

import duckdb
import pytest
from conftest import require_bundled_teacher, synthgen


@pytest.mark.e2e
def test_self_instruct_demo_on_the_bundled_teacher(tmp_path):
    require_bundled_teacher()
    db = tmp_path / "si.duckdb"
    # from a folder with no prompts/: the built-in recipe and its seeds, as after pip install
    result = synthgen("run", "self-instruct", "--db", db, "--set", "prompts=6", "--set", "answer_tokens=48",
                      cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    m = re.search(r"instructions: 12 planned, 12 answered, 0 failed, (\d+) kept", result.stderr)
    assert m, result.stderr
    kept = int(m.group(1))
    assert re.search(rf"answers: {kept} planned, {kept} answered, 0 failed, \d+ kept", result.stderr)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM instructions").fetchone()[0] == kept
        pairs = con.execute("SELECT a.messages->>'$[0].content', i.instruction, a.response FROM answers a "
                            "JOIN instructions i ON a.parent_request_id = i.request_id").fetchall()
        removed = con.execute("SELECT count(*) FROM stage_rows WHERE stage = 'instructions' "
                              "AND NOT kept AND rule IS NOT NULL").fetchone()[0]
    finally:
        con.close()
    assert all(prompt == instruction and response.strip() for prompt, instruction, response in pairs)
    assert kept + removed == 12
