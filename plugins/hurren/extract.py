"""Reading reports and records from a hospital database, one window of change times at a time.

Which window a run reads (the cursor, the overlap, backfills, the source's clock) and the
watermark are :mod:`hurren.incremental`'s; this module reads a given window ``[since, until)``
(naive source local time; ``until`` None: no end).

Reading a window of reports (:func:`read_reports`) takes three queries per stream, built from the
spec by :mod:`hurren.sql`: ``<stream>_plan`` lists ``(last_update_dtime, report_form_no)``
with counts, :func:`plan_chunks` cuts that list into chunks of about ``chunk_size`` masters, and
for each chunk ``<stream>_masters`` and ``<stream>_items`` read exactly the chunk's
masters and the sub-items of those masters (the same predicate on the master). Memory is bounded
by one chunk; only one result set is open at a time (pymssql allows no more); no LIMIT/OFFSET
and no key lists are needed; every comparison is made by the source database itself, so its
collation never has to agree with Python's. Records and PACS rows have no sub-items and are
streamed from one query with ``fetchmany`` (:func:`read_records`).

Rows become the canonical form the validator reads: DataFrames with the spec's field names as
columns and strings or ``None`` as values (:func:`canonical`): datetimes as
``YYYY-MM-DD HH:MM:SS``, dates as ``YYYY-MM-DD``, whole numbers as digits, strings unchanged
(never stripped or fixed: the validator judges them), NaN as ``None``.

Exceptions::

    ExtractError            anything this module raises on purpose
    ├── ExtractSettingsError  a setting cannot work (overlap, chunk size, window): says what to set
    ├── ColumnsError          a query returned another number of columns than the entity has
    └── SourceReadError       reading the hospital database failed (raised by hurren.pipeline)
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.engine import Connection, Engine

from hurren import spec, sql
from hurren.rows import DATETIME_FORMAT as STRICT_DATETIME
from hurren.sources import STREAMS, Source, Stream, StreamDef

__all__ = [
    "Chunk",
    "ExtractError",
    "ColumnsError",
    "ExtractSettingsError",
    "RecordBatch",
    "ReportBatch",
    "SourceReadError",
    "canonical",
    "canonical_frame",
    "plan_chunks",
    "read_records",
    "read_reports",
    "source_snapshot",
]

log = logging.getLogger(__name__)

REPORT_STREAMS: tuple[Stream, ...] = ("lab", "exam")
RECORD_STREAMS: tuple[Stream, ...] = ("pacs_instance", "pacs_study", "accept", "quote")


class ExtractError(Exception):
    """Anything this module raises on purpose."""


class ExtractSettingsError(ExtractError, ValueError):
    """A setting cannot work; the message says which and what to set instead."""


class ColumnsError(ExtractError):
    """A query returned another number of columns than the spec entity has fields."""


class SourceReadError(ExtractError):
    """Reading the hospital database failed (lost connection, refused login, a query error). The
    message names the hospital and stream, not the SQL; the driver's exception is in ``cause``."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


# --------------------------------------------------------------------------------------------
# the source connection


def _bind_time(value: Any, dialect: str) -> Any:
    """A cursor value as a bind parameter: SQLite compares text; the others take datetimes."""
    if dialect == "sqlite" and isinstance(value, datetime):
        return value.strftime(spec.DATETIME_FORMAT)
    return value


