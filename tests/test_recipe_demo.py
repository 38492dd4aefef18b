"""e2e: the self-instruct demo on the bundled teacher, offline: seeds -> instructions grown
from in-context examples and filtered -> answers, each row's lineage one join away."""

from __future__ import annotations

import json
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
    m = re.search(r"instructions: 12 planned, 12 answered, 0 failed, (\d+) kept", result.stderr)
    assert m, result.stderr
    kept = int(m.group(1))
    if not kept:  # a 135M teacher may write no instruction the paper's rules keep: said, exit 1
        assert result.returncode == 1 and "stage 'instructions' of recipe 'self-instruct' kept no row" \
            in result.stderr, result.stderr
        return
    answered = re.search(rf"answers: {kept} planned, {kept} answered, 0 failed, (\d+) kept", result.stderr)
    assert answered, result.stderr
    # never "done" with 0 rows (issue 29): answers all cut at 48 tokens end the run saying so
    assert result.returncode == (0 if int(answered.group(1)) else 1), result.stderr
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
    # what the recipe made is what export writes: the last stage's kept rows, as status says
    status_kept = _kept(db, "answers")
    out = tmp_path / "si.jsonl"
    exported = synthgen("export", "--db", db, "--out", out)
    if status_kept:
        assert exported.returncode == 0, exported.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == status_kept and all(r["finish_reason"] == "stop" for r in rows)
    else:  # nothing kept (a 135M teacher): said so, no file
        assert exported.returncode == 1 and "kept none" in exported.stderr
    # a judge of two of those answers on the same teacher: its export is the answers, scored
    judged = synthgen("run", "judge", "--db", db, "--set", "source=(SELECT * FROM answers LIMIT 2)",
                      cwd=tmp_path, timeout=600)
    verdicts = _kept(db, "judgments")
    assert judged.returncode == (0 if verdicts else 1), judged.stderr  # none kept: said, exit 1
    scored = synthgen("export", "--db", db, "--out", out, "--where", "score >= 1")
    if verdicts:
        assert scored.returncode == 0, scored.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == verdicts and all(1 <= r["score"] <= 10 and r["judged_by"] for r in rows)
        assert not any("Instruction:" in r["messages"][0]["content"] for r in rows), "answers, not verdicts"
    else:
        assert scored.returncode == 1, scored.stderr


def _kept(db, stage: str) -> int:
    """What `synthgen status` says `stage` kept."""
    out = synthgen("status", "--db", db).stdout
    m = re.search(rf"stage \d+ {stage}: .* (\d+) kept", out)
    assert m, out
    return int(m.group(1))
