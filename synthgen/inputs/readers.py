"""Input readers: JSONL, CSV, Parquet or a DuckDB query, streamed in bounded memory.

Every reader yields `(line, fields)` pairs (`line` is 1-based: the file line for JSONL
and CSV, the row number for Parquet and SQL) or `(line, BadRow)` when a row cannot even
be decoded. `messages.to_messages` then turns fields into OpenAI messages plus metadata,
so all formats share one set of rules and one set of error messages.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from ..errors import ConfigError, first_line
from .messages import BadRow, Fields


def read_rows(path: Path | None, sql: str | None, con=None) -> Iterator[tuple[int, Fields | BadRow]]:
    """The rows of a file, or of a query (on `con`, a store connection, where given; in an
    empty in-memory DuckDB otherwise)."""
    if sql is not None:
        return _read_sql(sql, con)
    assert path is not None
    if not path.is_file():
        raise ConfigError(f"input: {path}: no such file")
    compressed = path.suffix.lower() in COMPRESSED
    suffix = (path.suffixes[-2] if compressed and len(path.suffixes) > 1 else path.suffix).lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".ndjson": _read_jsonl,
               ".csv": _read_csv, ".parquet": _read_parquet}
    reader = readers.get(suffix)
    if reader is None or (compressed and reader is _read_parquet):
        raise ConfigError(f"input: {path}: unknown format {''.join(path.suffixes)!r} (use .jsonl, .csv "
                          "or .parquet; .jsonl and .csv may be compressed: .gz, .zst)")
    return reader(path)


COMPRESSED = (".gz", ".zst")


def _open(path: Path) -> BinaryIO:
    """The file's bytes, decompressed as its name says (.gz by gzip, .zst by zstandard)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise ConfigError(f"input: {path}: reading .zst needs the zstandard package "
                              "(pip install zstandard)") from None
        return io.BufferedReader(zstandard.open(path, "rb"))  # buffered: it reads by lines
    return path.open("rb")


def _read_jsonl(path: Path) -> Iterator[tuple[int, Fields | BadRow]]:
    with _open(path) as fh:
        for line_no, raw in enumerate(_decompressed(fh, path), 1):
            if line_no == 1 and raw.startswith(BOM):  # editors on Windows write one
                raw = raw[len(BOM):]
            if not raw.strip():
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                reason = "not valid UTF-8" if "utf-8" in str(exc).lower() else f"not valid JSON ({exc})"
                yield line_no, BadRow(reason)
                continue
            if not isinstance(value, dict):
                yield line_no, BadRow(f"expected a JSON object, got {type(value).__name__}")
                continue
            yield line_no, value


def _decompressed(fh: BinaryIO, path: Path) -> Iterator[bytes]:
    """Lines of `fh`; a compressed file cut short is bad input, said as such."""
    try:
        yield from fh
    except (OSError, EOFError) as exc:  # gzip/zstandard on a truncated or corrupt file
        raise ConfigError(f"input: {path}: cannot be decompressed ({exc})") from None


BOM = b"\xef\xbb\xbf"


def _read_csv(path: Path) -> Iterator[tuple[int, Fields | BadRow]]:
    with _open(path) as raw_fh:
        # utf-8-sig: a BOM at the start is not part of the first column's name
        fh = io.TextIOWrapper(raw_fh, encoding="utf-8-sig", errors="strict", newline="")
        reader = csv.DictReader(fh)
        line_no = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                yield reader.line_num + 1, BadRow("not valid UTF-8")
                return  # the decoder cannot resynchronise reliably; stop at the first bad byte
            except csv.Error as exc:
                yield reader.line_num, BadRow(f"malformed CSV ({exc})")
                continue
            line_no = reader.line_num
            if None in row:
                yield line_no, BadRow("more values than header columns")
                continue
            fields: Fields = {k: v for k, v in row.items() if k is not None}
            if isinstance(fields.get("messages"), str):
                try:
                    fields["messages"] = orjson.loads(fields["messages"])
                except orjson.JSONDecodeError:
                    yield line_no, BadRow("column 'messages' is not a JSON list")
                    continue
            yield line_no, fields


