"""The price table and `generate --dry-run [--pilot N]` (issue 29, parts 2 and 3), against
the loopback teacher, which records every chat request it is sent."""

from __future__ import annotations

import json
import random
import re

import pytest
from conftest import require_bundled_teacher, synthgen
from teacher_server import TeacherServer, write_jsonl

from synthgen.pricing import Prices, price_table, table_date, table_prices

DATE = table_date()


def prompts(n: int, seed: int = 7) -> list[dict]:
    """Prompts of 10 to 90 words: the loopback teacher's answer has as many words as its
    prompt (and bills words as tokens), so answers vary in length as real ones do."""
    rnd = random.Random(seed)
    return [{"prompt": f"q{i} " + " ".join("w" * rnd.randint(1, 9) for _ in range(rnd.randint(10, 90)))}
            for i in range(n)]


def dry(tmp_path, teacher, *extra: str, rows: list[dict] | None = None, db: str = "c.duckdb"):
    write_jsonl(tmp_path / "in.jsonl", rows if rows is not None else prompts(300))
    return synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / db,
                    "--base-url", teacher.base_url, "--model", "m", "--dry-run", *extra)


def dollars(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, text
    return float(found.group(1).replace(",", ""))


def test_a_dry_run_sends_nothing_and_says_what_the_run_would(teacher, tmp_path):
    result = dry(tmp_path, teacher, "--price-in", "1", "--price-out", "2", "--max-tokens", "100")
    assert result.returncode == 0, result.stderr
    assert sum(teacher.received.values()) == 0 and teacher.bodies == []  # the teacher's log is empty
    out = result.stdout
    assert "nothing was sent" in out and "300 pending of 300 planned" in out
    tokens = dollars(r"prompt tokens: ~([\d,]+)", out)
    assert "approximation: 4 characters a token" in out  # `m` is no model tiktoken knows
    assert "at most 30,000 (--max-tokens 100 each)" in out
    low = dollars(r"cost online: \$([\d.,]+) \(prompts alone\)", out)
    high = dollars(r"at most \$([\d.,]+)", out)
    assert low == pytest.approx(tokens / 1e6, abs=1e-4)
    assert high == pytest.approx((tokens + 2 * 30_000) / 1e6, abs=1e-4)
    assert dollars(r"cost batch : \$([\d.,]+)", out) == pytest.approx(low / 2, abs=1e-4)
    # The plan is in the store, recorded as a planned run: the real run sends it as planned
    status = synthgen("status", "--db", tmp_path / "c.duckdb", "--json")
    [run] = [json.loads(line) for line in status.stdout.splitlines()]
    assert run["status"] == "planned" and run["pending"] == 300
    again = dry(tmp_path, teacher, "--price-in", "1", "--price-out", "2", "--max-tokens", "100")
    assert again.returncode == 0 and sum(teacher.received.values()) == 0


def test_ten_thousand_prompts_are_estimated_in_seconds(teacher, tmp_path):
    import time

    started = time.monotonic()
    result = dry(tmp_path, teacher, rows=prompts(10_000))
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "10,000 pending" in result.stdout and sum(teacher.received.values()) == 0
    assert took < 15, took  # ~3 s measured (the bar is 5 s); slack for loaded CI machines


def test_a_model_in_the_price_table_is_priced_at_it_and_the_date_is_said(tmp_path):
    with TeacherServer(models=("gpt-4o-mini",)) as teacher:
        write_jsonl(tmp_path / "in.jsonl", prompts(30))
        args = ["generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                "--base-url", teacher.base_url, "--model", "gpt-4o-mini"]
        estimate = synthgen(*args, "--dry-run")
        assert estimate.returncode == 0, estimate.stderr
        assert f"the price table of {DATE} for gpt-4o-mini: $0.15/M in, $0.6/M out" in estimate.stdout
        tokens = dollars(r"prompt tokens: ~([\d,]+)", estimate.stdout)
        assert dollars(r"cost online: \$([\d.,]+)", estimate.stdout) == pytest.approx(
            tokens * 0.15 / 1e6, abs=1e-4)
        result = synthgen(*args)
        assert result.returncode == 0, result.stderr
    assert f"(at the price table of {DATE} for gpt-4o-mini" in result.stderr  # the summary's cost
    status = synthgen("status", "--db", tmp_path / "c.duckdb")
    assert "estimated cost $" in status.stdout and f"price table of {DATE}" in status.stdout


def test_a_model_not_in_the_table_has_no_price(teacher, tmp_path):
    result = dry(tmp_path, teacher)
    assert result.returncode == 0, result.stderr
    assert f"cost: unknown: no price for m: it is not in the price table of {DATE}" in result.stdout
    assert "$" not in result.stdout
    run = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                   "--base-url", teacher.base_url, "--model", "m")
    assert run.returncode == 0, run.stderr
    assert "cost: unknown: no price for m" in run.stderr and "estimated cost" not in run.stderr
    assert table_prices("m") is None and not Prices.resolve("gpt-4o-mini-2099-01-01").known  # no guess


def test_the_flags_override_the_table(tmp_path):
    with TeacherServer(models=("gpt-4o-mini",)) as teacher:
        write_jsonl(tmp_path / "in.jsonl", prompts(20))
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                          "--base-url", teacher.base_url, "--model", "gpt-4o-mini", "--dry-run",
                          "--price-in", "3", "--price-out", "7", "--batch-discount", "0.25")
    assert result.returncode == 0, result.stderr
    assert "the prices given: $3/M in, $7/M out; batch less 25%" in result.stdout
    assert "price table" not in result.stdout
    # Only the cached-input flag given: the table's other prices stay
    mixed = Prices.resolve("gpt-4o", cached_in=0.1, batch=True)
    assert (mixed.input, mixed.output, mixed.cached_input, mixed.discount) == (2.5, 10.0, 0.1, 0.5)
    assert Prices.of_config({"model": "gpt-4o", "price_in": 1.0}).describe().startswith("the prices given")


