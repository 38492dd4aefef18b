"""Best-of-n verifiers on deterministic answers (exact, regex, math-verify, Python tests in
a subprocess with a timeout), pass rates per prompt, and the recipe on a loopback teacher."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from conftest import synthgen
from teacher_server import write_jsonl

from synthgen.recipes.filters import check_params, verify


def rows(*answers: tuple[str, str, str]) -> list[dict]:
    """(prompt, answer, reference) -> stage rows."""
    return [{"request_id": f"r{i}", "messages": f'[{{"role":"user","content":"{p}"}}]', "response": a,
             "reference": ref} for i, (p, a, ref) in enumerate(answers)]


def params(tmp_path, **kw):
    return check_params("verify", {"reference": "reference", **kw}, tmp_path)


def test_exact_and_regex(tmp_path):
    data = rows(("q1", "The answer: Paris.", "paris"), ("q1", "Answer: Lyon", "paris"),
                ("q2", "  PARIS  ", "paris"))
    out = verify.run(data, params(tmp_path, method="exact", answer_pattern=r"(?i)answer:\s*(.+)"))
    assert [r.request_id for r in out.removed] == ["r1"]
    assert sorted(out.pass_rates) == [('[{"role":"user","content":"q1"}]', 2, 1),
                                      ('[{"role":"user","content":"q2"}]', 1, 1)]
    regex = check_params("verify", {"method": "regex", "pattern": r"^\s*[A-Z]+\s*$"}, tmp_path)
    out = verify.run(data, regex)
    assert [r.request_id for r in out.removed] == ["r0", "r1"]


def test_math_equivalence(tmp_path):
    data = rows(("half", "So the result is 0.5", "1/2"), ("half", "It is \\boxed{\\frac{1}{2}}.", "1/2"),
                ("half", "I think 2", "1/2"), ("sum", "7 + 5 = 12", "12"), ("sum", "no idea", "12"))
    out = verify.run(data, params(tmp_path, method="math"))
    assert {r.request_id: r.rule for r in out.removed} == {"r2": "math", "r4": "math"}
    assert out.figures == {"samples": 5, "passed": 3, "prompts_solved": 2}


def test_python_tests_run_in_a_subprocess_with_a_timeout(tmp_path):
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    data = rows(
        ("add", "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.", tests),
        ("add", "```python\ndef add(a, b):\n    return a - b\n```", tests),
        ("add", "```python\ndef add(a, b):\n    while True:\n        pass\n```", tests),
        ("add", "```python\nopen('left-behind.txt', 'w').write('x')\n"
                "def add(a, b): return a + b\n```", tests),
    )
    out = verify.run(data, params(tmp_path, method="python", timeout=2))
    why = {r.request_id: r.detail for r in out.removed}
    assert set(why) == {"r1", "r2"}
    assert "AssertionError" in why["r1"] and why["r2"] == "timed out after 2s"
    assert not (Path.cwd() / "left-behind.txt").exists()  # it ran (and passed) in a temporary directory
    best = verify.run(data, params(tmp_path, method="python", timeout=2, keep="best"))
    assert {r.request_id: r.rule for r in best.removed} == {"r1": "python", "r2": "python", "r3": "not-best"}


def test_best_of_n_recipe_records_pass_rates(teacher, tmp_path):
    """The loopback teacher's answer ends with /seed=K: with seed 0 and n=4 the samples are
    seeds 0..3, and an exact verifier on the seed passes exactly one per prompt."""
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"question {i}", "want": str(i % 4)} for i in range(5)])
    result = synthgen("run", "best-of-n", "--db", tmp_path / "b.duckdb", "--model", "m",
                      "--base-url", teacher.base_url, "--set", f"problems={tmp_path / 'p.jsonl'}",
                      "--set", "reference=want", "--set", "method=exact", cwd=tmp_path)
    # exact against the whole answer never passes: every sample is removed, pass rate 0; a
    # recipe that keeps nothing says so and fails (issue 29), its pass rates kept all the same
    assert result.returncode == 1, result.stderr
    assert "samples: 20 planned, 20 answered, 0 failed, 0 kept (removed: verify:exact 20)" in result.stderr
    assert "stage 'samples' of recipe 'best-of-n' kept no row: 20 rows, all removed" in result.stderr
    con = duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), sum(samples), sum(passed) FROM pass_rates").fetchone() == (5, 20, 0)
    con.close()
    # the answer picked out of the text by a pattern: the seed, which matches once per prompt
    result = synthgen("run", "best-of-n", "--db", tmp_path / "b.duckdb", "--model", "m",
                      "--base-url", teacher.base_url, "--set", f"problems={tmp_path / 'p.jsonl'}",
                      "--set", "reference=want", "--set", "method=exact",
                      "--set", r"answer_pattern=seed=(\d+)$", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "samples: 20 planned, 20 answered, 0 failed, 5 kept (removed: verify:exact 15)" in result.stderr
    con = duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), sum(samples), sum(passed), max(pass_rate) FROM pass_rates"
                       ).fetchone() == (5, 20, 5, 0.25)
    kept = con.execute("SELECT reference, regexp_extract(response, 'seed=([0-9]+)$', 1) "
                       "FROM samples").fetchall()
    con.close()
    assert len(kept) == 5 and all(ref == seed for ref, seed in kept)
    assert sum(teacher.received.values()) == 20  # the second run sent nothing: only the keep changed


@pytest.mark.parametrize(("given", "says"), [({"method": "math"}, "needs `reference`"),
                                              ({"method": "nope", "reference": "r"}, "method")])
def test_bad_verifier_settings_are_named(tmp_path, given, says):
    from synthgen.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        verify.run(rows(("q", "a", "b")), check_params("verify", given, tmp_path))
