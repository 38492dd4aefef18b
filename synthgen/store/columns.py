"""The typed logprobs column, one layout for the teacher's answers (`responses.logprobs`)
and for its scores of any answer (`scores.logprobs`), so KD reads both the same way."""

# One entry per token: the chosen token, and the teacher's top-K alternatives there. `id`
# is the teacher's token id where the server reports it (llama.cpp does), else NULL.
LOGPROBS_TYPE = (
    "STRUCT(token VARCHAR, id INTEGER, logprob DOUBLE, "
    "top_logprobs STRUCT(token VARCHAR, id INTEGER, logprob DOUBLE)[])[]"
)
