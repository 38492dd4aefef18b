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
teacher gave them. Many students' chat templates (SmolLM2's ChatML, Llama's) drop
`reasoning_content` when TRL renders the row, so the student would never see the trace:
`think_in_content` writes it into the content instead, in the form the student is to
learn (`<think>\n{reasoning}\n</think>\n\n{content}`, R1's, by default), and `tokenizer`
checks a template: what it would drop comes back in `Exported.warnings`.

Which rows are written is store/selection.py's (after a recipe, its
last stage's kept rows). `export_query()` and `records()` are shared with `synthgen.to_dataset`,
so a file and a Dataset hold the same rows.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson

from ..errors import ConfigError, StoreError, SynthgenError
from . import arrow_batches, connect, selection
from .parts import as_parts, has_parts
from .readonly import read_statements

FORMATS = ("messages", "prompt-completion", "preference", "distillm2")
THINK_IN_CONTENT = "<think>\n{reasoning}\n</think>\n\n{content}"  # as `train --with-reasoning` renders it
_FIELD = re.compile(r"\{(reasoning|content)\}")

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
) WHERE ({where}
) AND ({stage})
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


class EmptyExport(SynthgenError):
    """Nothing matched: the message says which condition left no row (exit 1, no file)."""

    exit_code = 1


@dataclass
class Exported:
    """What an export wrote, and what it left out on purpose."""

    rows: int
    what: str  # which rows, in words (selection.py)
    truncated: int = 0  # cut by max_tokens and left out (unless include_truncated)
    removed: int = 0  # rows of the stage its keep removed, left out (unless include_removed)
    warnings: list[str] = field(default_factory=list)  # a template that would lose the reasoning


@dataclass
class Query:
    """The SQL whose rows a format writes, the extra columns each record carries, and what
    to say when it has none."""

    sql: str
    extra: list[str] = field(default_factory=list)
    what: str = ""
    counts: selection.Counts | None = None
    empty: str = ""


def export(db: str | Path, out: str | Path, where: str | None = None, all_plans: bool = False,
           format: str = "messages", *, stage: str | None = None, include_truncated: bool = False,
           include_removed: bool = False, allow_empty: bool = False,
           think_in_content: str | None = None) -> int:
    """Write the rows `export` means (store/selection.py: after a recipe its last stage's
    kept rows, `stage`'s with `stage`, else the latest plan's answers, every answer with
    `all_plans`), filtered by a SQL `where` over them (over the pairs for `preference`), to
    `out` (.jsonl or .parquet) in `format`, atomically. Answers cut by max_tokens are left
    out unless `include_truncated`. Returns the number of rows written; raises
    EmptyExport, saying why and writing nothing, when there are none (unless `allow_empty`).
    `think_in_content`: the reasoning written into the assistant's content in this form
    (`THINK_IN_CONTENT`, with `{reasoning}` and `{content}`) instead of `reasoning_content`."""
    return write(db, out, where, all_plans, format, stage=stage, include_truncated=include_truncated,
                 include_removed=include_removed, allow_empty=allow_empty,
                 think_in_content=think_in_content).rows


def write(db: str | Path, out: str | Path, where: str | None = None, all_plans: bool = False,
          format: str = "messages", *, stage: str | None = None, include_truncated: bool = False,
          include_removed: bool = False, allow_empty: bool = False, think_in_content: str | None = None,
          tokenizer: str | None = None) -> Exported:
    """`export`, returning what was written and what was left out (what the CLI says);
    with `tokenizer` (see student/template_check.py), warnings where its chat template
    would drop the reasoning written."""
    out = Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise ConfigError(f"export: {out}: the file must end in .jsonl or .parquet")
    check_think_form(think_in_content)
    warnings = []
    if tokenizer is not None:
        from ..student.template_check import reasoning_warning

        warnings = [w for w in [reasoning_warning(tokenizer, think_in_content)] if w]
    con = connect(db, read_only=True)
    try:
        query = export_query(con, format, where, all_plans, stage, include_truncated, include_removed)
        if query.empty and not allow_empty:
            raise EmptyExport(f"export: nothing written to {out}: {query.empty}")
        parted = bool(query.sql) and has_parts(con, query.sql)  # images beside text: parts.py
        reader = _reader(con, query.sql)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_file(out.parent)
        try:
            with open(tmp, "wb") as fh:
                count = 0
                for record in records(reader, format, query.extra, think_in_content, parted):
                    fh.write(orjson.dumps(record, default=str) + b"\n")
                    count += 1
            if out.suffix == ".jsonl":
                os.replace(tmp, out)
            else:
                _jsonl_to_parquet(tmp, out, count)
        finally:
            if tmp.exists():
                tmp.unlink()
    finally:
        con.close()
    counts = query.counts
    return Exported(count, query.what,
                    truncated=counts.truncated if counts and not include_truncated else 0,
                    removed=counts.rows - counts.kept if counts and not include_removed else 0,
                    warnings=warnings)


