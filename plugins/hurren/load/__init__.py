"""Loading extracted, validated batches into the municipal store; report PDFs into S3.

One call loads one batch (:func:`load_reports` for a :class:`~hurren.extract.ReportBatch`,
:func:`load_records` for a :class:`~hurren.extract.RecordBatch`), in this order:

1. Per report: its canonical rows are checked for what the store itself cannot take (a missing
   key, a key twice in the batch, a value that does not convert to its column type, a PDF that
   is missing or not Base64 of a PDF), and, given the source's clock (:class:`SourceClock`), for
   a change time beyond it (rule ``future_dtime``). Such a report is held, like one the
   validator holds.
2. ``etl_content_hash`` = SHA-256 of the canonical master row (the PDF as its SHA-256) with its
   sub-items sorted by key (:func:`content_hash`). Reports whose hash is already in the store
   are not written at all: re-running a window changes nothing. A report whose change time (the
   stream's cursor field) is older than the stored version's is **stale**: not written, not
   queued, counted (a later chunk, a backfill or a source holding two versions never moves a
   report back). The same change time with other content is written (a correction made within
   the second).
3. The PDFs of the reports to write are put to S3 *before* the transaction, under a
   content-addressed key ``reports/<org_code>/<entity>/<report_form_no>/<sha256>.pdf``
   (:func:`pdf_object_key`: percent-encoded, every segment one S3 takes), so a committed row
   never points at a missing object. A put refused for a reason of that object alone (its key,
   its size: :data:`REFUSAL_CODES`) holds that report (rule ``pdf``, ``storage_refused``); the
   rest of the batch goes on. Any other failure (S3 down, a 5xx, a time-out, credentials) is an
   :class:`ObjectStoreError` for the whole batch: nothing is committed, the retry puts again.
   Each object is noted in ``etl_pdf_pending`` before its put and forgotten in the commit; what
   a batch that never commits put stays there, and :func:`sweep_pdfs` removes those objects a
   day later unless a stored row refers to them (the same PDF may belong to a committed version).
4. One transaction: masters upserted by the spec key (only when the hash differs and the stored
   version is not newer), the old sub-items of each written report deleted and the new ones
   inserted (a sub-item removed at the source disappears); each written report version queued
   in ``push_outbox`` (``hurren.push``; a void when its data_status is void, D15); held reports
   written whole to ``etl_quarantine`` (once per version); open quarantine entries of every
   valid, current report resolved; the run's counts added to ``etl_run``; the cursor advanced to
   the batch's highest cursor value (:func:`hurren.incremental.advance_watermark`).

Every report of a batch is counted once: extracted = loaded + unchanged + stale + quarantined.

The watermark moves in the same transaction as the rows it covers: batches arrive oldest first
and later batches only hold cursor values at or above it, and the next window starts at or
before it, so the watermark never passes a row that is not committed, and a run that fails
half-way resumes after its last committed batch. A backfill passes ``cursor=None``: it must not
move the cursor (a backfill ahead of the cursor would skip the rows between).

PostgreSQL is written with COPY into a temporary table, then ``INSERT … ON CONFLICT DO UPDATE …
WHERE etl_content_hash IS DISTINCT FROM … AND <stored change time> <= <incoming>`` (measured on
a 2-core machine: 45k rows/s against 14k for execute_values): the store itself never takes an older version, even
from a run that raced this one. Any other store (SQLite in the demo) goes through portable
SQLAlchemy Core, comparing again under lock inside the transaction.

The package, by concept: :mod:`~hurren.load.units` (a batch as reports or records, typed and
hashed column by column with :mod:`hurren.rows`; load's own checks), :mod:`~hurren.load.pdfs`
(decode, check, content-addressed keys, parallel puts, the pending list and its sweep),
:mod:`~hurren.load.engines` (``copy`` for PostgreSQL, ``portable`` for any other store),
:mod:`~hurren.load.records` (records without sub-items, PDFs or push entries — the PACS views —
column by column on the ``copy`` engine), :mod:`~hurren.load.quarantine` and, here, the batch
flow that ties them into one transaction with the run's counts and the watermark (both
:mod:`hurren.incremental`'s).

Exceptions::

    LoadError              anything this module raises on purpose
    ├── ObjectStoreError   a PDF could not be put to S3: nothing was committed, retry the batch
    └── StoreWriteError    the store refused the batch: rolled back, watermark unchanged
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

import pandas as pd
from sqlalchemy.engine import Engine

from hurren import spec, store
from hurren.extract import RecordBatch, ReportBatch
from hurren.incremental import CursorState, settle_batch
from hurren.load import records
from hurren.load.common import (
    Hold,
    LoadCounts,
    LoadError,
    Method,
    ObjectStoreError,
    SourceClock,
    StoreWriteError,
    _rule_text,
    db_error_summary,
    db_errors,
)
from hurren.load.engines import _existing, _write_copy, _write_portable
from hurren.load.pdfs import (
    KEY_MAX,
    PDF_SWEEP_GRACE,
    REFUSAL_CODES,
    S3_SEGMENT_MAX,
    ObjectStore,
    Pdfs,
    _forget_puts,
    _note_puts,
    _put_pdfs,
    key_segment,
    pdf_object_key,
    sweep_pdfs,
)
from hurren.load.quarantine import _quarantine, _resolve
from hurren.load.units import _prepare, _Unit, _units, holds_from_verdicts
from hurren.push import outbox as push_outbox
from hurren.rows import content_hash, to_store_value
from hurren.sources import STREAMS, Source

__all__ = [
    "KEY_MAX",
    "PDF_SWEEP_GRACE",
    "REFUSAL_CODES",
    "S3_SEGMENT_MAX",
    "Hold",
    "LoadCounts",
    "LoadError",
    "ObjectStore",
    "ObjectStoreError",
    "StoreWriteError",
    "Pdfs",
    "content_hash",
    "db_error_summary",
    "db_errors",
    "holds_from_verdicts",
    "key_segment",
    "load_records",
    "stage_records",
    "load_reports",
    "pdf_object_key",
    "SourceClock",
    "sweep_pdfs",
    "to_store_value",
]

log = logging.getLogger(__name__)


def _method(engine: Engine, method: Method) -> Literal["copy", "portable"]:
    is_psycopg = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    if method == "copy" and not is_psycopg:
        raise LoadError(
            f"method='copy' needs PostgreSQL with psycopg 3, the store is {engine.dialect.name}+{engine.dialect.driver}"
        )
    if method == "auto":
        return "copy" if is_psycopg else "portable"
    return method


@dataclass(slots=True)
class _Batch:
    """One batch sorted out: what to insert, update, leave alone and hold."""

    master: spec.Entity
    item: spec.Entity | None
    cursor: str  # the stream's change time field
    new: list[_Unit] = field(default_factory=list)
    changed: list[_Unit] = field(default_factory=list)
    held: list[_Unit] = field(default_factory=list)
    valid: list[_Unit] = field(default_factory=list)  # new, changed and unchanged (not stale)

    @property
    def to_write(self) -> list[_Unit]:
        return [*self.new, *self.changed]

    def key_of(self, u: _Unit) -> tuple[Any, ...]:
        return tuple(u.typed_master[store.column_name(self.master, k)] for k in self.master.key)

    def change_time(self, u: _Unit) -> datetime | None:
        return u.typed_master.get(store.column_name(self.master, self.cursor))

    def sort(self, units: Sequence[_Unit], existing: Mapping[tuple[Any, ...], tuple[str, datetime | None]],
             counts: LoadCounts) -> None:  # fmt: skip
        """Each valid unit new, changed, unchanged (same hash as stored) or stale (an older change
        time than the stored version's: never written, never pushed, counted). The same change time
        with other content is a correction made within the second: written."""
        stale: list[_Unit] = []
        for u in units:
            found = existing.get(self.key_of(u))
            if found is None:
                self.new.append(u)
            elif found[0] == u.hash:
                counts.unchanged += 1
            elif (mine := self.change_time(u)) is not None and found[1] is not None and mine < found[1]:
                stale.append(u)
            else:
                self.changed.append(u)
        counts.stale += len(stale)
        gone = {id(u) for u in stale}
        self.valid = [u for u in self.valid if id(u) not in gone]


def _sort_out(
    engine: Engine, master: spec.Entity, item: spec.Entity | None, cursor: str, units: list[_Unit],
    counts: LoadCounts,
) -> _Batch:  # fmt: skip
    b = _Batch(master, item, cursor)
    b.held = [u for u in units if u.hold is not None]
    b.valid = [u for u in units if u.hold is None]
    with engine.connect() as conn:
        existing = _existing(conn, master, b.valid, cursor) if b.valid else {}
    b.sort(b.valid, existing, counts)
    return b


def _commit(
    engine: Engine,
    b: _Batch,
    counts: LoadCounts,
    *,
    how: str,
    source: Source,
    stream: str,
    run_id: str,
    run_pk: int | None,
    cursor: CursorState | None,
    max_cursor: datetime | None,
    pdfs: Pdfs | None,
    settled: Sequence[str] = (),
    void_data_status: Sequence[str],
) -> None:
    """The batch's one transaction: rows, their push_outbox entries, quarantine, resolutions, run
    counts, watermark; and the PDFs put for it (``settled``: refused ones too) no longer pending."""
    with engine.begin() as conn:
        if how == "portable" and b.to_write:  # the comparison again, under lock, in the transaction
            planned = b.to_write
            b.new, b.changed = [], []
            b.sort(planned, _existing(conn, b.master, planned, b.cursor, lock=True), counts)
        written = b.to_write
        if written and how == "copy":
            done, late = _write_copy(conn, b.master, b.item, written, b.cursor)
            keys = set(done)
            stale = [u for u in written if b.key_of(u) in late]
            written = [u for u in written if b.key_of(u) in keys]
            counts.stale += len(stale)
            counts.unchanged += len(b.to_write) - len(written) - len(stale)  # stored meanwhile, same hash
            if stale:
                b.valid = [u for u in b.valid if b.key_of(u) not in late]
        elif written:
            _write_portable(conn, b.master, b.item, b.new, b.changed)
        counts.loaded = len(written)
        counts.items_written = sum(len(u.item_pos) for u in written)
        if written:  # a committed version and its queue entry commit together (hurren.push)
            counts.queued = push_outbox.enqueue(
                conn,
                b.master,
                [u.typed_master for u in written],
                org_code=source.org_code,
                void_data_status=void_data_status,
            )
        settled = [*({u.typed_master.get("pdf_object_key") for u in written} - {None}), *settled]
        if pdfs is not None and settled:  # referred to by committed rows now, or never stored
            _forget_puts(conn, pdfs.bucket, settled)
        counts.quarantine_written = _quarantine(conn, b.master, b.held, source=source, run_id=run_id)
        counts.resolved = _resolve(conn, b.master, b, source=source)
        settle_batch(conn, run_pk=run_pk, counts=counts, cursor=cursor, max_cursor=max_cursor,
                     source=source.id, stream=stream, run_id=run_id)  # fmt: skip


def _refused(b: _Batch, refused: Mapping[str, str], counts: LoadCounts) -> None:
    """Reports whose PDF S3 refused for a reason of their own are held (rule pdf,
    storage_refused); the rest of the batch goes on."""
    for u in b.to_write:
        detail = refused.get(u.typed_master.get("pdf_object_key", ""))
        if detail is None:
            continue
        u.add_hold(
            "pdf", b.master.name, "pdf", _rule_text("pdf", "storage_refused", error=detail), "storage_refused"
        )
        b.held.append(u)
        counts.quarantined += 1
    held = {id(u) for u in b.held}
    b.new = [u for u in b.new if id(u) not in held]
    b.changed = [u for u in b.changed if id(u) not in held]
    b.valid = [u for u in b.valid if id(u) not in held]
    log.warning("%s report(s) held: S3 refused their PDF (%s)", len(refused), sorted(set(refused.values())))


def _load(
    engine: Engine,
    *,
    master: spec.Entity,
    item: spec.Entity | None,
    masters: pd.DataFrame,
    items: pd.DataFrame | None,
    stream: str,
    max_cursor: datetime | None,
    source: Source,
    run_id: str,
    pdfs: Pdfs | None,
    holds: Mapping[str, Hold] | None,
    run_pk: int | None,
    cursor: CursorState | None,
    method: Method,
    clock: SourceClock | None = None,
    void_data_status: Sequence[str],
) -> LoadCounts:
    how = _method(engine, method)
    change_time = STREAMS[stream].cursor
    units = _units(master, item, masters, items)
    _prepare(
        units, master, item, holds or {}, source.org_code, masters=masters, cursor=change_time, clock=clock
    )
    counts = LoadCounts(extracted=len(units), quarantined=sum(u.hold is not None for u in units))
    b = _sort_out(engine, master, item, change_time, units, counts)
    for u in b.to_write:
        u.typed_master["etl_run_id"] = run_id  # and their sub-items' (_Items.store_rows)
    refused: dict[str, str] = {}
    if b.to_write and any(f.type == "pdf" for f in master.fields):
        if pdfs is None:
            raise LoadError(f"{master.name} carries PDFs: pass pdfs=Pdfs(client, bucket)")
        if unstorable := {
            k: f"the object key is longer than the {KEY_MAX} bytes a stored row holds"
            for u in b.to_write
            if len((k := u.typed_master.get("pdf_object_key", "")).encode()) > KEY_MAX
        }:
            _refused(b, unstorable, counts)
        _note_puts(engine, b.to_write, pdfs, master, source=source, run_id=run_id)
        counts.pdfs_put, refused = _put_pdfs(b.to_write, pdfs)  # before the commit: no row without its object
        if refused:
            _refused(b, refused, counts)
    try:
        _commit(
            engine,
            b,
            counts,
            how=how,
            source=source,
            stream=stream,
            run_id=run_id,
            run_pk=run_pk,
            cursor=cursor,
            max_cursor=max_cursor,
            pdfs=pdfs,
            settled=list(refused),
            void_data_status=void_data_status,
        )
    except db_errors() as exc:
        raise _write_error(exc, source, stream, len(b.to_write), master) from None
    _log_counts(source, stream, counts)
    return counts


def _write_error(
    exc: BaseException, source: Source, stream: str, n: int, master: spec.Entity
) -> StoreWriteError:
    return StoreWriteError(
        f"{source.id}/{stream}: writing {n} {master.name} record(s) failed "
        f"({db_error_summary(exc)}); nothing was committed and the watermark did not move: "
        "fix the cause and retry the batch",
        exc,
    )


def _log_counts(source: Source, stream: str, counts: LoadCounts) -> None:
    log.info(
        "%s/%s: %s extracted, %s loaded, %s unchanged, %s stale, %s quarantined (%s new), %s resolved, "
        "%s PDFs put",
        source.id,
        stream,
        counts.extracted,
        counts.loaded,
        counts.unchanged,
        counts.stale,
        counts.quarantined,
        counts.quarantine_written,
        counts.resolved,
        counts.pdfs_put,
    )


def load_reports(
    engine: Engine,
    batch: ReportBatch,
    *,
    source: Source,
    run_id: str,
    pdfs: Pdfs,
    holds: Mapping[str, Hold] | None = None,
    run_pk: int | None = None,
    cursor: CursorState | None = None,
    method: Method = "auto",
    options: spec.SpecOptions,
    clock: SourceClock | None = None,
) -> LoadCounts:
    """Load one batch of reports (masters with their sub-items and PDFs) into the store.

    ``holds``: record_key -> :class:`Hold` for the reports validation held back
    (:func:`holds_from_verdicts`). ``run_pk``: the ``etl_run`` row to add the counts to
    (:func:`start_run`). ``cursor``: the stream's cursor, advanced to the batch's highest
    value in the same transaction; None for a backfill. ``method``: "copy" (PostgreSQL),
    "portable", or "auto" (copy when the store is PostgreSQL with psycopg). Every report written
    is queued for the platform in the same transaction (``hurren.push.outbox.enqueue``;
    ``options.void_data_status`` says which are voids, D15). ``clock``: the source's clock; a
    report whose change time lies beyond it is held (``future_dtime``).
    """
    d = STREAMS[batch.stream]
    return _load(
        engine,
        master=spec.entity(d.master),
        item=spec.entity(d.item) if d.item else None,
        masters=batch.masters,
        items=batch.items,
        stream=batch.stream,
        max_cursor=batch.max_cursor,
        source=source,
        run_id=run_id,
        pdfs=pdfs,
        holds=holds,
        run_pk=run_pk,
        cursor=cursor,
        method=method,
        void_data_status=options.void_data_status,
        clock=clock,
    )


def load_records(engine: Engine, batch: RecordBatch, **kwargs: Any) -> LoadCounts:
    """Load one batch of PACS rows or accept/quote records, upserted by the spec key; the same
    rules as :func:`load_reports` without sub-items and PDFs. Accept/quote rows written are queued
    for the platform in the same transaction (``hurren.push.outbox.enqueue``), PACS rows are not.
    The arguments are :func:`stage_records`'."""
    return stage_records(engine, batch, **kwargs)()


def stage_records(
    engine: Engine,
    batch: RecordBatch,
    *,
    source: Source,
    run_id: str,
    holds: Mapping[str, Hold] | None = None,
    run_pk: int | None = None,
    cursor: CursorState | None = None,
    method: Method = "auto",
    clock: SourceClock | None = None,
) -> Callable[[], LoadCounts]:
    """:func:`load_records` in two steps: what needs no store is done now, and the store's part is
    returned, to be called later (``hurren.pipeline`` calls it in another thread while it reads
    the next batch). PACS rows on the ``copy`` engine are typed, hashed and written as COPY text
    now (:func:`hurren.load.records.stage_frame`); any other batch is loaded whole when called.
    Batches of a stream must be called in their order (the watermark)."""
    d = STREAMS[batch.stream]
    master = spec.entity(d.master)
    if not records.columnwise(_method(engine, method), master, None):
        return partial(_load, engine, master=master, item=None, masters=batch.records, items=None,
                       stream=batch.stream, max_cursor=batch.max_cursor, source=source, run_id=run_id, pdfs=None,
                       holds=holds, run_pk=run_pk, cursor=cursor, method=method,
                       void_data_status=(),  # records carry no data_status: none is a void
                       clock=clock)  # fmt: skip
    staged = records.stage_frame(master=master, frame=batch.records, change_time=d.cursor, stream=batch.stream,
                                 max_cursor=batch.max_cursor, source=source, run_id=run_id, holds=holds,
                                 run_pk=run_pk, cursor=cursor, clock=clock)  # fmt: skip

    def commit() -> LoadCounts:
        try:
            counts = staged.commit(engine)
        except db_errors() as exc:
            raise _write_error(exc, source, batch.stream, len(batch.records), master) from None
        _log_counts(source, batch.stream, counts)
        return counts

    return commit
