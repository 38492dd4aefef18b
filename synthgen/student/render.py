"""One conversation -> (input_ids, labels) in the student's chat template.

This is the only place that decides which tokens the student is trained on. The template
is rendered once in full; each assistant turn is located by rendering the conversation
up to it with the generation prompt (the text before the turn) and through it (the text
after). A token is trained when most of its characters lie inside an assistant turn,
which includes the end-of-turn marker the template writes after the content, so the
student learns to stop. Whitespace the template adds after that marker is not trained.

The text is tokenized without the tokenizer's own special tokens, because templates
already write them; a BOS is prepended only when the tokenizer wants one and the
template did not write it, so the sequence never starts with two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .deps import StudentError

IGNORE = -100


class TemplateError(StudentError):
    """The chat template cannot be used to locate the assistant's tokens."""


@dataclass
class Rendered:
    """A tokenized conversation. `labels` is IGNORE where the student is not trained.

    `turns` are (first, end) token ranges of the trained assistant turns; `length` is
    the token count before any truncation; `offsets` are each token's character span in
    the rendered text and `answer_start` where the last assistant turn's content begins
    there (both used to line up the teacher's tokens); `finished` is False for an
    answer cut by max_tokens, whose end-of-turn is not trained.
    """

    input_ids: list[int]
    labels: list[int]
    turns: list[tuple[int, int]]
    length: int
    offsets: list[tuple[int, int]] = field(default_factory=list)
    answer_start: int = -1
    finished: bool = True
    # Where the last turn's reasoning lies in the rendered text (characters), when the row
    # was rendered with it; (-1, -1) when the template lost it. The guards check it is trained.
    reasoning_at: tuple[int, int] | None = None

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _template(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # jinja raises many kinds; all mean the template is unusable here
        raise TemplateError(f"the chat template failed to render: {exc}") from exc


def wants_bos(tokenizer: Any) -> bool:
    """True when the tokenizer puts a BOS in front of plain text by itself."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


THINK = "<think>\n{reasoning}\n</think>\n\n{content}"


def with_reasoning(tokenizer: Any, conversation: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation as the student's template will show the last turn's
    `reasoning_content`: as is where the template renders that field (reasoning chat
    templates do), else inside the content as `<think>...</think>`, the form R1-style
    students are trained on. A conversation without reasoning is returned unchanged."""
    last = conversation[-1] if conversation else {}
    reasoning = last.get("reasoning_content")
    if not reasoning:
        return conversation
    if reasoning in _template(tokenizer, conversation, generation_prompt=False):
        return conversation
    inline = {"role": "assistant", "content": THINK.format(reasoning=reasoning, content=last["content"])}
    return [*conversation[:-1], inline]


def render(tokenizer: Any, conversation: list[dict[str, str]], finished: bool = True) -> Rendered:
    """Render and tokenize `conversation`, marking the assistant turns as trained.

    `finished=False` is for an answer the teacher did not end (cut by max_tokens): its
    text is trained but not the end-of-turn the template writes after it, so the student
    is not taught to stop where the teacher was stopped. A last turn carrying
    `reasoning_content` is trained with its reasoning (see `with_reasoning`).
    """
    answer = conversation[-1]["content"] if conversation else ""
    reasoning = conversation[-1].get("reasoning_content") if conversation else None
    conversation = with_reasoning(tokenizer, conversation)
    text = _template(tokenizer, conversation, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(conversation):
        if message["role"] != "assistant" or i == 0:
            continue
        before = _template(tokenizer, conversation[:i], generation_prompt=True)
        through = _template(tokenizer, conversation[: i + 1], generation_prompt=False)
        if not through.startswith(before) or not text.startswith(through):
            raise TemplateError(
                "the chat template renders a conversation differently from its prefixes, so the "
                "assistant tokens cannot be located; use a template where rendering more turns "
                "only appends text"
            )
        end = len(before) + len(through[len(before) :].rstrip())
        spans.append((len(before), end))

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    if wants_bos(tokenizer) and (not ids or ids[0] != tokenizer.bos_token_id):
        ids.insert(0, tokenizer.bos_token_id)
        offsets.insert(0, (0, 0))

    labels = [IGNORE] * len(ids)
    turns: list[tuple[int, int]] = []
    for a0, a1 in spans:
        first = end = None
        for t, (s, e) in enumerate(offsets):
            overlap = min(e, a1) - max(s, a0)
            if e > s and overlap * 2 > e - s:
                labels[t] = ids[t]
                first = t if first is None else first
                end = t + 1
        if first is not None and end is not None:
            turns.append((first, end))
    answer_start = -1
    reasoning_at = None if not reasoning else (-1, -1)
    if spans and conversation[-1]["role"] == "assistant":
        # the answer itself, after any reasoning: where the teacher's logprobs line up
        after = spans[-1][0]
        if reasoning and (at := text.find(reasoning, after)) >= 0:
            after = at + len(reasoning)
            reasoning_at = (at, after)
        answer_start = text.find(answer, after)
    if not finished and turns and answer_start >= 0:
        cut = answer_start + len(answer)
        first, end = turns[-1]
        for t in range(first, end):
            if offsets[t][0] >= cut:
                labels[t] = IGNORE
        kept = [t for t in range(first, end) if labels[t] != IGNORE]
        turns[-1:] = [(kept[0], kept[-1] + 1)] if kept else []
    return Rendered(ids, labels, turns, len(ids), offsets, answer_start, finished, reasoning_at)


def truncate(rendered: Rendered, max_length: int) -> Rendered:
    """Keep the first `max_length` tokens (the prompt and the start of the answer)."""
    turns = [(a, min(b, max_length)) for a, b in rendered.turns if a < max_length]
    return Rendered(
        input_ids=rendered.input_ids[:max_length],
        labels=rendered.labels[:max_length],
        turns=turns,
        length=rendered.length,
        offsets=rendered.offsets[:max_length],
        answer_start=rendered.answer_start,
        finished=rendered.finished,
        reasoning_at=rendered.reasoning_at,
    )


def preview(tokenizer: Any, rendered: Rendered, color: bool = False) -> str:
    """One example as text, trained tokens inside [[...]] (or green), then a count line."""
    out: list[str] = []
    trained_run = False
    for tok, lab in zip(rendered.input_ids, rendered.labels, strict=True):
        piece = tokenizer.decode([tok])
        is_trained = lab != IGNORE
        if is_trained != trained_run and not color:
            out.append("[[" if is_trained else "]]")
        trained_run = is_trained
        out.append(f"\x1b[32m{piece}\x1b[0m" if color and is_trained else piece)
    if trained_run and not color:
        out.append("]]")
    summary = (
        f"\n-- {len(rendered.input_ids)} tokens, {rendered.trained} trained "
        f"({'green' if color else 'inside [[ ]]'})"
    )
    return "".join(out) + summary