def export_query(con: Any, format: str, where: str | None = None, all_plans: bool = False,
                 stage: str | None = None, include_truncated: bool = False,
                 include_removed: bool = False) -> Query:
    """What `format` writes from this store, and why it would be nothing (`Query.empty`)."""
    if format not in FORMATS:
        raise ConfigError(f"export: format {format!r}: use one of {', '.join(FORMATS)}")
    if where:  # a condition, not a way to run statements of its own
        read_statements(f"SELECT 1 FROM corpus WHERE ({where}\n)")
    if format == "preference":
        if all_plans:
            raise ConfigError("export --format preference writes the pairs of every stage; "
                              "--all-plans means nothing there (--stage NAME picks one stage's)")
        return _pairs(con, where, stage)
    if format == "distillm2":
        return _distillm2(con, where)
    chosen = selection.choose(con, stage, all_plans, include_removed)
    try:
        counts = selection.count(con, chosen, where, include_truncated, include_removed)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        if not where:
            raise StoreError(f"export: the query failed: {first}") from None
        cols = [d[0] for d in con.execute(f"SELECT * FROM ({chosen.sql}) AS x LIMIT 0").description]
        raise ConfigError(f"export: --where {where!r}: {first} (the rows have the columns: "
                          f"{', '.join(c for c in cols if c != 'logprobs')})") from None
    extra = chosen.extra + (list(selection.DECISION) if include_removed else [])
    return Query(selection.filtered(chosen, where, include_truncated, include_removed), extra, chosen.what,
                 counts, "" if counts.written else selection.why_empty(chosen, counts, where))


def _pairs(con: Any, where: str | None, stage: str | None) -> Query:
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    made = "synthgen run preferences makes them (a judge stage with the preference-pairs filter)"
    if "preference_pairs" not in tables:
        return Query("", empty=f"the store has no preference pairs; {made}")
    on_stage = "TRUE" if stage is None else "stage = '" + stage.replace("'", "''") + "'"
    sql = PAIRS_SQL.format(where=where or "TRUE", stage=on_stage)
    [(total,)] = con.execute(f"SELECT count(*) FROM preference_pairs WHERE {on_stage}").fetchall()
    what = f"the preference pairs of stage {stage}" if stage else "the preference pairs of every stage"
    if not total:
        of = f" of stage {stage}" if stage else ""
        return Query(sql, what=what, empty=f"the store has no preference pairs{of}; {made}")
    [(matched,)] = _run(lambda: con.execute(f"SELECT count(*) FROM ({sql}) AS x").fetchall())
    empty = "" if matched else f"--where {where!r} matched none of the {total:,} preference pairs"
    return Query(sql, what=what, empty=empty)


def _distillm2(con: Any, where: str | None) -> Query:
    """Teacher answer against student answer to the same prompt (DISTILLM2_SQL)."""
    sql = DISTILLM2_SQL.format(where=where or "TRUE")
    what = "teacher/student pairs (the teacher's answer chosen, a student's rejected)"
    [(students,)] = con.execute("SELECT count(*) FROM corpus WHERE model LIKE 'student:%'").fetchall()
    if not students:
        return Query(sql, what=what, empty="the store has no student answers to pair; `synthgen student "
                                           "sample` or `synthgen distill` writes them")
    [(matched,)] = _run(lambda: con.execute(f"SELECT count(*) FROM ({sql}) AS x").fetchall())
    if matched:
        return Query(sql, what=what)
    why = (f"--where {where!r} matched none of the pairs" if where else
           f"none of the {students:,} student answers has a teacher answer to the same prompt")
    return Query(sql, what=what, empty=why)


