"""Teacher scores in the store: which answers still need scoring, and the writer thread that
commits what the engine receives.

A scoring request is named by `score_id(request_id, teacher, k)`: the same answer, the same
teacher and the same K always make the same id, so `scores` (PRIMARY KEY score_id) holds
each result once, a rerun sends only what is not stored yet (`pending_answers`, one
anti-join), and a result that arrives twice (a retried request, a second process) is
dropped by `ON CONFLICT DO NOTHING`. The id is an MD5 hex computed identically here and in
DuckDB, so "what is pending" is a query, not a set built in Python.

The writer is the generation writer's (store/writer.py) for another table, on the same
batching thread (store/batches.py): the engine hands it outcomes from any thread, the
thread commits them every `flush_interval`, and a kill loses at most the requests in
flight, which the next run sends again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from ..errors import ConfigError, StoreWriteError, first_line
from ..types import Answer, Failure
from .batches import BatchThread
from .columns import LOGPROBS_TYPE
from .commit import warm_arrow

MAX_BATCH = 2_000


def score_id(request_id: str, teacher: str, k: int) -> str:
    """The id of scoring answer `request_id` by `teacher` with top-`k` alternatives."""
    return hashlib.md5(f"{request_id}\x00{teacher}\x00{k}".encode()).hexdigest()


# The same id in SQL: md5 of the same bytes (VARCHAR concatenation, NUL separators).
_SQL_ID = "md5(c.request_id || chr(0) || $teacher || chr(0) || CAST($k AS VARCHAR))"


def _selection(where: str | None) -> str:
    return f"FROM corpus c WHERE ({where})" if where and where.strip() else "FROM corpus c WHERE true"


def check_where(con: Any, where: str | None) -> int:
    """How many stored answers `where` selects; a clear error when it does not run."""
    try:
        [(n,)] = con.execute(f"SELECT count(*) {_selection(where)}").fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"--where {where!r}: the condition on corpus does not run ({first})") from None
    return int(n)


def counts(con: Any, where: str | None, teacher: str, k: int) -> dict[str, int]:
    """Of the answers `where` selects: scored by this teacher at this K, failed, without text."""
    [(selected, scored, failed, no_text)] = con.execute(
        f"""
        SELECT count(*),
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM scores s WHERE s.score_id = {_SQL_ID})),
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM score_failures f
                                              WHERE f.score_id = {_SQL_ID})
                                  AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.score_id = {_SQL_ID})),
               count(*) FILTER (WHERE c.response IS NULL)
        {_selection(where)}
        """, {"teacher": teacher, "k": k}).fetchall()
    return {"selected": selected, "scored": scored, "failed": failed, "no_text": no_text}


@dataclass
class AnswerRow:
    """One stored answer to score: its prompt, its text, and its tokens if the store has them."""

    request_id: str
    messages: str
    response: str
    finish_reason: str | None
    logprobs: list[dict[str, Any]] | None


def pending_answers(con: Any, where: str | None, teacher: str, k: int, retry_failed: bool,
                    rows: int = 256) -> Iterator[list[AnswerRow]]:
    """The selected answers not scored yet by (teacher, k), in request_id order, in lists.
    Of their stored logprobs only each token's id and text are read (what is sent, and
    what the tokenizer check reads), not the alternatives: a top-20 corpus is 20x that."""
    cur = con.cursor()
    try:
        cur.execute(
            f"""
            SELECT c.request_id, c.messages::VARCHAR, c.response, c.finish_reason,
                   [{{'token': e.token, 'id': e.id}} FOR e IN c.logprobs]
            {_selection(where)} AND c.response IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.score_id = {_SQL_ID})
              AND ($retry OR NOT EXISTS (SELECT 1 FROM score_failures f WHERE f.score_id = {_SQL_ID}))
            ORDER BY c.request_id
            """, {"teacher": teacher, "k": k, "retry": retry_failed})
        while batch := cur.fetchmany(rows):
            yield [AnswerRow(*r) for r in batch]
    finally:
        cur.close()


@dataclass
class ScoreMeta:
    """What a scoring request is about; the writer reads it when the outcome arrives."""

    request_id: str
    teacher: str
    k: int
    prompt_tokens: int
    logprobs_mode: str = "raw"
    logprobs_temperature: float = 1.0


INSERT_SCORES = """
INSERT INTO scores (score_id, request_id, teacher, k, prompt_tokens, tokens, nll, logprobs_mode,
                    logprobs_temperature, endpoint, latency_ms, attempts, created_at, logprobs)
SELECT score_id, request_id, teacher, k, prompt_tokens, tokens, nll, logprobs_mode,
       logprobs_temperature, endpoint, latency_ms, attempts, now(), logprobs
