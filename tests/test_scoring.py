"""Teacher scoring (`synthgen score`) on the CPU, with tiny random models for teacher and
student: the scorer's alignment on a hand-built case, each score stored once, the
tokenizer checks, and the refusals that name what to do instead. The same request
against a real vLLM is the `vllm` tier's (test_vllm_score.py)."""

from __future__ import annotations

import duckdb
import orjson
import pytest
import torch
from conftest import synthgen
from tiny_models import other_tokenizer, pair, store_answers

from synthgen.backends.scoring import parse_scores
from synthgen.errors import ScoringError
from synthgen.scoring import score
from synthgen.scoring.tokens import chat_ids, same_tokenizer

pytestmark = pytest.mark.train

PROMPT = [{"role": "user", "content": "What is 7 + 5?"}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return pair(tmp_path_factory.mktemp("tiny"))


def _teacher(teacher_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(teacher_dir)).float().eval(),
            AutoTokenizer.from_pretrained(str(teacher_dir)))


def _scores(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT request_id, teacher, k, prompt_tokens, tokens, nll, logprobs "
                           "FROM scores ORDER BY request_id").fetchall()
    finally:
        con.close()


def test_the_scorer_scores_the_answer_span_exactly_at_its_own_ids(models, tmp_path) -> None:
    teacher_dir, _ = models
    model, tok = _teacher(teacher_dir)
    answer = [17, 250, 3, 99, tok.eos_token_id]  # hand-picked ids, a non-canonical split included
    entries = [{"token": tok.decode([i]), "id": i, "logprob": -1.0, "top_logprobs": []} for i in answer]
    db = tmp_path / "c.duckdb"
    [rid] = store_answers(db, [{"messages": PROMPT, "text": tok.decode(answer[:-1]), "logprobs": entries}])

    summary = score(db=str(db), teacher="local", teacher_model=str(teacher_dir), k=5)
    assert (summary.scored, summary.pending, summary.tokens) == (1, 0, len(answer))

    [(scored_id, teacher, k, prompt_tokens, tokens, nll, logprobs)] = _scores(db)
    prompt = chat_ids(tok, PROMPT)
    assert (scored_id, k, prompt_tokens, tokens) == (rid, 5, len(prompt), len(answer))
    assert teacher == f"transformers:{teacher_dir.resolve()}"
    # the direct computation: position p's logits predict token p + 1
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
    logp = torch.log_softmax(logits, -1)
    assert [e["id"] for e in logprobs] == answer  # the answer's own ids, and only the answer's
    for j, entry in enumerate(logprobs):
        at = len(prompt) + j - 1
        assert entry["logprob"] == pytest.approx(float(logp[at, answer[j]]), abs=1e-5)
        top = logp[at].topk(5)
        assert [a["id"] for a in entry["top_logprobs"]] == top.indices.tolist()
        assert [a["logprob"] for a in entry["top_logprobs"]] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert entry["token"] == tok.decode([answer[j]])
    assert nll == pytest.approx(-sum(e["logprob"] for e in logprobs) / len(answer))


def test_each_score_is_stored_once_and_a_rerun_sends_nothing(models, tmp_path) -> None:
    teacher_dir, _ = models
    db = tmp_path / "c.duckdb"
    store_answers(db, [{"messages": PROMPT, "text": f"It is {n}.", "finish_reason": "stop"} for n in range(6)]
                  + [{"messages": PROMPT, "text": "It is", "finish_reason": "length"}])
    first = score(db=str(db), teacher="local", teacher_model=str(teacher_dir), k=3)
    assert (first.scored, first.pending) == (7, 0)
    again = score(db=str(db), teacher="local", teacher_model=str(teacher_dir), k=3)
    assert (again.status, again.scored, again.already_scored) == ("nothing_to_do", 0, 7)
    other_k = score(db=str(db), teacher="local", teacher_model=str(teacher_dir), k=4,
                    where="response LIKE '%1.'")
    assert (other_k.selected, other_k.scored) == (1, 1)  # another K is another request
    rows = _scores(db)
    assert len(rows) == 8 and len({(r[0], r[2]) for r in rows}) == 8
    # an answer stored as text is tokenized, and one that stopped ends with its end-of-turn
    _, tok = _teacher(teacher_dir)
    by_text = {r[0]: r for r in rows if r[2] == 3}
    con = duckdb.connect(str(db), read_only=True)
    texts = dict(con.execute("SELECT request_id, response FROM corpus").fetchall())
    reasons = dict(con.execute("SELECT request_id, finish_reason FROM corpus").fetchall())
    con.close()
    for rid, row in by_text.items():
        ids = tok(texts[rid], add_special_tokens=False)["input_ids"]
        want = [*ids, tok.eos_token_id] if reasons[rid] == "stop" else ids
        assert [e["id"] for e in row[6]] == want


