"""SQL -> training rows, the held-out split, and one-line errors for bad input."""

from __future__ import annotations

import sys

import pytest
from test_student_support import add_row, make_store

from synthgen import cli
from synthgen.errors import SynthgenError
from synthgen.store import connect
from synthgen.student.deps import StudentError
from synthgen.student.presets import teacher_tokenizer
from synthgen.student.rows import load_rows, split_rows

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def tok():
    return teacher_tokenizer()


@pytest.fixture
def db(tmp_path, tok):
    return make_store(tmp_path / "c.duckdb", tok, n=20)


def test_default_query_takes_only_rows_that_stopped(tmp_path, tok) -> None:
    path = make_store(tmp_path / "c.duckdb", tok, n=4)
    con = connect(path)
    add_row(con, "cut", [{"role": "user", "content": "long?"}], "and so on", None, "length")
    con.close()
    ids = {r.request_id for r in load_rows(path)}
    assert "cut" not in ids and len(ids) == 4
    everything = {r.request_id: r for r in load_rows(path, "SELECT * FROM corpus")}
    assert not everything["cut"].finished and everything["r000"].finished


def test_query_selects_the_rows(db) -> None:
    rows = load_rows(db, "SELECT * FROM corpus WHERE metadata->>'split' = 'a'")
    assert sorted(r.request_id for r in rows) == [f"r{i:03d}" for i in range(0, 20, 2)]
    assert rows[0].logprobs and rows[0].logprobs[0]["top_logprobs"]


def test_split_is_by_prompt_deterministic_and_seeded(tmp_path, tok) -> None:
    path = make_store(tmp_path / "c.duckdb", tok, n=20)
    first = load_rows(path)[0]
    con = connect(path)  # a second sample of prompt 0 must land beside the first
    add_row(con, "r000-b", first.messages, "Another answer.")
    con.close()
    rows = load_rows(path)
    train, held, split = split_rows(rows, 0.25, seed=1, query=None)
    assert len({r.key for r in held}) == 5 and len(train) + len(held) == 21
    same = {r.request_id for r in rows if r.key == first.key}
    assert same <= set(split.train_ids) or same <= set(split.heldout_ids)
    again = split_rows(rows, 0.25, seed=1, query=None)[2]
    assert again.heldout_ids == split.heldout_ids
    assert split_rows(rows, 0.25, seed=2, query=None)[2].heldout_ids != split.heldout_ids


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT * FROM nowhere", "training query failed"),
        ("SELECT * FROM corpus WHERE false", "returned no rows"),
        ("SELECT request_id FROM corpus", "must return the columns"),
    ],
)
def test_bad_queries_fail_clearly(db, query: str, message: str) -> None:
    with pytest.raises(StudentError, match=message):
        load_rows(db, query)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["synthgen", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_errors_are_one_line(tmp_path, db, monkeypatch, capsys) -> None:
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--db",
        str(tmp_path / "missing.duckdb"),
        "--out",
        str(tmp_path / "o"),
        "--max-steps",
        "1",
    )
    assert code == 2 and err.strip().startswith("error:") and "no such database" in err
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--db",
        str(db),
        "--out",
        str(tmp_path / "o"),
        "--query",
        "SELEC nonsense",
        "--max-steps",
        "1",
    )
    assert code == 2 and "training query failed" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_preview_shows_the_trained_tokens(db, tmp_path, monkeypatch, capsys) -> None:
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--db",
        str(db),
        "--out",
        str(tmp_path / "o"),
        "--preview",
    )
    assert code == 0
    assert "[[The " in out and "<|im_end|>]]" in out and "20 rows" not in out
    assert not (tmp_path / "o").exists()


def test_missing_extra_is_a_clear_error(monkeypatch) -> None:
    import importlib.util

    from synthgen.student import deps

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a)
    )
    with pytest.raises(SynthgenError, match=r"-m pip install .*\[train\]"):
        deps.require_train_extra()


def test_the_cli_module_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys, synthgen.cli.student; "
        "print([m for m in ('torch', 'transformers', 'trl') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