@contextmanager
def source_snapshot(engine: Engine, source: Source) -> Iterator[Connection]:
    """A read-only connection whose queries all see one snapshot of the source, where the
    dialect offers one: PostgreSQL and MySQL/MariaDB (InnoDB) REPEATABLE READ, Oracle SET
    TRANSACTION READ ONLY, SQLite's read transaction. SQL Server's default READ COMMITTED gives
    none (SNAPSHOT isolation must be enabled on the database first); the chunk predicate still
    keeps masters and sub-items of a chunk together, and a report changed between its two
    queries is read again next run.

    MySQL streams a result (``stream_results``) only while the client keeps reading: a batch
    validated and loaded for longer than ``net_write_timeout`` (60 s by default) would lose the
    connection mid-window, so the session allows an hour.
    """
    with engine.connect() as conn:
        if source.dialect in ("postgresql", "mysql"):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin() as tx:
            if source.dialect == "oracle":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            if source.dialect == "mysql":  # reads no table: the snapshot starts at the first query
                conn.exec_driver_sql("SET SESSION net_write_timeout = 3600")
            try:
                yield conn
            finally:
                tx.rollback()


# --------------------------------------------------------------------------------------------
# canonical values


def canonical(value: Any) -> str | None:
    """One source value in the canonical string form the validator and the hash read."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):  # before date: datetime is a date; pandas Timestamp too
        if value is pd.NaT:
            return None
        return value.strftime(spec.DATETIME_FORMAT)
    if isinstance(value, date):
        return value.strftime(spec.DATE_FORMAT)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):  # a PDF BLOB: the spec sends Base64
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "read"):  # an unconverted Oracle LOB
        return canonical(value.read())
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return canonical(value.item())
    return str(value)


_NONE = type(None)


def _canonical_column(values: Sequence[Any]) -> list[str | None]:
    types = set(map(type, values))  # one C pass: text columns come back as they are
    if types <= {str, _NONE}:
        return list(values)
    if types <= {int, _NONE}:
        return [None if v is None else str(v) for v in values]
    if types <= {datetime, _NONE} and (texts := _datetime_texts(values)) is not None:
        return texts
    return [canonical(v) for v in values]


def _datetime_texts(values: Sequence[datetime | None]) -> list[str | None] | None:
    """Naive datetimes as :func:`canonical` writes them (``spec.DATETIME_FORMAT``), by Arrow's cast
    to text, which writes whole seconds that way (4× faster than ``pc.strftime``, which was faster
    than strftime per value); None where Arrow would write otherwise (a time zone, a year before 1000)."""
    if any(v is not None and v.tzinfo is not None for v in values):
        return None
    seconds = pc.floor_temporal(pa.array(values, type=pa.timestamp("us")), unit="second")
    if len(seconds) and (pc.min(pc.year(seconds)).as_py() or 1000) < 1000:
        return None
    return seconds.cast(pa.timestamp("s")).cast(pa.string()).to_pylist()


def canonical_frame(rows: Sequence[Sequence[Any]], names: Sequence[str]) -> pd.DataFrame:
    """Rows read by position into a DataFrame of canonical strings/None (object dtype)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    if len(columns) != len(names):
        raise ColumnsError(f"query returned {len(columns)} columns, expected {len(names)}: {list(names)}")
    return pd.DataFrame(
        {n: pd.Series(_canonical_column(c), dtype=object) for n, c in zip(names, columns, strict=True)},
        columns=list(names),
    )


def _max_cursor(values: Iterable[str | None]) -> datetime | None:
    """The latest of the values (their first 19 characters) that parse as the spec's datetime.
    Those in the strict form sort as text, so only the greatest ones are parsed; any other goes
    through strptime, as lenient as before."""
    heads = [v[:19] for v in values if v is not None]
    strict = {h for h in heads if STRICT_DATETIME.fullmatch(h)}
    best: datetime | None = None
    for h in sorted(strict, reverse=True):
        try:
            best = datetime.fromisoformat(h)  # naive source time
            break
        except ValueError:  # Feb 30: the next one down
            continue
    for h in heads:
        if h in strict:
            continue
        try:
            d = datetime.strptime(h, spec.DATETIME_FORMAT)  # noqa: DTZ007 - naive source time
        except ValueError:
            continue
        if best is None or d > best:
            best = d
    return best


# --------------------------------------------------------------------------------------------
# reports: plan, chunks, batches


