"""What `generate` sends unless told otherwise: temperature, top_p and max_tokens, the values
stated in --help and the README; 'none' sends no value (the server's own, as before)."""

from __future__ import annotations

import json

import duckdb
from conftest import synthgen
from teacher_server import write_jsonl

from synthgen.config import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P

SAMPLING = ("temperature", "top_p", "max_tokens")


def test_plain_generate_sends_the_stated_defaults(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    db = tmp_path / "c.duckdb"
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                      "--base-url", teacher.base_url)
    assert result.returncode == 0, result.stderr
    [body] = teacher.bodies
    assert {k: body[k] for k in SAMPLING} == {"temperature": DEFAULT_TEMPERATURE, "top_p": DEFAULT_TOP_P,
                                              "max_tokens": DEFAULT_MAX_TOKENS}
    con = duckdb.connect(str(db), read_only=True)
    [(config,)] = con.execute("SELECT config FROM runs").fetchall()
    con.close()
    assert {k: json.loads(config)[k] for k in SAMPLING} == {k: body[k] for k in SAMPLING}
    helped = synthgen("generate", "--help").stdout
    for flag, value in (("--temperature", DEFAULT_TEMPERATURE), ("--top-p", DEFAULT_TOP_P),
                        ("--max-tokens", DEFAULT_MAX_TOKENS)):
        text = " ".join(helped.split(flag, 1)[1].split("--", 1)[0].split())
        assert f"[default: {value}]" in text and "'none'" in text, (flag, text)


def test_none_sends_no_value_flag_or_config_file(teacher, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "a.duckdb",
                      "--model", "m", "--base-url", teacher.base_url,
                      "--temperature", "none", "--top-p", "None", "--max-tokens", "none")
    assert result.returncode == 0, result.stderr
    (tmp_path / "run.toml").write_text('temperature = "none"\ntop_p = "none"\nmax_tokens = 64\n')
    result = synthgen("generate", "--config", tmp_path / "run.toml", "--input", tmp_path / "in.jsonl",
                      "--db", tmp_path / "b.duckdb", "--model", "m", "--base-url", teacher.base_url)
    assert result.returncode == 0, result.stderr
    first, second = teacher.bodies
    assert not set(SAMPLING) & set(first)
    assert second["max_tokens"] == 64 and not {"temperature", "top_p"} & set(second)
    bad = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", tmp_path / "c.duckdb",
                   "--model", "m", "--base-url", teacher.base_url, "--temperature", "warm")
    assert bad.returncode == 2 and "--temperature" in bad.stderr and "'none'" in bad.stderr


def test_processed_logprobs_under_top_p_are_warned_about(teacher, tmp_path, caplog):
    """Processed logprobs (vLLM's --logprobs-mode processed_logprobs) come after top_p: the
    default 0.9 makes the tail -inf, which KD cannot temper back; the run says so."""
    import logging

    from teacher_server import write_jsonl

    import synthgen as sg

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    common = {"input": tmp_path / "in.jsonl", "model": "m", "base_urls": [teacher.base_url], "logprobs": 2,
              "logprobs_mode": "processed"}
    with caplog.at_level(logging.WARNING, logger="synthgen"):
        sg.generate(db=tmp_path / "a.duckdb", **common)
    assert "top_p 0.9 makes every token outside the nucleus -inf" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="synthgen"):
        sg.generate(db=tmp_path / "b.duckdb", top_p=None, **common)
    assert "nucleus" not in caplog.text