def _run(query: Any) -> Any:
    """A query built from the user's --where: a failure is one line naming it."""
    try:
        return query()
    except duckdb.Error as exc:
        raise StoreError(f"export: the query failed: {str(exc).strip().splitlines()[0]}") from None


def _reader(con: Any, query: str) -> Any:
    try:
        return arrow_batches(con, query)
    except Exception as exc:
        first = str(exc).splitlines()[0]
        raise StoreError(f"export: the query failed: {first}") from None


def _new_file(folder: Path) -> Path:
    """A new file beside the output, created with the mode any file gets here (0666 less
    the umask, as the Parquet writer's): mkstemp's 0600 would make a .jsonl export
    unreadable to the group that can read a .parquet one."""
    while True:
        path = folder / f".export-{secrets.token_hex(6)}.jsonl"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue


def check_think_form(form: str | None) -> None:
    """A think-in-content form must place both the reasoning and the answer."""
    if form is not None and ("{reasoning}" not in form or "{content}" not in form):
        raise ConfigError(f"think-in-content {form!r}: the form must hold {{reasoning}} and {{content}}, "
                          f"e.g. {THINK_IN_CONTENT!r}")


def records(reader: Any, format: str, extra: list[str] | None = None,
            think_in_content: str | None = None, parted: bool = False) -> Iterator[dict[str, Any]]:
    """One record per row of `reader` (Arrow batches of the query's rows) in `format`.

    The rows need `NEEDS[format]`; the other corpus columns (reasoning, tool_calls,
    refusal, metadata, request_id, ...) are used where present, and each of `extra` (a
    stage's own columns: a judge's score) becomes a field of the record. With
    `think_in_content` (a form, see `export`) the reasoning is written into the content;
    with `parted` every content is a list of parts (a store with images: parts.py)."""
    checked = False
    for batch in reader:
        if not checked:
            missing = [c for c in NEEDS[format] if c not in batch.schema.names]
            if missing:
                raise ConfigError(f"{format}: the query must return the columns "
                                  f"{', '.join(NEEDS[format])} (missing: {', '.join(missing)})")
            checked = True
        for row in batch.to_pylist():
            record = _record(row, format, extra or (), think_in_content)
            yield as_parts(record) if parted else record


def _record(row: dict[str, Any], format: str, extra: Iterable[str] = (),
            think: str | None = None) -> dict[str, Any]:
    prompt = _json(row["messages"])
    if format in ("preference", "distillm2"):
        record: dict[str, Any] = {
            "prompt": prompt,
            "chosen": [_assistant(row["chosen_response"], row.get("chosen_reasoning"), think=think)],
            "rejected": [_assistant(row["rejected_response"], row.get("rejected_reasoning"), think=think)],
        }
        fields: tuple[str, ...] = PAIR_FIELDS
    else:
        turn = _assistant(row["response"], row.get("reasoning"), row.get("tool_calls"), row.get("refusal"),
                          think=think)
        record = ({"messages": [*prompt, turn]} if format == "messages"
                  else {"prompt": prompt, "completion": [turn]})
        fields = SYSTEM_FIELDS
    if row.get("metadata"):
        for key, value in _json(row["metadata"]).items():
            record.setdefault(key, value)
    for key in (*fields, *extra):
        if key in row:
            record.setdefault(key, row[key])
    return record


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _assistant(content: str | None, reasoning: str | None = None, tool_calls: Any = None,
               refusal: str | None = None, think: str | None = None) -> dict[str, Any]:
    """The teacher's turn as chat templates read it: reasoning as `reasoning_content` (or
    written into the content in the form `think`), tool calls and refusals in their OpenAI
    fields."""
    turn: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning and think is not None:
        said = {"reasoning": reasoning, "content": content or ""}  # one pass: no field inside a value
        turn["content"] = _FIELD.sub(lambda m: said[m.group(1)], think)
    elif reasoning:
        turn["reasoning_content"] = reasoning
    if tool_calls:
        turn["tool_calls"] = _json(tool_calls)
    if refusal:
        turn["refusal"] = refusal
    return turn


def _jsonl_to_parquet(tmp: Path, out: Path, count: int) -> None:
    """Let DuckDB infer one schema over all rows (metadata keys may vary by row)."""
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