@dataclass(frozen=True, slots=True)
class Chunk:
    """Masters from (first_dtime, first_form_no) to (last_dtime, last_form_no), inclusive.

    Values are as the source returned them (bound back unchanged, so equality is exact)."""

    first_dtime: Any
    first_form_no: str
    last_dtime: Any
    last_form_no: str
    planned: int  # masters the plan counted in it

    def params(self, dialect: str) -> dict[str, Any]:
        return {
            "first_dtime": _bind_time(self.first_dtime, dialect),
            "first_form_no": self.first_form_no,
            "last_dtime": _bind_time(self.last_dtime, dialect),
            "last_form_no": self.last_form_no,
        }


def plan_chunks(groups: Iterable[Sequence[Any]], chunk_size: int) -> Iterator[Chunk]:
    """Cut the plan — ``(cursor value, report_form_no, count)`` rows in extraction order — into
    chunks of ``chunk_size`` masters. A group (one cursor value and form number) is never split,
    so a chunk is larger only when one group alone is."""
    if chunk_size < 1:
        raise ExtractSettingsError(f"chunk_size must be at least 1, got {chunk_size}")
    first: tuple[Any, str] | None = None
    last: tuple[Any, str] | None = None
    count = 0
    for dtime, form_no, n in groups:
        n = int(n)
        if first is not None and last is not None and count + n > chunk_size:
            yield Chunk(first[0], first[1], last[0], last[1], count)
            first, count = None, 0
        if first is None:
            first = (dtime, form_no)
        last = (dtime, form_no)
        count += n
        if count >= chunk_size:
            yield Chunk(first[0], first[1], last[0], last[1], count)
            first, count = None, 0
    if first is not None and last is not None:
        yield Chunk(first[0], first[1], last[0], last[1], count)


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """A chunk of reports: the masters and exactly their sub-items, canonical strings."""

    stream: Stream
    masters: pd.DataFrame
    items: pd.DataFrame
    chunk: Chunk
    index: int  # 0-based position in the window; -1 for the orphan sub-items, read first
    chunks: int  # how many chunks the window was planned in
    max_cursor: datetime | None  # the highest master cursor value in the batch

    @property
    def definition(self) -> StreamDef:
        return STREAMS[self.stream]


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """A chunk of rows of a stream without sub-items (PACS rows, accept/quote records)."""

    stream: Stream
    records: pd.DataFrame
    index: int
    max_cursor: datetime | None

    @property
    def definition(self) -> StreamDef:
        return STREAMS[self.stream]


def _check_stream(source: Source, stream: str, allowed: tuple[str, ...]) -> StreamDef:
    if stream not in allowed:
        raise ExtractSettingsError(f"stream {stream!r} is not one of {allowed}")
    if stream not in source.streams:
        raise ExtractSettingsError(
            f"{source.id} does not extract stream {stream!r}; add it to the hospital's streams in the sources configuration"
        )
    return STREAMS[stream]


def _check_window(since: datetime, until: datetime | None, chunk_size: int) -> None:
    if since.tzinfo is not None or (until is not None and until.tzinfo is not None):
        raise ExtractSettingsError(
            "since/until must be naive source local time; convert with hurren.incremental.to_source_time()"
        )
    if chunk_size < 1:
        raise ExtractSettingsError(f"chunk_size must be at least 1, got {chunk_size}")


def _window_params(since: datetime, until: datetime | None, dialect: str) -> dict[str, Any]:
    params = {"since": _bind_time(since, dialect)}
    return params if until is None else {**params, "until": _bind_time(until, dialect)}


