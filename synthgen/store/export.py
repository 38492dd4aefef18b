"""Export the corpus as JSONL or Parquet in the shapes TRL and HF datasets read.

    messages            {"messages": [...input, assistant answer]} + metadata: conversational
                        SFT (TRL's defaults then train every token of the conversation)
    prompt-completion   {"prompt": [...input], "completion": [assistant answer]} + metadata:
                        TRL trains only the completion (its completion_only_loss default)
    preference          {"prompt": [...], "chosen": [answer], "rejected": [answer]}: DPO and
                        the other preference trainers, from the `preference_pairs` table
    distillm2           the same shape, DistiLLM-2's pairs (Ko et al. 2025): per prompt, the
                        teacher's answer chosen and a student's (`synthgen student sample`,
                        distill's rollouts) rejected, paired by sample index

The assistant turn carries `reasoning_content`, `tool_calls` and `refusal` where the
teacher gave them. `records()` is shared with `synthgen.to_dataset`, so a file and a
Dataset hold the same rows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError, StoreError
from . import arrow_batches, connect
from .readonly import read_statements

FORMATS = ("messages", "prompt-completion", "preference", "distillm2")

EXPORT_SQL = """
SELECT request_id, sample_index, messages, response, finish_reason, model, metadata,
       reasoning, tool_calls, refusal
FROM corpus
WHERE (response IS NOT NULL OR tool_calls IS NOT NULL OR refusal IS NOT NULL)
  AND ({plan}) AND ({where})