FROM _scores ON CONFLICT DO NOTHING
"""

INSERT_FAILURES = """
INSERT OR REPLACE INTO score_failures
    (score_id, request_id, teacher, k, error_type, status_code, message, attempts, created_at)
SELECT unnest($ids), unnest($rids), unnest($teachers), unnest($ks), unnest($types),
       unnest($codes), unnest($messages), unnest($attempts), now()
"""


def commit_scores(con: Any, scores: list[tuple[str, ScoreMeta, Answer, float, int]],
                  failures: list[tuple[ScoreMeta, Failure]]) -> None:
    """One transaction: scores (score_id, meta, answer, latency_ms, attempts) and failures.
    A score already stored is kept; a success removes the same id's earlier failure."""
    if scores:
        con.register("_scores", _scores_arrow(scores))
    con.execute("BEGIN")
    try:
        if scores:
            con.execute(INSERT_SCORES)
            con.execute("DELETE FROM score_failures WHERE score_id IN (SELECT unnest($1))",
                        [[s[0] for s in scores]])
        if failures:
            con.execute(INSERT_FAILURES, {
                "ids": [f.request_id for _, f in failures], "rids": [m.request_id for m, _ in failures],
                "teachers": [m.teacher for m, _ in failures], "ks": [m.k for m, _ in failures],
                "types": [f.error_type for _, f in failures], "codes": [f.status_code for _, f in failures],
                "messages": [f.message for _, f in failures], "attempts": [f.attempts for _, f in failures]})
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    finally:
        if scores:
            con.unregister("_scores")


def _scores_arrow(rows: list[tuple[str, ScoreMeta, Answer, float, int]]) -> Any:
    import pyarrow as pa

    top = pa.struct([("token", pa.string()), ("id", pa.int32()), ("logprob", pa.float64())])
    entry = pa.struct([("token", pa.string()), ("id", pa.int32()), ("logprob", pa.float64()),
                       ("top_logprobs", pa.list_(top))])
    lps = [r[2].logprobs or [] for r in rows]
    return pa.table({
        "score_id": pa.array([r[0] for r in rows], pa.string()),
        "request_id": pa.array([r[1].request_id for r in rows], pa.string()),
        "teacher": pa.array([r[1].teacher for r in rows], pa.string()),
        "k": pa.array([r[1].k for r in rows], pa.int32()),
        "prompt_tokens": pa.array([r[1].prompt_tokens for r in rows], pa.int32()),
        "tokens": pa.array([len(x) for x in lps], pa.int32()),
        "nll": pa.array([_nll(x) for x in lps], pa.float64()),
        "logprobs_mode": pa.array([r[1].logprobs_mode for r in rows], pa.string()),
        "logprobs_temperature": pa.array([r[1].logprobs_temperature for r in rows], pa.float64()),
        "endpoint": pa.array([r[2].endpoint for r in rows], pa.string()),
        "latency_ms": pa.array([r[3] for r in rows], pa.float64()),
        "attempts": pa.array([r[4] for r in rows], pa.int32()),
        "logprobs": pa.array(lps, pa.list_(entry)),
    })


def _nll(entries: list[dict[str, Any]]) -> float | None:
    """Mean negative log-probability of the answer's own tokens (None: no token)."""
    values = [e["logprob"] for e in entries if e.get("logprob") is not None]
    return -sum(values) / len(values) if values else None


