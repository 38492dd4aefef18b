"""e2e: `synthgen demo` with the real bundled teacher, logprobs stored and read back."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require_bundled_teacher

from synthgen.cli.teacher import demo
from synthgen.teacher.local import MODEL_NAME


@pytest.mark.e2e
def test_demo_answers_seeds_with_top5_logprobs(tmp_path: Path) -> None:
    require_bundled_teacher()
    import synthgen

    db = tmp_path / "demo.duckdb"
    result = CliRunner().invoke(demo, ["--db", str(db), "--limit", "4", "--max-tokens", "24"])
    assert result.exit_code == 0, result.output
    assert "4 answered, 0 failed" in result.stderr and "teacher stopped" in result.stderr
    assert "category" in result.stdout and "top_k" in result.stdout  # the rows shown

    con = synthgen.open_store(db)
    rows = con.sql(
        "SELECT model, metadata->>'category', response, completion_tokens, logprobs FROM corpus ORDER BY line"
    ).fetchall()
    con.close()
    assert len(rows) == 4
    assert {r[0] for r in rows} == {MODEL_NAME}
    assert len({r[1] for r in rows}) == 4  # seeds are interleaved by category
    for _model, _cat, response, tokens, logprobs in rows:
        assert response.strip() and 0 < tokens <= 24
        assert len(logprobs) == tokens
        assert all(len(step["top_logprobs"]) == 5 for step in logprobs)
        assert all(step["logprob"] <= 0 for step in logprobs)
    # the same demo again: every answer is stored, so no teacher is started to send nothing
    assert "teacher ready" in result.stderr
    again = CliRunner().invoke(demo, ["--db", str(db), "--limit", "4", "--max-tokens", "24"])
    assert again.exit_code == 0, again.output
    assert "nothing left to answer" in again.stderr and "teacher ready" not in again.stderr


@pytest.mark.e2e
def test_demo_samples_answers_each_seed_that_many_times(tmp_path: Path) -> None:
    """--samples N: N answers per seed, each its own row with its own sample index, so a
    student's held-out split (by prompt) keeps all of one seed's answers on one side."""
    require_bundled_teacher()
    import synthgen

    db = tmp_path / "demo.duckdb"
    args = ["--db", str(db), "--limit", "2", "--samples", "3", "--max-tokens", "12", "--logprobs", "2"]
    result = CliRunner().invoke(demo, args)
    assert result.exit_code == 0, result.output
    assert "6 answered, 0 failed" in result.stderr

    con = synthgen.open_store(db)
    rows = con.sql(
        "SELECT line, sample_index, len(logprobs[1].top_logprobs) FROM corpus ORDER BY line, sample_index"
    ).fetchall()
    con.close()
    lines = sorted({line for line, _s, _k in rows})
    assert len(lines) == 2
    assert [(line, s) for line, s, _k in rows] == [(line, s) for line in lines for s in range(3)]
    assert {k for _l, _s, k in rows} == {2}

    from synthgen.student.rows import load_rows, split_rows

    train, held, _split = split_rows(load_rows(db, "SELECT * FROM corpus"), 0.5, 0, None)
    assert len(train) == len(held) == 3  # one seed's three answers each side
    assert len({r.key for r in train}) == len({r.key for r in held}) == 1

    refused = CliRunner().invoke(demo, ["--db", str(db), "--samples", "0"])
    assert refused.exit_code == 2 and "--samples" in refused.output