def test_a_mismatched_tokenizer_is_refused(models, tmp_path) -> None:
    teacher_dir, _ = models
    _, tok = _teacher(teacher_dir)
    other = other_tokenizer(tmp_path / "other")
    with pytest.raises(ScoringError, match="does not share the student's tokenizer"):
        same_tokenizer(other, tok)
    same_tokenizer(tok, tok)  # the same one passes
    # answers whose stored ids are another vocabulary's are refused before anything is sent
    ids = other("Name three colours: red, green, blue.", add_special_tokens=False)["input_ids"]
    entries = [{"token": other.decode([i]), "id": i, "logprob": -1.0, "top_logprobs": []} for i in ids]
    db = tmp_path / "c.duckdb"
    store_answers(db, [{"messages": PROMPT, "text": other.decode(ids), "logprobs": entries}])
    result = synthgen("score", "--db", db, "--teacher", "local", "--teacher-model", teacher_dir)
    assert result.returncode == 2, result.stderr
    assert "not the tokenizer" in result.stderr and "Traceback" not in result.stderr
    assert _scores(db) == []


def test_a_hosted_api_that_cannot_score_is_refused_naming_the_alternatives(tmp_path) -> None:
    store_answers(tmp_path / "c.duckdb", [{"messages": PROMPT, "text": "12"}])
    for url in ("https://api.openai.com/v1", "https://api.anthropic.com/v1/"):
        result = synthgen("score", "--db", tmp_path / "c.duckdb", "--teacher", url)
        assert result.returncode == 2, result.stderr
        err = result.stderr
        assert "cannot score" in err and "off-policy" in err and "--logprobs 20" in err, err
        assert "vLLM" in err and "--teacher local" in err and "Traceback" not in err


def test_bad_input_gets_a_clear_error_naming_where(models, tmp_path) -> None:
    teacher_dir, _ = models
    db = tmp_path / "c.duckdb"
    store_answers(db, [{"messages": PROMPT, "text": "12"}])
    result = synthgen("score", "--db", db, "--teacher", "local", "--teacher-model", teacher_dir,
                      "--where", "no_such_column = 1")
    assert result.returncode == 2 and "--where" in result.stderr and "no_such_column" in result.stderr
    assert "Traceback" not in result.stderr
    result = synthgen("score", "--db", db, "--teacher", "ftp://x")
    assert result.returncode == 2 and "--teacher 'ftp://x'" in result.stderr
    result = synthgen("score", "--db", tmp_path / "none.duckdb", "--teacher", "local",
                      "--where", "true; DROP TABLE x")
    assert result.returncode == 2 and "without ';'" in result.stderr


def test_a_served_teachers_answer_span_is_read_from_either_form() -> None:
    """vLLM's prompt_logprobs (ranked alternatives, the token added beside them when it is
    not among them) and the legacy echo form (token_id:N or text), for prompt [5, 6] and
    answer [7, 8]: only the answer's two positions come back."""
    positions = [None, {"6": {"logprob": -0.5, "rank": 1, "decoded_token": "b"}},
                 {"7": {"logprob": -0.1, "rank": 1, "decoded_token": "c"},
                  "9": {"logprob": -2.5, "rank": 2, "decoded_token": "x"}},
                 {"3": {"logprob": -0.2, "rank": 1, "decoded_token": "y"},
                  "4": {"logprob": -1.9, "rank": 2, "decoded_token": "z"},
                  "8": {"logprob": -4.0, "rank": 7, "decoded_token": "d"}}]
    raw = orjson.dumps({"choices": [{"prompt_logprobs": positions, "text": "!"}]})
    got = parse_scores(raw, "prompt_logprobs", 2, [7, 8], 2)
    assert [(e["id"], e["token"], e["logprob"]) for e in got] == [(7, "c", -0.1), (8, "d", -4.0)]
    assert [[a["id"] for a in e["top_logprobs"]] for e in got] == [[7, 9], [3, 4]]
    echo = {"tokens": ["token_id:5", "token_id:6", "token_id:7", "token_id:8", "token_id:1"],
            "token_logprobs": [None, -0.5, -0.1, -4.0, -0.3],
            "top_logprobs": [None, {"token_id:6": -0.5}, {"token_id:7": -0.1, "token_id:9": -2.5},
                             {"token_id:3": -0.2, "token_id:4": -1.9, "token_id:8": -4.0}, {}]}
    got = parse_scores(orjson.dumps({"choices": [{"logprobs": echo}]}), "echo", 2, [7, 8], 2)
    assert [(e["id"], e["logprob"]) for e in got] == [(7, -0.1), (8, -4.0)]
    assert [[a["id"] for a in e["top_logprobs"]] for e in got] == [[7, 9], [3, 4]]
