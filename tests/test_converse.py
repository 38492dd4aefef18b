"""`synthgen converse` (issue 30): conversations of several turns, a simulated user writing the
turns between the teacher's, every turn a request stored once, resumable after kill -9, and
an export TRL trains every assistant turn of."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from conftest import clean_env, synthgen
from teacher_server import TeacherServer, write_jsonl


class Chat(TeacherServer):
    """Answers as an assistant, or, asked by the user simulator's persona, as the user: a
    follow-up naming the turn, or [END] for a seed that says "brief" (after one answer)."""

    def _completion(self, body, prompt, attempt=1):
        out = super()._completion(body, prompt, attempt)
        first = body["messages"][0]
        if first["role"] == "system" and "You play the user" in first["content"]:
            turn = prompt.count("Assistant:")
            text = "[END]" if "brief" in prompt else f"Follow-up {turn}: why is that?"
            out["choices"][0]["message"]["content"] = text
        return out


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def seeds(tmp_path: Path, n: int) -> Path:
    """Seeds with faults of the chaos teacher: 500s, 429s, dropped connections, a bad body."""
    faults = ["", " #fault=500", " #fault=429,drop", " #fault=badjson", ""]
    path = tmp_path / "seeds.jsonl"
    write_jsonl(path, [{"prompt": f"Question {i}{' brief' if i % 10 == 3 else ''}{faults[i % 5]}"}
                       for i in range(n)])
    return path


def test_three_turns_over_50_seeds_killed_and_resumed_store_every_turn_once(tmp_path):
    db, out = tmp_path / "chat.duckdb", tmp_path / "chat.jsonl"
    with Chat(latency=0.01) as teacher:
        args = [sys.executable, "-m", "synthgen", "converse", "--input", str(seeds(tmp_path, 50)),
                "--db", str(db), "--turns", "3", "--out", str(out), "--model", "m",
                "--base-url", teacher.base_url, "--concurrency", "8"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
        deadline = time.monotonic() + 60
        while len(teacher.answered_at) < 80 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.kill()  # kill -9, mid-run (in the second round or later)
        proc.wait()
        assert not out.exists()
        done = subprocess.run(args, capture_output=True, text=True, env=clean_env(), timeout=180)
        assert done.returncode == 0, done.stderr
        again = subprocess.run(args, capture_output=True, text=True, env=clean_env(), timeout=180)
        assert again.returncode == 0, again.stderr
        answered_after = len(teacher.answered_at)
    assert "50 conversations, 140 assistant turns stored (5 ended by the user, 0 by a failed turn)" \
        in done.stderr
    assert answered_after == len(teacher.answered_at)  # the third run sent nothing
    chats = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(chats) == 50
    by_turns = Counter(c["turns"] for c in chats)
    assert by_turns == {3: 45, 1: 5}
    for c in chats:  # user, assistant, user, assistant, ...: every turn in its place
        roles = [m["role"] for m in c["messages"]]
        assert roles == ["user", "assistant"] * c["turns"]
        assert all(m["content"] for m in c["messages"])
        follow_ups = [c["messages"][2 * k]["content"] for k in range(1, c["turns"])]
        assert follow_ups == [f"Follow-up {k}: why is that?" for k in range(1, c["turns"])]
    # Every turn (each side of each round of each conversation) is one request, answered once
    turns = rows(db, "SELECT q.metadata->>'conversation_id', q.metadata->>'turn', q.metadata->>'side', "
                     "count(*) FROM responses s JOIN requests q USING (request_id) GROUP BY ALL")
    assert all(n == 1 for *_, n in turns)
    assert Counter(side for _, _, side, _ in turns) == {"assistant": 140, "user": 95}
    assert rows(db, "SELECT count(*) FROM failures") == [(0,)]


@pytest.mark.train
def test_trl_trains_every_assistant_turn_of_the_export(tmp_path):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from synthgen.student.presets import teacher_tokenizer, tiny_model

    out = tmp_path / "chat.jsonl"
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "Why is the sky blue?"}])
    with Chat() as teacher:
        result = synthgen("converse", "--input", tmp_path / "seeds.jsonl", "--db", tmp_path / "c.duckdb",
                          "--turns", "3", "--out", out, "--model", "m", "--base-url", teacher.base_url)
    assert result.returncode == 0, result.stderr
    ds = load_dataset("json", data_files=str(out), split="train")
    tok = teacher_tokenizer()
    trainer = SFTTrainer(model=tiny_model(tok, 0), train_dataset=ds, processing_class=tok,
                         args=SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, report_to=[],
                                        use_cpu=True, bf16=False))
    row = trainer.train_dataset[0]
    trained = tok.decode([i for i, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100])
    assistant = [m["content"] for m in json.loads(out.read_text())["messages"] if m["role"] == "assistant"]
    assert len(assistant) == 3 and all(text in trained for text in assistant)


def test_every_assistant_turn_keeps_its_logprobs(tmp_path):
    """Issue 30 #4: with --logprobs K each assistant turn's row keeps the teacher's top-K (the
    user simulator's turns keep none), so KD reads conversations turn by turn."""
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": f"Question {i}"} for i in range(3)])
    db = tmp_path / "c.duckdb"
    with Chat() as teacher:
        result = synthgen("converse", "--input", tmp_path / "seeds.jsonl", "--db", db, "--turns", "2",
                          "--model", "m", "--base-url", teacher.base_url, "--logprobs", "2")
    assert result.returncode == 0, result.stderr
    found = rows(db, "SELECT q.metadata->>'side', s.logprobs IS NOT NULL, len(s.logprobs[1].top_logprobs) "
                     "FROM responses s JOIN requests q USING (request_id) ORDER BY 1")
    assert [f[0] for f in found] == ["assistant"] * 6 + ["user"] * 3
    assert all(has and k == 2 for side, has, k in found if side == "assistant")
    assert not any(has for side, has, _ in found if side == "user")
