"""Token ids for scoring: the prompt as the chat template renders it, the answer as stored.

Teacher and student must share a tokenizer: the teacher's log-probabilities are per token,
and KD lines them up with the student's positions by id. So scoring never re-tokenizes an
answer whose tokens are known: a student rollout (or a vLLM/llama.cpp answer) stores the
id of every token it sampled, and those ids are sent. Only an answer stored as text alone
(an import) is tokenized, with the end-of-turn token after it when it finished.

Checks, each refusing with what to do instead:

    same_tokenizer      two tokenizers (student and local teacher): the same vocabulary
                        and the same rendering of a probe conversation
    check_stored_ids    stored ids decode to the stored token text under this tokenizer
                        (answers written with another vocabulary are refused, not scored)
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from ..errors import ScoringError
from ..store.scores import AnswerRow

# Agreement below this between stored ids and their text: another tokenizer wrote them.
MIN_AGREEMENT = 0.95
PROBE = [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "Name three colours, then count to 12 (e.g. 1, 2, 3...)."}]
_CACHED_PROMPTS = 4096


class Tokens:
    """Prompt and answer ids of stored answers under one tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self._prompts: OrderedDict[str, list[int]] = OrderedDict()
        self._pieces: dict[int, str] = {}

    def prompt_ids(self, messages: str | list[dict[str, Any]]) -> list[int]:
        """The chat template's rendering of `messages` for a reply (cached: the n samples of
        one prompt share it)."""
        key = messages if isinstance(messages, str) else json.dumps(messages, sort_keys=True)
        ids = self._prompts.get(key)
        if ids is None:
            parsed = json.loads(messages) if isinstance(messages, str) else messages
            ids = chat_ids(self.tokenizer, parsed)
            self._prompts[key] = ids
            if len(self._prompts) > _CACHED_PROMPTS:
                self._prompts.popitem(last=False)
        return ids

    def answer_ids(self, row: AnswerRow) -> list[int]:
        """The answer's stored token ids where every entry has one, else its text tokenized
        (then, if it finished, followed by the end-of-turn token the model stopped on)."""
        stored = row.logprobs or []
        if stored and all(e.get("id") is not None for e in stored):
            return [int(e["id"]) for e in stored]
        ids = list(self.tokenizer(row.response, add_special_tokens=False)["input_ids"])
        if row.finish_reason == "stop" and self.eos is not None and (not ids or ids[-1] != self.eos):
            ids.append(self.eos)
        return ids

    def piece(self, token_id: int) -> str:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.tokenizer.decode([token_id])
        return piece

    def fill_ids(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Give alternatives reported as text only (an `echo` server without token ids) the
        id of that text in this tokenizer; text it does not know keeps id NULL (KD leaves
        it in the tail bucket)."""
        table: dict[str, int] | None = None
        for entry in entries:
            for alt in entry.get("top_logprobs") or []:
                if alt.get("id") is None and alt.get("token") is not None:
                    if table is None:
                        table = {}
                        for i in range(len(self.tokenizer)):
                            table.setdefault(self.piece(i), i)
                    alt["id"] = table.get(alt["token"])
            if entry.get("token") is None and entry.get("id") is not None:
                entry["token"] = self.piece(int(entry["id"]))
        return entries


def chat_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """`messages` rendered by the chat template with the generation prompt, as ids: what a
    served model sees before it answers (templates write their own special tokens)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def same_tokenizer(student: Any, teacher: Any, who: str = "the teacher") -> None:
    """Refuse when `student` and `teacher` tokenize differently (vocabulary or template)."""
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    if s_vocab != t_vocab:
        only = len(set(s_vocab.items()) ^ set(t_vocab.items()))
        raise ScoringError(
            f"{who} does not share the student's tokenizer ({len(s_vocab):,} vs {len(t_vocab):,} "
            f"tokens, {only:,} entries differ): the teacher's log-probabilities are per token and "
            "could not be lined up with the student's. Use a teacher of the student's family (a "
            "pruned student is cut from its teacher and shares it), or distil off-policy from "
            "text (`synthgen train` without --kd)")
    if chat_ids(student, PROBE) != chat_ids(teacher, PROBE):
        raise ScoringError(
            f"{who} renders conversations differently from the student (its chat template): the "
            "scored prompt would not be the one the student answered; give both the same template")


def check_served(local_ids: list[int], served_ids: list[int] | None, url: str, tokenizer_name: str) -> None:
    """Refuse a served teacher whose own tokenization of the probe differs from ours."""
    if served_ids is not None and served_ids != local_ids:
        raise ScoringError(
            f"the teacher at {url} tokenizes a conversation differently from the tokenizer "
            f"{tokenizer_name} ({len(served_ids)} tokens against {len(local_ids)}): it is not "
            "the student's tokenizer, so its scores could not be lined up. Serve a teacher that "
            "shares the student's tokenizer, or pass the right one with --tokenizer")


def check_stored_ids(rows: list[AnswerRow], tokens: Tokens, tokenizer_name: str) -> None:
    """Refuse answers whose stored token ids are not this tokenizer's (see MIN_AGREEMENT)."""
    agree = total = 0
    first_bad = None
    for row in rows:
        for entry in (row.logprobs or [])[:64]:
            tid, text = entry.get("id"), entry.get("token")
            if tid is None or not text:
                continue  # special tokens are reported with empty text by some servers
            total += 1
            if 0 <= tid < len(tokens.tokenizer) and tokens.piece(int(tid)) == text:
                agree += 1
            elif first_bad is None:
                first_bad = row.request_id
    if total and agree / total < MIN_AGREEMENT:
        raise ScoringError(
            f"the selected answers' token ids are not the tokenizer {tokenizer_name}'s: only "
            f"{agree} of {total} decode to the stored token text (first: answer {first_bad}). "
            "They were written by a model with another tokenizer; a teacher scores the tokens "
            "of a student that shares its tokenizer (select those answers with --where, or "
            "pass the right one with --tokenizer)")
