"""`synthgen episodes` (issue 30): the teacher calls a python tool, the tool runs in the
sandbox, its result (or its error) goes back, every step is stored once, and the export
loads in TRL with its tools."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from conftest import synthgen
from teacher_server import TeacherServer, write_jsonl

HOSTILE = {
    "socket": "import socket\ns = socket.create_connection(('127.0.0.1', 9))\nprint('connected')",
    "escape": "open('/tmp/synthgen-escaped.txt', 'w').write('x')\nprint('wrote')",
    "memory": "x = bytearray(4 * 2**30)\nprint('allocated')",
    "fine": "print(6 * 7)",
}


class ToolTeacher(TeacherServer):
    """Calls `python` with the program the seed names; answers once it has the result."""

    def _completion(self, body, prompt, attempt=1):
        out = super()._completion(body, prompt, attempt)
        last = body["messages"][-1]
        message = out["choices"][0]["message"]
        if last["role"] == "tool":
            message["content"] = f"The tool said: {last['content'][:200]}"
            return out
        assert body.get("tools"), "the tools travel with every request"
        name = prompt.split("run ")[-1].split()[0]
        message["content"] = None
        message["tool_calls"] = [{"id": "call_1", "type": "function", "function": {
            "name": "python", "arguments": json.dumps({"code": HOSTILE[name]})}}]
        out["choices"][0]["finish_reason"] = "tool_calls"
        return out


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_hostile_tool_calls_fail_in_the_sandbox_and_the_episode_goes_on(tmp_path):
    Path("/tmp/synthgen-escaped.txt").unlink(missing_ok=True)
    write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": f"Please run {name} now"} for name in HOSTILE])
    out, db = tmp_path / "ep.jsonl", tmp_path / "ep.duckdb"
    args = ["episodes", "--input", tmp_path / "tasks.jsonl", "--db", db, "--out", out, "--model", "m"]
    with ToolTeacher() as teacher:
        result = synthgen(*args, "--base-url", teacher.base_url, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "4 episodes, 4 answered; 4 tool calls (3 failed" in result.stderr
        sent = sum(teacher.received.values())
        again = synthgen(*args, "--base-url", teacher.base_url, timeout=300)  # all stored: nothing again
        assert again.returncode == 0, again.stderr
        assert sum(teacher.received.values()) == sent == 8
    assert not Path("/tmp/synthgen-escaped.txt").exists()
    results = dict(rows(db, "SELECT arguments::JSON->>'code', result FROM tool_results"))
    assert len(results) == 4  # each call ran once, the second command found them stored
    assert results[HOSTILE["fine"]].strip() == "42"
    for name in ("socket", "escape", "memory"):
        said = results[HOSTILE[name]]
        assert said.startswith("error:") and ("connected" not in said and "wrote" not in said
                                             and "allocated" not in said), (name, said)
    assert "MemoryError" in results[HOSTILE["memory"]]
    episodes = [json.loads(line) for line in out.read_text().splitlines()]
    for ep in episodes:
        roles = [m["role"] for m in ep["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant"]
        assert ep["messages"][-1]["content"].startswith("The tool said:")
        assert ep["tools"][0]["function"]["name"] == "python"


@pytest.mark.train
def test_the_export_loads_in_trl_with_its_tools(tmp_path):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from synthgen.student.presets import teacher_tokenizer, tiny_model

    write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": "Please run fine now"}])
    out = tmp_path / "ep.jsonl"
    with ToolTeacher() as teacher:
        result = synthgen("episodes", "--input", tmp_path / "tasks.jsonl", "--db", tmp_path / "ep.duckdb",
                          "--out", out, "--model", "m", "--base-url", teacher.base_url, timeout=300)
    assert result.returncode == 0, result.stderr
    ds = load_dataset("json", data_files=str(out), split="train")
    tok = teacher_tokenizer()
    # SmolLM2's own template knows no tools (a tool message breaks it); a student for tool
    # use gets a template that does, as Qwen's and Llama's have. A small ChatML one:
    tok.chat_template = TOOL_TEMPLATE
    trainer = SFTTrainer(model=tiny_model(tok, 0), train_dataset=ds, processing_class=tok,
                         args=SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, report_to=[],
                                        use_cpu=True, bf16=False))
    row = trainer.train_dataset[0]
    text = tok.decode(row["input_ids"])
    assert '"name": "python"' in text  # the tool's schema, rendered from the row's `tools`
    assert "<tool_call>" in text and "print(6 * 7)" in text  # the teacher's call
    assert "<|im_start|>tool\n42" in text and "The tool said: 42" in text  # its result, the answer


TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