def test_the_table_is_dated_and_every_row_is_whole():
    table = price_table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table["as_of"]) and table["version"] >= 1
    for provider in table["providers"].values():
        assert 0 < provider["batch_discount"] < 1
        for name, row in provider["models"].items():
            assert row["input"] > 0 and row["output"] >= row["input"], name
            assert row.get("cached_input", 0) <= row["input"], name
    assert table_prices("claude-sonnet-4-5-20250929") == table_prices("claude-sonnet-4-5")  # a dated alias


def test_a_pilot_sends_exactly_n_and_estimates_the_real_cost(tmp_path):
    rows = prompts(300)
    price = ["--price-in", "1", "--price-out", "4"]
    with TeacherServer() as teacher:
        result = dry(tmp_path, teacher, *price, "--pilot", "20", rows=rows)
        assert result.returncode == 0, result.stderr
        assert sum(teacher.received.values()) == 20  # the pilot, and nothing else
        assert "280 pending of 300 planned" in result.stdout
        estimated = dollars(r"~\$([\d.,]+) with the pilot's own", result.stdout)
    with TeacherServer() as teacher:  # the real run, uninterrupted, in a store of its own
        write_jsonl(tmp_path / "in.jsonl", rows)
        real = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "real.duckdb",
                        "--base-url", teacher.base_url, "--model", "m", *price)
        assert real.returncode == 0, real.stderr
        assert sum(teacher.received.values()) == 300
    cost = dollars(r"estimated cost: \$([\d.,]+)", real.stderr)
    assert estimated == pytest.approx(cost, rel=0.25), (estimated, cost)
    # The pilot's answers are stored: the same command without --dry-run sends only the rest
    with TeacherServer() as teacher:
        rest = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                        "--base-url", teacher.base_url, "--model", "m", *price)
        assert rest.returncode == 0, rest.stderr
        assert sum(teacher.received.values()) == 280


