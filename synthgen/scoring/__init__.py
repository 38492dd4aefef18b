"""Teacher scoring: the teacher's log-probabilities of stored answers, token by token.

On-policy distillation needs the teacher's judgement of the student's own tokens: the
student writes, the teacher scores, and the scores are stored once beside the answer.

    tokens.py   the ids sent (the prompt's rendering, each answer's own stored ids) and
                the checks that teacher and answers share a tokenizer
    local.py    the teacher's weights in-process (transformers): the CPU path
    score.py    `score()`: stored answers -> the engine -> the `scores` table

The HTTP forms a served teacher answers (vLLM's prompt_logprobs, echo) live with the other
transports, in backends/scoring.py; what is stored, in store/scores.py.
"""

from __future__ import annotations

from .score import LOCAL, ScoreConfig, ScoreSummary, score

__all__ = ["LOCAL", "ScoreConfig", "ScoreSummary", "score"]
