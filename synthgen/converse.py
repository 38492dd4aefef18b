"""Multi-turn conversations with a simulated user: `synthgen converse`.

Each seed (a prompt, or messages) starts a conversation. A round asks the teacher for the
assistant's turn of every conversation still going, then asks a user simulator (the same
teacher, or any other endpoint and model, with its own persona prompt and sampling) for the
user's next message, until `turns` assistant turns or the simulator ends the conversation
(it answers `[END]`):

    seeds ──> teacher round 1 ──> user round 1 ──> teacher round 2 ──> ... ──> turns
              (generate)          (generate)       (generate)

Every turn is an ordinary request through `generate()`, so it is stored exactly once, with
its own prompt (the conversation so far), retried, rate-limited and priced like any other;
the rounds are written as input files beside the store, made from what the store holds, so
the same command after a kill re-sends nothing answered: each round finds its answers and
the next one starts where the store ends. A conversation whose teacher turn failed ends at
the turn before. With `logprobs` among the teacher's fields every assistant turn keeps its
top-K in its own row (`responses.logprobs`), so KD and on-policy distillation work on the
turns of a conversation as on single answers.

`out` gets one row per conversation in the chat format TRL's SFTTrainer reads
(`{"messages": [...every turn...], "conversation_id", "turns"}`): trained on every token by
default, every assistant turn among them.
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
from .errors import ConfigError, InputError
from .inputs.messages import BadRow, messages_of
from .inputs.readers import read_rows

log = logging.getLogger("synthgen")

END = "[END]"
USER_PERSONA = (
    "You play the user in a conversation with an AI assistant. Read the conversation so far "
    "and write the user's next message: a follow-up question, a correction, or a request to "
    "go further, in the user's own voice, in one to three sentences. Write only that message. "
    f"If the user has what they wanted and would stop here, write only {END}."
)


@dataclass
class Conversation:
    conversation_id: str
    messages: list[dict[str, Any]]
    turns: int = 0  # assistant turns so far
    ended: str | None = None  # why it stopped early: "user ended", "teacher failed"


@dataclass
class ConverseSummary:
    status: str = "done"  # done | interrupted (a round was: the same call goes on from it)
    conversations: int = 0
    turns: int = 0  # assistant turns stored, over all conversations
    ended_by_user: int = 0
    ended_by_failure: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)  # what each round's run did


def converse(seeds: Path, db: Path, *, turns: int = 3, persona: str = USER_PERSONA,
             teacher: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
             out: Path | None = None, announce: Callable[[str], None] | None = None,
             **reporting: Any) -> ConverseSummary:
    """Run every conversation of `seeds` to `turns` assistant turns into `db`.

    `teacher` and `user` are generate()'s fields for each side (model, base_urls, sampling,
    limits); the user side defaults to the teacher's. `reporting` goes to every generate()."""
    from .run import teacher_settings

    if turns < 1:
        raise ConfigError(f"turns must be at least 1, not {turns}")
    announce = announce or log.info
    teacher = {k: v for k, v in (teacher or {}).items() if v is not None}
    user = {k: v for k, v in (user or {}).items() if v is not None}
    user.setdefault("logprobs", None)  # per-turn logprobs are the teacher's (KD), not the user's
    chats = _seeds(seeds)
    summary = ConverseSummary(conversations=len(chats))
    # The bundled teacher, where no endpoint is given, is started once for every round.
    with teacher_settings(teacher.get("base_urls") or [], teacher.get("threads"),
                          "concurrency" in teacher) as update:
        teacher.update(update)
        user = {**teacher, **user} if not user.get("base_urls") else user
        _rounds(chats, Path(db), turns, persona, teacher, user, announce, reporting, summary)
    summary.turns = sum(c.turns for c in chats)
    summary.ended_by_user = sum(c.ended == "user ended" for c in chats)
    summary.ended_by_failure = sum(c.ended in ("teacher failed", "user failed") for c in chats)
    if out is not None and summary.status == "done":
        _write(out, [c for c in chats if c.turns])
    return summary