def test_bad_input_and_a_pilot_without_a_dry_run_are_clear_errors(teacher, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\nnot json\n')
    result = synthgen("generate", "--input", tmp_path / "bad.jsonl", "--db", tmp_path / "c.duckdb",
                      "--base-url", teacher.base_url, "--model", "m", "--dry-run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "bad.jsonl:2: not valid JSON" in result.stderr and "nothing was sent" in result.stderr
    alone = dry(tmp_path, teacher, "--pilot", "5")
    assert alone.returncode == 0  # with --dry-run: fine
    refused = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                       "--base-url", teacher.base_url, "--model", "m", "--pilot", "5")
    assert refused.returncode == 2 and "--pilot N goes with --dry-run" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_recipe_dry_run_estimates_its_first_stage_and_says_why_not_the_rest(teacher, tmp_path):
    args = ["run", "evol-instruct", "--db", tmp_path / "c.duckdb", "--base-url", teacher.base_url,
            "--model", "m", "--price-in", "1", "--price-out", "2", "--dry-run"]
    result = synthgen(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sum(teacher.received.values()) == 0
    out = result.stdout
    assert "stage 1/3 evolved:" in out and "12 pending of 12 planned" in out
    assert "at most 1,152 (--max-tokens 96 each)" in out and "the prices given: $1/M in" in out
    assert "stage 2/3 equality: not estimated: its requests are made from the rows of earlier" in out
    piloted = synthgen(*args, "--pilot", "4", cwd=tmp_path)
    assert piloted.returncode == 0, piloted.stderr
    assert sum(teacher.received.values()) == 4 and "8 pending of 12 planned" in piloted.stdout
    real = synthgen(*args[:-1], cwd=tmp_path)  # the recipe itself: the pilot's answers are its own
    # This teacher echoes its prompt, so every evolution copies the evolving prompt and the
    # first stage keeps nothing: the recipe ends saying so (not "done" with 0 rows).
    assert real.returncode == 1 and "stage 'evolved' of recipe 'evol-instruct' kept no row" in real.stderr
    assert "evolved: 12 planned, 12 answered" in real.stderr
    assert sum(teacher.received[p] for p in teacher.received if "#Given Prompt#" in p) == 12


def test_the_bundled_teacher_counts_with_its_own_tokenizer_and_starts_nothing(tmp_path):
    require_bundled_teacher()  # in CI its absence is a failure, not a skip
    write_jsonl(tmp_path / "in.jsonl", prompts(50))
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                      "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "counted with the bundled teacher's tokenizer and chat template" in result.stdout
    assert "cost: none billed" in result.stdout and "starting" not in result.stderr.lower()
    # The same count as transformers' own chat template gives (what the server tokenizes)
    from synthgen.student.presets import teacher_tokenizer
    from synthgen.tokens import counter_for

    tok = teacher_tokenizer()
    chats = [[{"role": "user", "content": r["prompt"]}] for r in prompts(5)]
    chats.append([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    rendered = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    want = [len(tok(text, add_special_tokens=False)["input_ids"]) for text in rendered]
    assert counter_for("x", local=True).count_many([json.dumps(c) for c in chats]) == want


def test_tiktoken_counts_where_it_knows_the_model(monkeypatch):
    import sys
    import types

    from synthgen.tokens import counter_for

    fake = types.ModuleType("tiktoken")
    fake.encoding_name_for_model = lambda m: {"gpt-4o": "o200k_base"}[m]

    class Encoding:
        def encode_ordinary_batch(self, texts):
            return [t.split() for t in texts]  # a word a token, for the test

    fake.get_encoding = lambda name: Encoding()
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    counter = counter_for("gpt-4o", local=False)
    assert counter.exact and counter.name.startswith("tiktoken's o200k_base")
    messages = json.dumps([{"role": "user", "content": "one two three"}])
    assert counter.count_many([messages]) == [3 + 4 + 3]  # words, a message's 4, the reply's 3
    unknown = counter_for("m", local=False)  # a name tiktoken does not know: the approximation
    assert not unknown.exact and "approximation" in unknown.name


def test_a_pilot_counts_its_failures_and_nothing_pending_sends_nothing(teacher, tmp_path):
    rows = [{"prompt": f"p {i}"} for i in range(3)] + [{"prompt": "doomed #always=400"}]
    first = dry(tmp_path, teacher, "--price-in", "1", "--price-out", "1", "--pilot", "10", rows=rows)
    assert first.returncode == 0, first.stderr
    assert "4 requests sent, 1 failed, 3 answered" in first.stdout
    assert "nothing is left to send" in first.stdout and sum(teacher.received.values()) == 4
    again = dry(tmp_path, teacher, "--pilot", "10", rows=rows)  # no pilot run: nothing is pending
    assert again.returncode == 0, again.stderr
    assert "dry run: nothing was sent" in again.stdout and sum(teacher.received.values()) == 4


def test_a_pilot_prices_the_retries_a_run_will_pay_for(tmp_path):
    """Every prompt misfits the schema once and is sent again (its prompt billed twice, at a
    price that makes that most of the bill): the pilot's estimate counts those paid attempts
    (its billed tokens), and lands near the real bill; from kept answers alone it was ~45% low."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"answer": {"type": "string"},
                                  "words": {"type": "integer"}}, "required": ["answer", "words"]}))
    rows = [{"prompt": r["prompt"] + " #schema=notjson"} for r in prompts(300)]
    price = ["--price-in", "4", "--price-out", "1", "--response-schema", str(schema)]
    with TeacherServer() as teacher:
        result = dry(tmp_path, teacher, *price, "--pilot", "30", rows=rows)
        assert result.returncode == 0, result.stderr
        estimated = dollars(r"~\$([\d.,]+) with the pilot's own", result.stdout)
    with TeacherServer() as teacher:
        write_jsonl(tmp_path / "in.jsonl", rows)
        real = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "real.duckdb",
                        "--base-url", teacher.base_url, "--model", "m", *price)
        assert real.returncode == 0, real.stderr
        assert sum(teacher.received.values()) == 600  # 300, and each again after its misfit
    cost = dollars(r"estimated cost: \$([\d.,]+)", real.stderr)
    assert estimated == pytest.approx(cost, rel=0.2), (estimated, cost)