ORDER BY line, sample_index
"""
# The latest plan: the input (and parameters) of the most recent run that planned one. An
# answer to an edited prompt of an earlier version of the input is not in it.
LATEST_PLAN = """request_id IN (SELECT request_id FROM plan_requests WHERE plan_key =
    (SELECT plan_key FROM runs r WHERE plan_key IN (SELECT plan_key FROM plans)
     ORDER BY run_id DESC LIMIT 1))"""
# One pair per row: the two answers to the same prompt, with their scores. `--where` is a
# condition on these columns (e.g. "chosen_score - rejected_score >= 2").
PAIRS_SQL = """
SELECT * FROM (
    SELECT p.stage, p.chosen_request_id AS request_id, c.messages, c.metadata,
           c.response AS chosen_response, c.reasoning AS chosen_reasoning,
           r.response AS rejected_response, r.reasoning AS rejected_reasoning,
           p.chosen_request_id, p.rejected_request_id, p.chosen_score, p.rejected_score
    FROM preference_pairs p
    JOIN corpus c ON c.request_id = p.chosen_request_id
    JOIN corpus r ON r.request_id = p.rejected_request_id
) WHERE ({where})
ORDER BY stage, request_id, rejected_request_id
"""
# Teacher answer against student answer to the same prompt, from the corpus itself: a
# student's answers carry the model `student:LABEL@HASH`, every other answer is a teacher's.
# `--where` is a condition on these columns (e.g. "rejected_model LIKE 'student:opd/round-3@%'").
DISTILLM2_SQL = """
SELECT * FROM (
    SELECT 'distillm2' AS stage, t.request_id, t.messages, t.metadata,
           t.response AS chosen_response, t.reasoning AS chosen_reasoning,
           s.response AS rejected_response, s.reasoning AS rejected_reasoning,
           t.request_id AS chosen_request_id, s.request_id AS rejected_request_id,
           t.model AS chosen_model, s.model AS rejected_model
    FROM corpus t JOIN corpus s
      ON s.messages::VARCHAR = t.messages::VARCHAR AND s.sample_index = t.sample_index
    WHERE coalesce(t.model, '') NOT LIKE 'student:%' AND s.model LIKE 'student:%'
      AND t.response IS NOT NULL AND s.response IS NOT NULL
) WHERE ({where})
ORDER BY request_id, rejected_request_id
"""
SYSTEM_FIELDS = ("request_id", "sample_index", "finish_reason", "model")
PAIR_FIELDS = ("chosen_request_id", "rejected_request_id", "chosen_score", "rejected_score",
               "chosen_model", "rejected_model")
NEEDS = {"messages": ("messages", "response"), "prompt-completion": ("messages", "response"),
         "preference": ("messages", "chosen_response", "rejected_response"),
         "distillm2": ("messages", "chosen_response", "rejected_response")}


def export(db: str | Path, out: str | Path, where: str | None = None, all_plans: bool = False,
           format: str = "messages") -> int:
    """Write the answers of the latest plan (every plan's with `all_plans`), optionally
    filtered by a SQL `where` over `corpus` (over the pairs for `preference`), to `out`
    (.jsonl or .parquet) in `format`, atomically. Returns the number of rows written."""
    out = Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise ConfigError(f"export: {out}: the file must end in .jsonl or .parquet")
    con = connect(db, read_only=True)
    try:
        reader = _reader(con, export_query(format, where, all_plans))
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".jsonl", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                count = 0
                for record in records(reader, format):
                    fh.write(orjson.dumps(record) + b"\n")
                    count += 1
            if out.suffix == ".jsonl":
                os.replace(tmp, out)
            else:
                _jsonl_to_parquet(Path(tmp), out, count)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return count
    finally:
        con.close()


def export_query(format: str, where: str | None = None, all_plans: bool = False) -> str:
    """The SQL whose rows `format` writes (see the module docstring)."""
    if format not in FORMATS:
        raise ConfigError(f"export: format {format!r}: use one of {', '.join(FORMATS)}")
    if where:  # a condition, not a way to run statements of its own
        read_statements(f"SELECT 1 FROM corpus WHERE ({where})")
    if format == "preference":
        return PAIRS_SQL.format(where=where or "TRUE")
    if format == "distillm2":
        return DISTILLM2_SQL.format(where=where or "TRUE")
    return EXPORT_SQL.format(where=where or "TRUE", plan="TRUE" if all_plans else LATEST_PLAN)


def _reader(con: Any, query: str) -> Any:
    try:
        return arrow_batches(con, query)
    except Exception as exc:
        first = str(exc).splitlines()[0]
        if "preference_pairs" in query and "preference_pairs" in first:
            raise StoreError("export --format preference: the store has no preference pairs; "
                             "make them with `synthgen run preferences`") from None
        raise StoreError(f"export: the query failed: {first}") from None


def records(reader: Any, format: str) -> Iterator[dict[str, Any]]:
    """One record per row of `reader` (Arrow batches of the query's rows) in `format`.

    The rows need `NEEDS[format]`; the other corpus columns (reasoning, tool_calls,
    refusal, metadata, request_id, ...) are used where present."""
    checked = False
    for batch in reader:
        if not checked:
            missing = [c for c in NEEDS[format] if c not in batch.schema.names]
            if missing:
                raise ConfigError(f"{format}: the query must return the columns "
                                  f"{', '.join(NEEDS[format])} (missing: {', '.join(missing)})")
            checked = True
        for row in batch.to_pylist():
            yield _record(row, format)


def _record(row: dict[str, Any], format: str) -> dict[str, Any]:
    prompt = _json(row["messages"])
    if format in ("preference", "distillm2"):
        record: dict[str, Any] = {
            "prompt": prompt,
            "chosen": [_assistant(row["chosen_response"], row.get("chosen_reasoning"))],
            "rejected": [_assistant(row["rejected_response"], row.get("rejected_reasoning"))],
        }
        fields: tuple[str, ...] = PAIR_FIELDS
    else:
        turn = _assistant(row["response"], row.get("reasoning"), row.get("tool_calls"), row.get("refusal"))
        record = ({"messages": [*prompt, turn]} if format == "messages"
                  else {"prompt": prompt, "completion": [turn]})
        fields = SYSTEM_FIELDS
    if row.get("metadata"):
        for key, value in _json(row["metadata"]).items():
            record.setdefault(key, value)
    for key in fields:
        if key in row:
            record.setdefault(key, row[key])
    return record


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _assistant(content: str | None, reasoning: str | None = None, tool_calls: Any = None,
               refusal: str | None = None) -> dict[str, Any]:
    """The teacher's turn as chat templates read it: reasoning as `reasoning_content`, tool
    calls and refusals in their OpenAI fields."""
    turn: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        turn["reasoning_content"] = reasoning
    if tool_calls:
        turn["tool_calls"] = _json(tool_calls)
    if refusal:
        turn["refusal"] = refusal
    return turn


def _jsonl_to_parquet(tmp: Path, out: Path, count: int) -> None:
    """Let DuckDB infer one schema over all rows (metadata keys may vary by row)."""
    import duckdb

    part = out.with_name(f".{out.name}.part")
    mem = duckdb.connect()
    try:
        if count:
            mem.execute(
                f"COPY (SELECT * FROM read_json('{_q(tmp)}', format='newline_delimited', "
                f"sample_size=-1)) TO '{_q(part)}' (FORMAT parquet)"
            )
        else:
            mem.execute(
                f"COPY (SELECT NULL::STRUCT(role VARCHAR, content VARCHAR)[] AS messages LIMIT 0) "
                f"TO '{_q(part)}' (FORMAT parquet)"
            )
        os.replace(part, out)
    finally:
        mem.close()
        if part.exists():
            part.unlink()


def _q(path: Path) -> str:
    return str(path).replace("'", "''")