def _rounds(chats: list[Conversation], db: Path, turns: int, persona: str, teacher: dict[str, Any],
            user: dict[str, Any], announce: Callable[[str], None], reporting: dict[str, Any],
            summary: ConverseSummary) -> None:
    work = Path(f"{db}.converse")
    work.mkdir(parents=True, exist_ok=True)
    for k in range(1, turns + 1):
        going = [c for c in chats if c.ended is None]
        if not going:
            break
        rows = [{"messages": c.messages, "conversation_id": c.conversation_id, "turn": k, "side": "assistant"}
                for c in going]
        announce(f"turn {k}/{turns}: the teacher answers {len(going):,} conversations")
        answers = _round(db, work / f"turn-{k}-assistant.jsonl", rows, teacher, reporting, summary)
        if answers is None:
            return
        for c in going:
            text = answers.get(_key(c.messages))
            if text is None:
                c.ended = "teacher failed"
                continue
            c.messages = [*c.messages, {"role": "assistant", "content": text}]
            c.turns = k
        if k == turns:
            break
        going = [c for c in chats if c.ended is None]
        asks = [{"messages": [{"role": "system", "content": persona},
                              {"role": "user", "content": transcript(c.messages)}],
                 "conversation_id": c.conversation_id, "turn": k, "side": "user"} for c in going]
        if not asks:
            break
        announce(f"turn {k}/{turns}: the simulated user answers {len(asks):,} conversations")
        replies = _round(db, work / f"turn-{k}-user.jsonl", asks, user, reporting, summary)
        if replies is None:
            return
        for c, ask in zip(going, asks, strict=True):
            reply = (replies.get(_key(ask["messages"])) or "").strip()
            if not reply or END in reply:
                c.ended = "user ended" if reply else "user failed"
                continue
            c.messages = [*c.messages, {"role": "user", "content": reply}]


def transcript(messages: list[dict[str, Any]]) -> str:
    """The conversation as the user simulator reads it."""
    said = {"user": "User", "assistant": "Assistant", "system": "System"}
    lines = [f"{said.get(m['role'], m['role'])}: {_text(m.get('content'))}" for m in messages]
    return "The conversation so far:\n\n" + "\n\n".join(lines) + "\n\nThe user's next message:"


def _round(db: Path, path: Path, rows: list[dict[str, Any]], side: dict[str, Any],
           reporting: dict[str, Any], summary: Any, tool_calls: bool = False) -> dict[str, Any] | None:
    """One generate() over `rows` (written to `path`: the same rows after a kill, so the same
    requests), and every answer to them by conversation so far: its text (with
    `tool_calls`: (text, tool calls)). None when the round was interrupted (Ctrl-C: the
    same call goes on from here); `summary.rounds` gets what the round's run did."""
    from .run import generate

    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    run = generate(input=path, db=db, **side, **reporting)
    summary.rounds.append({"file": path.name, "run_id": run.run_id, "status": run.status,
                           "answered": run.answered, "already_done": run.already_done,
                           "failed": run.failed})
    if run.status == "interrupted":
        summary.status = "interrupted"
        return None
    con = store.connect(db, read_only=True)
    try:
        found = con.execute(
            "SELECT q.messages::VARCHAR, s.text, s.tool_calls::VARCHAR FROM runs r "
            "JOIN plan_requests p USING (plan_key) JOIN requests q USING (request_id) "
            "JOIN responses s USING (request_id) WHERE r.run_id = ?", [run.run_id]).fetchall()
    finally:
        con.close()
    if tool_calls:
        return {_key(orjson.loads(m)): (text, orjson.loads(calls) if calls else None)
                for m, text, calls in found}
    return {_key(orjson.loads(m)): text for m, text, _ in found if text is not None}


def _key(messages: list[dict[str, Any]]) -> str:
    """The same conversation, whatever the order of its keys (the store keeps them sorted)."""
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS).decode()


def _seeds(path: Path) -> list[Conversation]:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file (the seeds)")
    chats: list[Conversation] = []
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()
    for line, row in read_rows(path, None):
        if isinstance(row, BadRow):
            problems.append((line, str(row)))
            continue
        try:
            messages = messages_of(row, None)
        except BadRow as exc:
            problems.append((line, str(exc)))
            continue
        cid = hashlib.blake2b(_key(messages).encode(), digest_size=8).hexdigest()
        if cid in seen:
            continue  # the same seed twice is one conversation (its requests are the same)
        seen.add(cid)
        chats.append(Conversation(cid, messages))
    if problems:
        shown = "; ".join(f"{path}:{line}: {why}" for line, why in problems[:5])
        raise InputError(f"{len(problems):,} seed rows are unusable: {shown}", problems, len(problems))
    if not chats:
        raise InputError(f"{path}: no seeds")
    return chats


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _write(out: Path, chats: list[Conversation]) -> None:
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as fh:
        for c in chats:
            fh.write(orjson.dumps({"messages": c.messages, "conversation_id": c.conversation_id,
                                   "turns": c.turns, "ended": c.ended}) + b"\n")
    tmp.replace(out)
