"""Planning: turn the input into request rows with content-derived ids, before any request.

A request id is a hash of canonical JSON of (model, sampling parameters, messages,
sample index). Running the same command again therefore finds every answered request
already in `responses`; changing a parameter makes new ids. That is resume and cache.

The whole input is validated and planned in one transaction before the first request is
sent, so a bad file sends nothing and a crash mid-plan leaves no half plan. A plan whose
input file is unchanged (same content hash) is reused as is, which makes resuming a
million-prompt run start in well under a second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from .config import GenerateConfig
from .errors import ConfigError, InputError
from .inputs import BadRow, read_rows, to_messages
from .templates import Template

BATCH_ROWS = 20_000
SHOWN_PROBLEMS = 20
KEPT_INVALID_ROWS = 10_000
_SORT = orjson.OPT_SORT_KEYS


@dataclass
class Plan:
    key: str
    total: int      # distinct requests in the plan
    invalid: int    # input rows skipped with --skip-invalid
    reused: bool    # True when an unchanged input's plan was found in the store


def canonical(value: Any) -> bytes:
    """Sorted-key compact JSON: equal content gives equal bytes, so equal ids."""
    return orjson.dumps(value, option=_SORT, default=str)


def request_id(model: str, params_json: bytes, messages_json: bytes, sample_index: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(model.encode())
    h.update(b"\x00")
    h.update(params_json)
    h.update(b"\x00")
    h.update(messages_json)
    h.update(b"\x00%d" % sample_index)
    return h.hexdigest()


def sample_params(cfg: GenerateConfig) -> list[bytes]:
    """Canonical parameters for each sample index: a seed moves with the index, so the
    n samples of one prompt are different draws even against a seeded teacher."""
    base = cfg.request_params()
    out = []
    for k in range(cfg.n):
        params = dict(base)
        if cfg.seed is not None:
            params["seed"] = cfg.seed + k
        out.append(canonical(params))
    return out


def plan_key(cfg: GenerateConfig, fingerprint: str, template: Template | None) -> str:
    spec = {
        "fingerprint": fingerprint,
        "template": template.source if template else None,
        "model": cfg.model,
        "params": [p.decode() for p in sample_params(cfg)],
        "limit": cfg.limit,
        "skip_invalid": cfg.skip_invalid,
    }
    return hashlib.blake2b(canonical(spec), digest_size=16).hexdigest()


def fingerprint(cfg: GenerateConfig) -> tuple[str, bool]:
    """(fingerprint, reusable): a file's content hash, or the query text (never reused:
    the tables behind a query may have changed)."""
    if cfg.input_sql is not None:
        return "sql:" + hashlib.blake2b(cfg.input_sql.encode(), digest_size=16).hexdigest(), False
    assert cfg.input is not None
    if not cfg.input.is_file():
        raise ConfigError(f"input: {cfg.input}: no such file")
    h = hashlib.blake2b(digest_size=16)
    with cfg.input.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "file:" + h.hexdigest(), True


def make_plan(con: duckdb.DuckDBPyConnection, cfg: GenerateConfig, run_id: int,
              template: Template | None) -> Plan:
    fp, reusable = fingerprint(cfg)
    key = plan_key(cfg, fp, template)
    row = con.execute("SELECT total, invalid FROM plans WHERE plan_key = ?", [key]).fetchone()
    if row is not None and reusable:
        return Plan(key, row[0], row[1], reused=True)

    con.execute("BEGIN")
    try:
        for table in ("plan_requests", "invalid_inputs", "plans"):
            con.execute(f"DELETE FROM {table} WHERE plan_key = ?", [key])
        bad = Problems()
        for batch in _batches(cfg, template, bad):
            _insert_batch(con, key, run_id, cfg.model or "", batch)
        n_bad = bad.count
        if n_bad and not cfg.skip_invalid:
            raise InputError(_problem_message(cfg, bad.shown, n_bad), bad.shown, n_bad)
        if bad.rows:
            con.executemany(
                "INSERT INTO invalid_inputs VALUES (?, ?, ?, ?)",
                [(key, line, err, raw) for line, err, raw in bad.rows],
            )
        total = con.execute(
            "SELECT count(DISTINCT request_id) FROM plan_requests WHERE plan_key = ?", [key]
        ).fetchone()[0]
        con.execute(
            "INSERT INTO plans VALUES (?, ?, ?, ?, ?, now())",
            [key, _source(cfg), fp, total, n_bad],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return Plan(key, total, n_bad, reused=False)


def _source(cfg: GenerateConfig) -> str:
    return str(cfg.input.resolve()) if cfg.input is not None else f"sql: {cfg.input_sql}"


def _problem_message(cfg: GenerateConfig, problems: list[tuple[int, str]], count: int) -> str:
    where = cfg.input if cfg.input is not None else "input-sql row"
    unit = "line" if cfg.input is not None and cfg.input.suffix != ".parquet" else "row"
    lines = [f"{count} invalid input {unit}{'s' if count != 1 else ''}; nothing was sent:"]
    lines += [f"  {where}:{line}: {reason}" for line, reason in problems]
    if count > len(problems):
        lines.append(f"  ... and {count - len(problems)} more")
    lines.append("Fix them, or pass --skip-invalid to record them and go on with the valid ones.")
    return "\n".join(lines)


@dataclass
class Problems:
    """Bad rows seen while planning: all counted, the first few kept (memory stays bounded)."""

    count: int = 0
    shown: list[tuple[int, str]] = field(default_factory=list)
    rows: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, line: int, reason: str, raw: str) -> None:
        self.count += 1
        if len(self.shown) < SHOWN_PROBLEMS:
            self.shown.append((line, reason))
        if len(self.rows) < KEPT_INVALID_ROWS:
            self.rows.append((line, reason, raw))


def _batches(cfg: GenerateConfig, template: Template | None, bad: Problems) -> Iterator[list[tuple]]:
    """Yield lists of (request_id, line, sample_index, messages_json, params_json, metadata_json)."""
    params = sample_params(cfg)
    model = cfg.model or ""
    batch: list[tuple] = []
    valid = 0
    for line, fields in read_rows(cfg.input, cfg.input_sql):
        try:
            if isinstance(fields, BadRow):
                raise fields
            messages, metadata = to_messages(fields, template)
        except BadRow as exc:
            raw = "" if isinstance(fields, BadRow) else canonical(fields).decode()[:2000]
            bad.add(line, str(exc), raw)
            continue
        valid += 1
        if cfg.limit is not None and valid > cfg.limit:
            break
        messages_json = canonical(messages)
        metadata_json = canonical(metadata).decode() if metadata else None
        m = messages_json.decode()
        for k, p in enumerate(params):
            rid = request_id(model, p, messages_json, k)
            batch.append((rid, line, k, m, p.decode(), metadata_json))
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert_batch(con: duckdb.DuckDBPyConnection, key: str, run_id: int, model: str,
                  batch: list[tuple]) -> None:
    ids, lines, samples, messages, params, metadata = zip(*batch, strict=True)
    table = pa.table({
        "request_id": pa.array(ids, pa.string()),
        "line": pa.array(lines, pa.int64()),
        "sample_index": pa.array(samples, pa.int32()),
        "messages": pa.array(messages, pa.string()),
        "params": pa.array(params, pa.string()),
        "metadata": pa.array(metadata, pa.string()),
    })
    con.register("_plan_batch", table)
    try:
        # DISTINCT ON: a prompt repeated within one batch is one request.
        con.execute(
            """
            INSERT INTO requests
            SELECT DISTINCT ON (request_id) request_id, ?, line, sample_index, ?,
                   messages::JSON, params::JSON, metadata::JSON, now()
            FROM _plan_batch ORDER BY request_id, line
            ON CONFLICT DO NOTHING
            """,
            [run_id, model],
        )
        con.execute(
            "INSERT INTO plan_requests SELECT ?, request_id, line FROM _plan_batch", [key]
        )
    finally:
        con.unregister("_plan_batch")


PENDING_SQL = """
WITH ids AS (
    SELECT request_id, min(line) AS line FROM plan_requests
    WHERE plan_key = $key GROUP BY request_id
)
SELECT ids.request_id, r.messages, r.params, ids.line, r.sample_index
FROM ids JOIN requests r USING (request_id)
WHERE NOT EXISTS (SELECT 1 FROM responses s WHERE s.request_id = ids.request_id)
  AND ($retry_failed OR NOT EXISTS (SELECT 1 FROM failures f WHERE f.request_id = ids.request_id))
ORDER BY ids.line, r.sample_index
"""


def plan_counts(con: duckdb.DuckDBPyConnection, key: str) -> dict[str, int]:
    """Answered, failed and pending requests of a plan, counted by the database."""
    total, answered, failed = con.execute(
        """
        WITH ids AS (SELECT DISTINCT request_id FROM plan_requests WHERE plan_key = ?)
        SELECT count(*),
               count(*) FILTER (WHERE s.request_id IS NOT NULL),
               count(*) FILTER (WHERE s.request_id IS NULL AND f.request_id IS NOT NULL)
        FROM ids LEFT JOIN responses s USING (request_id) LEFT JOIN failures f USING (request_id)
        """,
        [key],
    ).fetchone()
    return {"total": total, "answered": answered, "failed": failed,
            "pending": total - answered - failed}