class ScoreWriter:
    """The engine's sink for scoring: `put_answer`/`put_failure` from any thread, batched
    commits on a thread of its own (store/batches.py), `close()` commits the rest. `jobs`
    maps each score_id in flight to its ScoreMeta (filled by whoever feeds the engine)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, jobs: dict[str, ScoreMeta],
                 flush_interval: float = 0.1):
        self._con = con
        self._jobs = jobs
        self._thread = BatchThread(self._commit, "synthgen-score-writer", flush_interval, MAX_BATCH)
        self.committed = 0
        self.committed_failures = 0
        self.committed_tokens = 0  # answer tokens in the scores committed

    @property
    def error(self) -> BaseException | None:
        """Why commits stopped (None while they go on): the engine stops when it sees one."""
        return self._thread.error

    def start(self) -> ScoreWriter:
        warm_arrow()  # every score is written through Arrow: ready before the first answer
        self._thread.start()
        return self

    def put_answer(self, request_id: str, sample_index: int, answer: Answer, latency_ms: float,
                   attempts: int) -> None:
        self._thread.put((request_id, self._jobs.pop(request_id), answer, latency_ms, attempts))

    def put_failure(self, failure: Failure) -> None:
        self._thread.put((self._jobs.pop(failure.request_id), failure))

    def close(self) -> None:
        """Commit everything queued, stop the thread. After a failed commit, raise
        StoreWriteError saying how many scores arrived and were not stored (there is no
        recovery file for scores: the next run asks the teacher for those again)."""
        self._thread.close()
        if self.error is not None:
            raise StoreWriteError(first_line(self.error), committed=self.committed,
                                  unsaved=len(self._thread.unsaved),
                                  why=" (scores have no recovery file: the next run asks the teacher "
                                      "for them again)") from self.error

    def _commit(self, batch: list[tuple]) -> None:
        scores = [item for item in batch if len(item) != 2]
        failures = [item for item in batch if len(item) == 2]
        commit_scores(self._con, scores, failures)
        self.committed += len(scores)
        self.committed_tokens += sum(len(s[2].logprobs or []) for s in scores)
        self.committed_failures += len(failures)


def token_totals(con: Any, teacher: str | None = None, where: str | None = None) -> dict[str, int]:
    """Scored answers and tokens (answer tokens scored, and prompt tokens read beside them)."""
    cond = " AND ".join(x for x in ("true", "teacher = $teacher" if teacher else "",
                                    f"({where})" if where else "") if x)
    [(n, tokens, prompt)] = con.execute(
        f"SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(prompt_tokens), 0) FROM scored "
        f"WHERE {cond}", {"teacher": teacher} if teacher else {}).fetchall()
    return {"answers": n, "tokens": int(tokens), "prompt_tokens": int(prompt)}


def quoted(text: str) -> str:
    """`text` as a SQL string literal (the distill loop writes conditions on names)."""
    return "'" + text.replace("'", "''") + "'"


def scored_rollouts(con: Any, teacher: str, k: int, model: str) -> list[tuple[str, str, str, list]]:
    """(request_id, messages, finish_reason, teacher logprobs) of every answer the model
    `model` wrote that `teacher` scored at `k`, in request_id order (a training order that
    does not depend on when each answer was stored)."""
    return con.execute(
        """
        SELECT s.request_id, s.messages::VARCHAR, s.finish_reason, s.logprobs FROM scored s
        WHERE s.teacher = $teacher AND s.k = $k
          AND s.request_id IN (SELECT request_id FROM requests WHERE model = $model)
        ORDER BY s.request_id
        """, {"teacher": teacher, "k": k, "model": model}).fetchall()


def rollout_counts(con: Any, model: str) -> dict[str, int]:
    """Answers the model `model` wrote, and their tokens."""
    [(n, tokens)] = con.execute(
        "SELECT count(*), coalesce(sum(r.completion_tokens), 0) FROM responses r "
        "JOIN requests q USING (request_id) WHERE q.model = ?", [model]).fetchall()
    return {"answers": n, "tokens": int(tokens)}


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Teacher scores of stored answers (`synthgen score`, on-policy distillation): for an
    answer of any source, the teacher's log-probability of each of its tokens and the
    teacher's top-K alternatives there, in the layout generation stores (LOGPROBS_TYPE).

    `score_id` is a hash of (answer's request_id, teacher, K): asking again for the same
    scores finds them stored, so a scoring run resumes and nothing is paid twice. The
    answer itself is never copied: `scored` joins the scores to corpus."""
    con.execute(
        f"""
        CREATE TABLE scores (
            score_id VARCHAR PRIMARY KEY,
            request_id VARCHAR,
            teacher VARCHAR,
            k INTEGER,
            prompt_tokens INTEGER,
            tokens INTEGER,
            nll DOUBLE,
            logprobs_mode VARCHAR,
            logprobs_temperature DOUBLE,
            endpoint VARCHAR,
            latency_ms DOUBLE,
            attempts INTEGER,
            created_at TIMESTAMPTZ,
            logprobs {LOGPROBS_TYPE}
        );
        CREATE TABLE score_failures (
            score_id VARCHAR PRIMARY KEY,
            request_id VARCHAR,
            teacher VARCHAR,
            k INTEGER,
            error_type VARCHAR,
            status_code INTEGER,
            message VARCHAR,
            attempts INTEGER,
            created_at TIMESTAMPTZ
        );
        CREATE VIEW scored AS
        SELECT s.score_id, c.request_id, c.messages, c.response, c.finish_reason,
               c.model AS answer_model, c.metadata, c.params, s.teacher, s.k, s.prompt_tokens,
               s.tokens, s.nll, s.logprobs, s.logprobs_mode, s.logprobs_temperature,
               s.endpoint, s.created_at
        FROM scores s JOIN corpus c USING (request_id);
        """
    )