def _read_parquet(path: Path) -> Iterator[tuple[int, Fields | BadRow]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ConfigError(f"input: {path}: not a readable Parquet file ({exc})") from None
    row_no = 0
    batches = pf.iter_batches(batch_size=4096)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # a column pyarrow cannot decode (invalid UTF-8...)
            raise ConfigError(f"input: {path}: rows after {row_no:,} cannot be read "
                              f"({first_line(exc)})") from None
        for fields in arrow_rows(batch):
            row_no += 1
            yield row_no, fields


def _read_sql(sql: str, store=None) -> Iterator[tuple[int, Fields | BadRow]]:
    import duckdb

    from ..store import arrow_batches

    con = store if store is not None else duckdb.connect()
    try:
        try:
            reader = arrow_batches(con, sql)
        except duckdb.Error as exc:
            raise ConfigError(f"input-sql: the query failed: {str(exc).splitlines()[0]}") from None
        row_no = 0
        for batch in reader:
            for fields in arrow_rows(batch):
                row_no += 1
                yield row_no, fields
    finally:
        if store is None:
            con.close()


def arrow_rows(batch) -> list[Fields | BadRow]:
    """A record batch as Python rows. Dates, times, timestamps, durations and decimals come
    as text (what the metadata keeps anyway: pyarrow cannot make a datetime of a timestamp
    with nanoseconds, nor a time of day of some units); a row whose value still cannot be
    made Python (invalid UTF-8, a nested timestamp) is a BadRow naming its column."""
    import pyarrow as pa

    columns = [c.cast(pa.string()) if _as_text(c.type) else c for c in batch.columns]
    batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    try:
        return batch.to_pylist()
    except (ValueError, TypeError, pa.ArrowException):
        return [_row(batch, i) for i in range(batch.num_rows)]


def _as_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_temporal(kind) or pa.types.is_decimal(kind)


def _row(batch, i: int) -> Fields | BadRow:
    import pyarrow as pa

    row: Fields = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[i].as_py()
        except (ValueError, TypeError, pa.ArrowException) as exc:
            return BadRow(f"column {name!r} holds a value that cannot be read ({first_line(exc)})")
    return row




SNAPSHOT_PREFIX = "_input_sql_"


def snapshot_sql(con, sql: str, run_id: int) -> str:
    """Run an --input-sql query once, on the store itself (so `FROM corpus` or a recipe
    stage's view works), into a table both passes of the planner read: validation, then
    planning on its own thread while the engine sends (by then the run has turned the
    store's external access off, so the query could not be run again, and the rows it
    sees must be the ones validated). Returns the table's name; `drop_snapshots` removes
    it (and any a killed run left)."""
    import duckdb

    from ..store.memory import retry_out_of_memory
    from ..store.readonly import read_statements

    try:
        [query] = read_statements(sql)
    except ValueError:
        raise ConfigError("input-sql: give one query (a single SELECT)") from None
    except Exception as exc:  # StoreError: not a read; said in the store's words
        raise ConfigError(f"input-sql: {str(exc).removeprefix('sql: ')}") from None
    table = f"{SNAPSHOT_PREFIX}{run_id}"
    drop_snapshots(con)
    create = f'CREATE TABLE "{table}" AS SELECT * FROM ({query.strip().rstrip(";")}) AS q'
    try:  # a run's memory limit is small; reading a JSON file wants 32 MB of buffer
        retry_out_of_memory(con, lambda: con.execute(create))
    except duckdb.Error as exc:
        raise ConfigError(f"input-sql: the query failed: {str(exc).strip().splitlines()[0]}") from None
    return table


def drop_snapshots(con) -> None:
    """Drop every input snapshot in the store (one process writes a store at a time, so
    none of them belongs to a run still going)."""
    tables = con.execute("SELECT table_name FROM information_schema.tables "
                         "WHERE starts_with(table_name, ?)", [SNAPSHOT_PREFIX]).fetchall()
    for (name,) in tables:
        con.execute(f'DROP TABLE IF EXISTS "{name}"')
