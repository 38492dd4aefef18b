"""Tool-use episodes: `synthgen episodes`, the teacher calling tools until it answers.

Each seed starts an episode. A step asks the teacher (with the tools, as OpenAI tool
schemas) for its next message in every episode still going; where it calls tools, each call
is run and its result appended as a `tool` message, and the episode goes on; where it
answers in text, the episode is done. At most `max_steps` teacher turns.

    seeds ──> teacher step 1 ──> tools run ──> teacher step 2 ──> ... ──> an answer

Tools run where they can do no harm: `python` (one argument, `code`) runs in the sandbox
(synthgen/sandbox: its own network namespace where the kernel allows, CPU, memory, time
and file limits, a temporary directory, nothing of the store or HOME); any other tool
runs through the caller's `run_tool(name, arguments) -> str` (the Python API), or is
answered "no such tool". A tool that fails gives its error as the result: the teacher
sees it and the episode goes on.

Every teacher turn is a request through `generate()`, stored once; every tool result is
stored once in `tool_results`, keyed by the episode so far and the call, so the same command
after a kill neither re-sends an answered turn nor runs a tool again (a tool's second run
might say something else, and the episode's next request would then be another one).
`out` gets one row per episode, `{"messages": [...], "tools": [...]}`: TRL's tool-calling
format.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import store
from .converse import Conversation, _key, _seeds
from .errors import ConfigError

log = logging.getLogger("synthgen")
RESULT_CHARS = 4_000  # of a tool's output, fed back to the teacher

RunTool = Callable[[str, dict[str, Any]], str]


@dataclass
class EpisodesSummary:
    status: str = "done"  # done | interrupted
    episodes: int = 0
    answered: int = 0  # episodes that ended with the teacher's answer
    tool_calls: int = 0  # tool calls run (or found run) over all episodes
    tool_errors: int = 0  # of them, calls whose tool failed (the error was the result)
    rounds: list[dict[str, Any]] = field(default_factory=list)


def episodes(seeds: Path, db: Path, tools: list[dict[str, Any]], *, max_steps: int = 4,
             run_tool: RunTool | None = None, teacher: dict[str, Any] | None = None,
             out: Path | None = None, announce: Callable[[str], None] | None = None,
             **reporting: Any) -> EpisodesSummary:
    """Run every episode of `seeds` into `db`; see the module's docstring."""
    from .run import teacher_settings

    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, not {max_steps}")
    _check_tools(tools)
    announce = announce or log.info
    teacher = {k: v for k, v in (teacher or {}).items() if v is not None}
    extra = {**teacher.pop("extra_body", {}), "tools": tools}
    runs = _seeds(seeds)
    summary = EpisodesSummary(episodes=len(runs))
    with teacher_settings(teacher.get("base_urls") or [], teacher.get("threads"),
                          "concurrency" in teacher) as update:
        teacher.update(update, extra_body=extra)
        _steps(runs, Path(db), max_steps, run_tool or sandboxed, teacher, announce, reporting, summary)
    summary.answered = sum(e.ended == "answered" for e in runs)
    if out is not None and summary.status == "done":
        _write(out, runs, tools)
    return summary


def sandboxed(name: str, arguments: dict[str, Any]) -> str:
    """The built-in executor: `python` in the sandbox; no other tool."""
    if name != "python":
        raise LookupError(f"no such tool: {name!r}")
    code = arguments.get("code")
    if not isinstance(code, str):
        raise ValueError("the python tool takes one argument, 'code' (a string)")
    from .sandbox import run_python

    result = run_python(code)
    if not result.ok:
        raise RuntimeError(f"{result.reason()}\n{result.stdout}{result.stderr}".strip())
    return result.stdout


