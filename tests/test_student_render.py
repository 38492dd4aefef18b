"""Rendering and the guards: which tokens are trained, on good and broken chat templates."""

from __future__ import annotations

import copy

import pytest

from synthgen.student.guards import GuardError, check_rows
from synthgen.student.presets import teacher_tokenizer
from synthgen.student.render import IGNORE, TemplateError, preview, render

pytestmark = pytest.mark.train

CONV = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue is a colour."},
]


@pytest.fixture(scope="module")
def tok():
    return teacher_tokenizer()


def with_template(tok, template: str):
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def trained_text(tok, r) -> str:
    return tok.decode([t for t, lab in zip(r.input_ids, r.labels, strict=True) if lab != IGNORE])


def test_chatml_trains_exactly_the_answer_and_its_end_of_turn(tok) -> None:
    r = render(tok, CONV)
    assert trained_text(tok, r) == "Blue is a colour.<|im_end|>"
    assert r.labels[-1] == IGNORE  # the newline after <|im_end|> is the template's, not trained
    assert r.input_ids[0] == tok.bos_token_id and r.input_ids[1] != tok.bos_token_id
    kept, report = check_rows(tok, [r], ["row 0"], max_length=512)
    assert report.trained_tokens == r.trained and len(kept) == 1


def test_every_assistant_turn_is_trained(tok) -> None:
    conv = [*CONV, {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Red."}]
    r = render(tok, conv)
    assert trained_text(tok, r) == "Blue is a colour.<|im_end|>Red.<|im_end|>"
    assert len(r.turns) == 2


def test_template_without_end_of_turn_is_refused(tok) -> None:
    broken = with_template(
        tok,
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}",
    )
    r = render(broken, CONV)
    assert r.trained > 0
    with pytest.raises(GuardError, match="never learn to stop"):
        check_rows(broken, [r], ["row 0"], max_length=512)


def test_template_that_drops_the_answer_is_fully_masked(tok) -> None:
    broken = with_template(
        tok,
        "{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{{ m['role'] }}\n"
        "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    )
    with pytest.raises((GuardError, TemplateError)):
        r = render(broken, CONV)
        check_rows(broken, [r], ["row 0"], max_length=512)


def test_doubled_bos_is_refused(tok) -> None:
    doubled = with_template(tok, "{{ bos_token }}" + tok.chat_template)
    r = render(doubled, CONV)
    with pytest.raises(GuardError, match="BOS"):
        check_rows(doubled, [r], ["row 0"], max_length=512)


def test_prefix_unstable_template_is_refused(tok) -> None:
    unstable = with_template(
        tok,
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% if loop.last %} (last){% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    )
    with pytest.raises(TemplateError, match="prefixes"):
        render(unstable, [*CONV, {"role": "user", "content": "More?"}])


def test_over_length_rows_are_counted_then_truncated_or_dropped(tok) -> None:
    short = render(tok, CONV)
    long = render(tok, [CONV[0], {"role": "assistant", "content": "word " * 200}])
    limit = len(short.input_ids) + 5
    kept, report = check_rows(tok, [short, long], ["a", "b"], limit, "truncate")
    assert report.over_length == 1 and report.truncated == 1 and len(kept) == 2
    assert len(kept[1].input_ids) == limit and kept[1].trained > 0
    kept, report = check_rows(tok, [short, long], ["a", "b"], limit, "drop")
    assert report.over_length == 1 and report.dropped == 1 and len(kept) == 1
    with pytest.raises(GuardError, match="max-length"):
        check_rows(tok, [long], ["b"], 8, "truncate")


def test_preview_marks_the_trained_tokens(tok) -> None:
    text = preview(tok, render(tok, CONV))
    assert "[[Blue is a colour.<|im_end|>]]" in text
    assert "trained" in text.splitlines()[-1]


def test_a_fully_masked_row_is_refused(tok) -> None:
    good = render(tok, CONV)
    masked = copy.deepcopy(good)
    masked.labels = [IGNORE] * len(masked.labels)
    masked.turns = []
    with pytest.raises(GuardError, match=r"no trained token.*row 7"):
        check_rows(tok, [good, masked], ["row 1", "row 7"], max_length=512)


def test_an_answer_cut_by_max_tokens_does_not_teach_stopping(tok) -> None:
    r = render(tok, CONV, finished=False)
    assert trained_text(tok, r) == "Blue is a colour."
    kept, _ = check_rows(tok, [r], ["row 0"], max_length=512)
    assert kept == [r]
