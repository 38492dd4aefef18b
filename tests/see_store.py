"""A store with something to see: a real run against the loopback teacher (answers with
logprobs, a retried 500, a failure, a prompt that is an XSS attempt), reasoning on a few
answers, and student evaluations with a loss history and student answers."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from conftest import synthgen
from teacher_server import TeacherServer, make_prompts, write_jsonl

XSS = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


def build(tmp_path: Path, n: int = 40) -> Path:
    rows = [{"prompt": XSS + " #fault=500", "topic": "xss"}, {"prompt": "doomed #always=400", "topic": "bad"}]
    rows += [{"prompt": p, "topic": "math" if i % 2 else "chat"} for i, p in enumerate(make_prompts(n))]
    write_jsonl(tmp_path / "in.jsonl", rows)
    db = tmp_path / "corpus.duckdb"
    with TeacherServer(latency=0.01) as teacher:
        result = synthgen("generate", "--input", tmp_path / "in.jsonl", "--db", db, "--model", "m",
                          "--base-url", teacher.base_url, "--logprobs", "3", "--concurrency", "4",
                          "--price-in", "0.5", "--price-out", "1.5")
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "student"
    model_dir.mkdir()
    history = [{"step": s, "loss": 4.0 / s, "tokens_per_s": 900.0} for s in range(1, 21)]
    (model_dir / "synthgen_train.json").write_text(json.dumps({"history": history}))
    con = duckdb.connect(str(db))
    try:
        ids = [r[0] for r in con.execute(
            "SELECT request_id FROM corpus ORDER BY line LIMIT 3 OFFSET 2").fetchall()]
        con.execute("UPDATE responses SET reasoning = 'First I think about ' || request_id "
                    "WHERE request_id IN (SELECT unnest(?))", [ids])
        samples = [{"request_id": i, "text": f"STUDENT says {i[:6]}"} for i in ids]
        for eval_id, day, loss in (("e1", "2026-01-01", 3.1), ("e2", "2026-01-02", 2.4)):
            for label, extra in (("trained", {"samples": samples}), ("untrained", {}), ("teacher", {})):
                shift = {"untrained": 2, "teacher": -1}.get(label, 0)
                metrics = {"loss": loss + shift,
                           "perplexity": 10.0, "token_accuracy": 0.4, "rouge_l": 0.3, **extra}
                con.execute("INSERT INTO evals VALUES (?, ?::TIMESTAMPTZ, ?, ?, ?, ?, ?)",
                            [eval_id, day, str(model_dir), label, "SELECT * FROM corpus", 9,
                             json.dumps(metrics)])
    finally:
        con.close()
    return db