def _steps(runs: list[Conversation], db: Path, max_steps: int, run_tool: RunTool,
           teacher: dict[str, Any], announce: Callable[[str], None], reporting: dict[str, Any],
           summary: EpisodesSummary) -> None:
    from .converse import _round

    work = Path(f"{db}.episodes")
    work.mkdir(parents=True, exist_ok=True)
    for k in range(1, max_steps + 1):
        going = [e for e in runs if e.ended is None]
        if not going:
            return
        rows = [{"messages": e.messages, "episode_id": e.conversation_id, "step": k} for e in going]
        announce(f"step {k}/{max_steps}: the teacher answers {len(going):,} episodes")
        replies = _round(db, work / f"step-{k}.jsonl", rows, teacher, reporting, summary,
                         tool_calls=True)
        if replies is None:
            summary.status = "interrupted"
            return
        for e in going:
            reply = replies.get(_key(e.messages))
            if reply is None:
                e.ended = "teacher failed"
                continue
            text, calls = reply
            if not calls:
                e.messages = [*e.messages, {"role": "assistant", "content": text or ""}]
                e.turns, e.ended = k, "answered"
                continue
            said = {"role": "assistant", "content": text, "tool_calls": calls}
            results = [_tool_result(db, e.messages, call, run_tool, summary) for call in calls]
            e.messages = [*e.messages, said, *results]
            e.turns = k
        for e in going:
            if e.ended is None and k == max_steps:
                e.ended = "out of steps"


def _tool_result(db: Path, before: list[dict[str, Any]], call: dict[str, Any], run_tool: RunTool,
                 summary: EpisodesSummary) -> dict[str, Any]:
    """The `tool` message for one call: stored once (run again, the stored result is used)."""
    fn = call.get("function") or {}
    name, raw = str(fn.get("name")), fn.get("arguments") or "{}"
    said = _key(before) + orjson.dumps(call, option=orjson.OPT_SORT_KEYS).decode()
    key = hashlib.blake2b(said.encode(), digest_size=16).hexdigest()
    con = store.connect(db)
    try:
        found = con.execute("SELECT result, ok FROM tool_results WHERE call_key = ?", [key]).fetchall()
        if found:
            result, ok = found[0]
        else:
            try:
                args = orjson.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(args, dict):
                    raise ValueError("the arguments are not a JSON object")
                result, ok = str(run_tool(name, args))[:RESULT_CHARS], True
            except Exception as exc:  # the tool's failure is the teacher's to read, not ours
                result, ok = f"error: {type(exc).__name__}: {exc}"[:RESULT_CHARS], False
            con.execute("INSERT INTO tool_results VALUES (?, ?, ?, ?, ?, now()) ON CONFLICT DO NOTHING",
                        [key, name, raw if isinstance(raw, str) else orjson.dumps(raw).decode(), result, ok])
    finally:
        con.close()
    summary.tool_calls += 1
    summary.tool_errors += not ok
    return {"role": "tool", "tool_call_id": call.get("id"), "content": result}


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list) or not tools:
        raise ConfigError("tools: a non-empty list of OpenAI tool schemas ({'type': 'function', "
                          "'function': {'name', 'description', 'parameters'}})")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ConfigError(f"tools[{i}]: not an OpenAI tool schema: it needs "
                              "{'type': 'function', 'function': {'name': ..., 'parameters': ...}}")


def _write(out: Path, runs: list[Conversation], tools: list[dict[str, Any]]) -> None:
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as fh:
        for e in runs:
            if e.turns:
                row = {"messages": e.messages, "tools": tools, "episode_id": e.conversation_id,
                       "ended": e.ended}
                fh.write(orjson.dumps(row) + b"\n")
    tmp.replace(out)


PYTHON_TOOL = {"type": "function", "function": {
    "name": "python", "description": "Run a Python program in a sandbox (no network, limited CPU, "
    "memory and time, a scratch directory) and get what it prints.",
    "parameters": {"type": "object", "properties": {"code": {"type": "string",
                   "description": "The program; print what you need to see."}}, "required": ["code"]}}}