def read_reports(
    conn: Connection,
    source: Source,
    stream: Stream,
    since: datetime,
    until: datetime | None,
    chunk_size: int | None = None,
) -> Iterator[ReportBatch]:
    """The reports of ``stream`` ("lab" or "exam") whose master's ``last_update_dtime`` is in
    ``[since, until)`` (``until`` None: no end), in chunks of about ``chunk_size`` masters with
    their sub-items, oldest first (so a watermark advanced after each committed batch never passes
    an uncommitted row).

    ``conn`` is a connection to the source (use :func:`source_snapshot` for a consistent read).
    """
    d = _check_stream(source, stream, REPORT_STREAMS)
    size = source.chunk_size if chunk_size is None else chunk_size
    _check_window(since, until, size)
    if until is not None and until <= since:
        return
    master, item = spec.entity(d.master), spec.entity(d.item or "")
    params = _window_params(since, until, source.dialect)
    plan = conn.execute(
        sql.query(source, f"{stream}_plan", open_end=until is None),
        params,
        execution_options={"stream_results": True, "yield_per": 10_000},
    )
    chunks = list(plan_chunks(plan, size))  # only the bounds stay in memory
    planned = sum(c.planned for c in chunks)
    log.info(
        "%s/%s: %s masters planned in %s chunk(s) for [%s, %s)",
        source.id,
        stream,
        planned,
        len(chunks),
        since,
        until,
    )
    # Sub-items whose master does not exist at all never match a chunk: read them once, first
    # (before any chunk can move the watermark past them), so they are quarantined (orphan_item)
    # rather than never seen. Their batch has no masters and does not move the watermark.
    orphans = canonical_frame(
        conn.execute(sql.query(source, f"{stream}_orphans", open_end=until is None), params).fetchall(),
        item.names,
    )
    if len(orphans):
        log.warning(
            "%s/%s: %s sub-item(s) without a master in [%s, %s)",
            source.id,
            stream,
            len(orphans),
            since,
            until,
        )
        yield ReportBatch(
            stream=stream,
            masters=canonical_frame([], master.names),
            items=orphans,
            chunk=Chunk(since, " ", until, " ", 0),
            index=-1,
            chunks=len(chunks),
            max_cursor=None,
        )
    masters_sql = sql.query(source, f"{stream}_masters")
    items_sql = sql.query(source, f"{stream}_items")
    read = 0
    for i, chunk in enumerate(chunks):
        p = chunk.params(source.dialect)
        masters = canonical_frame(conn.execute(masters_sql, p).fetchall(), master.names)
        items = canonical_frame(conn.execute(items_sql, p).fetchall(), item.names)
        read += len(masters)
        yield ReportBatch(
            stream=stream,
            masters=masters,
            items=items,
            chunk=chunk,
            index=i,
            chunks=len(chunks),
            max_cursor=_max_cursor(masters[d.cursor]),
        )
        del masters, items  # not alive while the next chunk is fetched: one chunk in memory, not two
    if read != planned:
        log.warning(
            "%s/%s: read %s masters where the plan counted %s (rows changed during the read; "
            "the next window reads them)",
            source.id,
            stream,
            read,
            planned,
        )


def read_records(
    conn: Connection,
    source: Source,
    stream: Stream,
    since: datetime,
    until: datetime | None,
    chunk_size: int | None = None,
) -> Iterator[RecordBatch]:
    """The rows of a stream without sub-items ("pacs_instance", "pacs_study", "accept", "quote")
    whose cursor value is in ``[since, until)`` (``until`` None: no end), oldest first,
    ``chunk_size`` rows at a time from one streamed query."""
    d = _check_stream(source, stream, RECORD_STREAMS)
    size = source.chunk_size if chunk_size is None else chunk_size
    _check_window(since, until, size)
    if until is not None and until <= since:
        return
    entity = spec.entity(d.master)
    params = _window_params(since, until, source.dialect)
    result = conn.execute(
        sql.query(source, stream, open_end=until is None),
        params,
        execution_options={"stream_results": True, "yield_per": size},
    )
    for i, rows in enumerate(result.partitions(size)):
        frame = canonical_frame(rows, entity.names)
        yield RecordBatch(stream=stream, records=frame, index=i, max_cursor=_max_cursor(frame[d.cursor]))
