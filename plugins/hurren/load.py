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
   the batch's highest cursor value (:func:`advance_watermark`).

Every report of a batch is counted once: extracted = loaded + unchanged + stale + quarantined.

The watermark moves in the same transaction as the rows it covers: batches arrive oldest first
and later batches only hold cursor values at or above it, and the next window starts at or
before it, so the watermark never passes a row that is not committed, and a run that fails
half-way resumes after its last committed batch. A backfill passes ``cursor=None``: it must not
move the cursor (a backfill ahead of the cursor would skip the rows between).

PostgreSQL is written with COPY into a temporary table, then ``INSERT … ON CONFLICT DO UPDATE …
WHERE etl_content_hash IS DISTINCT FROM … AND <stored change time> <= <incoming>`` (design.md:
45k rows/s against 14k for execute_values): the store itself never takes an older version, even
from a run that raced this one. Any other store (SQLite in the demo) goes through portable
SQLAlchemy Core, comparing again under lock inside the transaction.

Exceptions::

    LoadError              anything this module raises on purpose
    ├── ObjectStoreError   a PDF could not be put to S3: nothing was committed, retry the batch
    └── StoreWriteError    the store refused the batch: rolled back, watermark unchanged
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, Literal, Protocol
from urllib.parse import quote

import pandas as pd
from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from hurren import rules, spec, store
from hurren.extract import CursorState, RecordBatch, ReportBatch
from hurren.push import outbox as push_outbox
from hurren.sources import STREAMS, Source

__all__ = [
    "Hold",
    "LoadCounts",
    "LoadError",
    "ObjectStore",
    "ObjectStoreError",
    "StoreWriteError",
    "Pdfs",
    "RUN_LEASE",
    "advance_watermark",
    "content_hash",
    "db_error_summary",
    "db_errors",
    "finish_run",
    "holds_from_verdicts",
    "key_segment",
    "load_records",
    "load_reports",
    "pdf_object_key",
    "start_run",
    "SourceClock",
    "sweep_pdfs",
    "to_store_value",
]

log = logging.getLogger(__name__)

Method = Literal["auto", "copy", "portable"]
_IN_GROUP = 500  # values per IN list (Oracle allows 1000)
_PDF_MAGIC = b"%PDF-"
_UPSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# the spec's formats, as strict as strptime with them, ten times faster with fromisoformat
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class LoadError(Exception):
    """Anything this module raises on purpose."""


class ObjectStoreError(LoadError):
    """A PDF could not be put to S3; the batch was not committed and the watermark not moved."""


class StoreWriteError(LoadError):
    """The store refused the batch; the transaction rolled back, the watermark did not move.

    The message carries the database's SQLSTATE and primary message only: a driver's full text
    can quote the rows (COPY's CONTEXT line), and patient data must not reach a log. The original
    exception is kept in ``cause`` for a debugger, not chained into the traceback."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


def db_error_summary(exc: BaseException) -> str:
    """What a database error says, short and without data: the server's SQLSTATE and primary
    message (not its DETAIL or CONTEXT, which can quote rows), or the driver's own first line (a
    lost connection, a refused login); never SQLAlchemy's text with the statement."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    state = getattr(orig, "sqlstate", None) or getattr(diag, "sqlstate", None)
    if primary:
        return f"{type(orig).__name__} [{state}]: {primary}"
    first = str(orig).strip().splitlines()[0][:300] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


def db_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency; the portable path needs none
        return (DBAPIError,)
    return (DBAPIError, psycopg.Error)


class ObjectStore(Protocol):
    """What load needs of an S3 client (``minio.Minio`` has it; tests pass a fake)."""

    def put_object(
        self,
        bucket_name: str,
        object_name: str,
        data: Any,
        length: int,
        content_type: str = ...,
        metadata: Any = ...,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Pdfs:
    """Where report PDFs go: an S3 client and the bucket (``settings().s3_bucket_reports``)."""

    client: ObjectStore
    bucket: str
    workers: int = 8  # parallel puts (design.md: 984 puts/s with 8 threads, 434/s sequential)


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a record is held back: every rule it broke, and a readable reason (no patient data)."""

    rules: tuple[Mapping[str, Any], ...]
    reason: str


@dataclass(frozen=True, slots=True)
class SourceClock:
    """The source's current time (naive, in its zone, as its change times are) and how far ahead
    of it a change time may lie before it is a clock problem (``future_tolerance_minutes``)."""

    now: datetime
    tolerance: timedelta

    @property
    def future_from(self) -> datetime:
        """Change times from here on are held (rule ``future_dtime``)."""
        return self.now + self.tolerance


def _rule_text(rule: str, check: str, **context: Any) -> str:
    """The rule book's bilingual message of a load-found failure (as validation words its own)."""
    zh, en = rules.load_rulebook().message(rule, check)
    return f"{zh.format(**context)} / {en.format(**context)}"


@dataclass(slots=True)
class LoadCounts:
    """What one batch (or a sum of batches) did.
    extracted = loaded + unchanged + stale + quarantined."""

    extracted: int = 0  # masters/records in the batch
    loaded: int = 0  # inserted or changed
    unchanged: int = 0  # same content hash as the store: not touched
    stale: int = 0  # an older change time than the stored version: not touched, not pushed
    quarantined: int = 0  # held (validator or load checks)
    quarantine_written: int = 0  # new quarantine rows (a version already held is not written again)
    resolved: int = 0  # open quarantine entries closed by a valid version
    items_written: int = 0
    pdfs_put: int = 0
    queued: int = 0  # push_outbox entries added (report versions to send, key-change voids)

    def __add__(self, other: LoadCounts) -> LoadCounts:
        return LoadCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------------------------
# pure pieces: keys, hashes, typed values


S3_SEGMENT_MAX = 255
"""Bytes in one ``/``-separated segment of an object key: MinIO stores each as a file name."""
KEY_MAX = 512
"""Bytes in a whole key: what the store's ``pdf_object_key`` column holds (S3 allows 1024)."""


def key_segment(value: str, limit: int = S3_SEGMENT_MAX) -> str:
    """A source value as one segment of an object key: its UTF-8, percent-encoded (only ASCII
    letters, digits and ``_.-~`` stay as they are), so no ``/``, control or other odd character
    changes the key's shape, and every S3 implementation reads it the same way.

    A value that cannot be a segment as it is (empty, ``.``, ``..``, longer than ``limit``
    bytes encoded) becomes the beginning of its encoding, ``~`` and 32 hex characters of its
    SHA-256: stable and still readable. No such segment could be stored before (MinIO refuses
    it), and every other value keeps the segment earlier releases gave it, so stored rows keep
    pointing at their objects. (Two values with one segment would share a key only with the same
    PDF: the key ends with the PDF's SHA-256, so an object is always its own bytes.)"""
    raw = value.encode("utf-8", "surrogatepass")
    encoded = quote(raw, safe="")
    if encoded not in ("", ".", "..") and len(encoded) <= limit:
        return encoded
    prefix = encoded[: limit * 3 // 4]
    if (cut := prefix.rfind("%", len(prefix) - 2)) != -1:  # never half an escape
        prefix = prefix[:cut]
    return f"{prefix}~{hashlib.sha256(raw).hexdigest()[:32]}"


def pdf_object_key(org_code: str, entity: str, report_form_no: str, sha256: str) -> str:
    """``reports/<org_code>/<entity>/<report_form_no>/<sha256>.pdf``: stable, content-addressed
    (a new PDF of the same report gets a new key; the same bytes always the same one); source
    values made segments by :func:`key_segment`. A key longer than :data:`KEY_MAX` (which no
    stored row can hold) is made again from segments of at most 128 bytes."""
    key = f"reports/{key_segment(org_code)}/{entity}/{key_segment(report_form_no)}/{sha256}.pdf"
    if len(key) <= KEY_MAX:
        return key
    return f"reports/{key_segment(org_code, 128)}/{entity}/{key_segment(report_form_no, 128)}/{sha256}.pdf"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def _storable(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 database column can hold) written as ``\\udXXX``:
    a report that validation holds for them must still reach the quarantine, not fail the batch."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def content_hash(
    master: Mapping[str, Any], items: Sequence[Mapping[str, Any]] = (), pdf_sha256: str | None = None
) -> str:
    """SHA-256 of a report's canonical form: the master's fields (the PDF replaced by its
    SHA-256) and its sub-items in a fixed order (not the order the source returned them), as
    key-sorted compact JSON. The version the store and the outbox track."""
    row = {k: v for k, v in master.items() if k != "pdf"}
    if "pdf" in master:
        row["pdf"] = pdf_sha256
    body = {"master": row, "items": sorted((dict(i) for i in items), key=_json)}
    return hashlib.sha256(_json(body).encode("utf-8", "surrogatepass")).hexdigest()


def _row_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(_json(dict(row)).encode("utf-8", "surrogatepass")).hexdigest()


def to_store_value(f: spec.Field, value: str | None) -> Any:
    """A canonical string as the store column's Python value; ValueError when it is not one."""
    if value is None:
        return None
    match f.type:
        case "datetime":
            if not _DATETIME.fullmatch(value):
                raise ValueError(f"{f.name}: not YYYY-MM-DD HH:MM:SS")
            return datetime.fromisoformat(value)  # naive Beijing time; Feb 30 raises ValueError
        case "date":
            # D1: a datetime where a date is due is accepted and truncated to its date
            if not _DATE.fullmatch(value[:10]):
                raise ValueError(f"{f.name}: not YYYY-MM-DD")
            return date.fromisoformat(value[:10])
        case "number":
            if not value or not (value.isdigit() or (value[0] == "-" and value[1:].isdigit())):
                raise ValueError(f"{f.name}: not a whole number")
            return int(value)
    return value


@dataclass(slots=True)
class _Pdf:
    data: bytes
    sha256: str


def _decode_pdf(value: str | None) -> tuple[_Pdf | None, str | None]:
    """(the PDF, None) or (None, what is wrong: missing, not_base64, not_pdf)."""
    if value is None or not value.strip():
        return None, "missing"
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None, "not_base64"
    if not data.startswith(_PDF_MAGIC):
        return None, "not_pdf"
    return _Pdf(data, hashlib.sha256(data).hexdigest()), None


# --------------------------------------------------------------------------------------------
# units: one report (master + items) or one record


@dataclass(slots=True)
class _Unit:
    key: str  # store.record_key of the canonical master
    master: dict[str, Any]  # canonical
    items: list[dict[str, Any]]  # canonical
    hash: str = ""
    pdf: _Pdf | None = None
    typed_master: dict[str, Any] = field(default_factory=dict)  # store column -> value
    typed_items: list[dict[str, Any]] = field(default_factory=list)
    hold: Hold | None = None
    orphan: bool = False  # sub-items without a master: quarantined, never stored

    def add_hold(
        self, rule: str, entity: str, field_name: str | None, text: str, detail: str | None = None
    ) -> None:
        """Hold the unit for a rule of the validator's vocabulary (hurren.rules), found by load."""
        r = {"rule": rule, "entity": entity, "field": field_name, "detail": detail, "by": "load"}
        if self.hold is None:
            self.hold = Hold((r,), text)
        else:
            self.hold = Hold((*self.hold.rules, r), f"{self.hold.reason}; {text}")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a canonical frame as dicts, missing values as None (never NaN)."""
    if frame.empty:
        return []
    clean = frame.astype(object).where(frame.notna(), None)
    return clean.to_dict("records")


def _link(master: spec.Entity, item: spec.Entity) -> tuple[str, ...]:
    return tuple(k for k in item.key if k in master.key)


def _units(
    master: spec.Entity, item: spec.Entity | None, masters: pd.DataFrame, items: pd.DataFrame | None
) -> list[_Unit]:
    rows = _records(masters)
    by_link: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    link: tuple[str, ...] = ()
    if item is not None and items is not None:
        link = _link(master, item)
        for r in _records(items):
            by_link.setdefault(tuple(r[k] for k in link), []).append(r)
    units = [
        _Unit(
            key=store.record_key(master, r),
            master={n: r.get(n) for n in master.names},
            items=by_link.pop(tuple(r[k] for k in link), []) if item is not None else [],
        )
        for r in rows
    ]
    # sub-items whose master is not in the batch: held under the key their master would have
    # (the link values, null for the rest), as hurren.validation files them
    for values, orphans in by_link.items():
        stub = {k: None for k in master.key} | dict(zip(link, values, strict=True))
        u = _Unit(key=store.record_key(master, stub), master={}, items=orphans, orphan=True)
        u.add_hold(
            "orphan_item",
            item.name if item else master.name,
            None,
            "sub-items without their master in the batch",
        )
        units.append(u)
    return units


@cache
def _stored_fields(entity: spec.Entity) -> tuple[tuple[str, spec.Field], ...]:
    """(store column, field) of the fields a row stores (the PDF is kept in S3)."""
    return tuple((store.column_name(entity, f.name), f) for f in entity.fields if f.type != "pdf")


def _typed(entity: spec.Entity, row: Mapping[str, Any], unit: _Unit) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for column, f in _stored_fields(entity):
        try:
            out[column] = to_store_value(f, row.get(f.name))
        except ValueError:
            rule = f.type if f.type in ("datetime", "number") else "datetime"  # date fields: rule datetime
            unit.add_hold(rule, entity.name, f.name, f"{entity.name}.{f.name} is not a valid {f.type}")
            return None
        if f.key and out[column] is None:
            unit.add_hold("not_null", entity.name, f.name, f"{entity.name}.{f.name} (a key field) is empty")
            return None
    return out


def _change_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATETIME.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _hold_future(
    u: _Unit, master: spec.Entity, item: spec.Entity | None, cursor: str, clock: SourceClock
) -> None:
    """Hold ``u`` (rule future_dtime) when its change time lies beyond the source's clock: stored,
    it would make the corrected version look older (stale) and, as a watermark, skip every row
    between. Orphan sub-items go by their own change time."""
    entity, rows = (item, u.items) if u.orphan and item is not None else (master, [u.master])
    values = [v for r in rows if (v := _change_time(r.get(cursor))) is not None]
    if not values or max(values) < clock.future_from:
        return
    text = _rule_text(
        "future_dtime", "future", field=f"{entity.name}.{cursor}", value=f"'{max(values)}'",
        now=f"{clock.now:%Y-%m-%d %H:%M:%S}", tolerance=int(clock.tolerance.total_seconds() // 60),
    )  # fmt: skip
    u.add_hold("future_dtime", entity.name, cursor, text, "future")


def _prepare(
    units: list[_Unit],
    master: spec.Entity,
    item: spec.Entity | None,
    holds: Mapping[str, Hold],
    org_code: str,
    *,
    cursor: str,
    clock: SourceClock | None = None,
) -> None:
    """Load's own checks, typed rows, PDFs and hashes, in place. ``cursor``: the stream's change
    time field; with a ``clock``, a unit whose change time is in the future is held."""
    has_pdf = any(f.type == "pdf" for f in master.fields)
    seen: dict[tuple[Any, ...], _Unit] = {}
    for u in units:
        if u.key in holds:
            u.hold = holds[u.key]
        if clock is not None:
            _hold_future(u, master, item, cursor, clock)
        if u.orphan:
            u.hash = content_hash({}, u.items)
            continue
        typed = _typed(master, u.master, u)
        items_typed: list[dict[str, Any]] = []
        if item is not None:
            item_keys: set[tuple[Any, ...]] = set()
            for r in u.items:
                t = _typed(item, r, u)
                if t is None:
                    break
                k = tuple(t[store.column_name(item, c)] for c in item.key)
                if k in item_keys:
                    u.add_hold("unique_key", item.name, None, f"two {item.name} rows with the same key")
                    break
                item_keys.add(k)
                items_typed.append(t)
        pdf_digest: str | None = None
        if has_pdf:
            u.pdf, problem = _decode_pdf(u.master.get("pdf"))
            if u.pdf is not None:
                pdf_digest = u.pdf.sha256
            else:
                raw = u.master.get("pdf")
                pdf_digest = None if raw is None else "invalid:" + hashlib.sha256(raw.encode()).hexdigest()
                if u.hold is None or not any(r.get("field") == "pdf" for r in u.hold.rules):
                    text = {"missing": "the PDF is missing", "not_base64": "the PDF is not valid Base64"}
                    u.add_hold(
                        "pdf",
                        master.name,
                        "pdf",
                        text.get(problem or "", "the PDF is not a PDF file"),
                        problem,
                    )
        u.hash = content_hash(u.master, u.items, pdf_digest)
        if typed is None:
            continue
        k = tuple(typed[store.column_name(master, c)] for c in master.key)
        if k in seen:  # the same key twice in one batch: hold both, neither is the report
            for dup in (seen[k], u):
                if dup.hold is None or not any(r["rule"] == "unique_key" for r in dup.hold.rules):
                    dup.add_hold(
                        "unique_key", master.name, None, f"the same {master.name} key twice in one batch"
                    )
            continue
        seen[k] = u
        if u.pdf is not None:
            typed["pdf_object_key"] = pdf_object_key(
                u.master.get("org_code") or org_code, master.name, u.master["report_form_no"], u.pdf.sha256
            )
            typed["pdf_sha256"] = u.pdf.sha256
            typed["pdf_size"] = len(u.pdf.data)
        typed["etl_content_hash"] = u.hash
        u.typed_master = typed
        for t in items_typed:
            t["etl_content_hash"] = _row_hash(t)
        u.typed_items = items_typed


def holds_from_verdicts(verdicts: Any) -> dict[str, Hold]:
    """Holds from :mod:`hurren.validation` verdicts: every held record key with the rules it
    broke (``rules_broken``, no values) and its readable reason (``reason``)."""
    return {k: Hold(tuple(verdicts.rules_broken(k)), verdicts.reason(k)) for k in verdicts.held_keys}


# --------------------------------------------------------------------------------------------
# S3


REFUSAL_CODES = frozenset(
    {
        "KeyTooLongError",
        "InvalidObjectName",
        "XMinioInvalidObjectName",
        "XMinioInvalidObjectNamePrefixSlash",
        "EntityTooLarge",
        "MetadataTooLarge",
    }
)
"""S3 error codes that refuse one object for a reason of its own (its key, its size): the same
answer on every retry, whatever the server's state. Anything else (a 5xx, a time-out, a lost
connection, credentials, a missing bucket, a code not listed here) fails the batch for a retry:
a systemic refusal taken for a per-report one would quarantine whole batches and move the
watermark past them."""


def _refusal(exc: BaseException) -> str | None:
    """What a deterministic refusal of one object said, or None when ``exc`` is not one."""
    if type(exc) is ValueError:  # the minio client's own checks of the name, before any request
        return f"the S3 client refused the object name: {str(exc)[:120]}"
    code = getattr(exc, "code", None)
    if code in REFUSAL_CODES:
        return f"S3 answered {code}"
    return None


def _put_pdfs(units: Sequence[_Unit], pdfs: Pdfs) -> tuple[int, dict[str, str]]:
    """Put the units' PDFs; returns how many were stored and the refused ones (key -> what S3
    said). Raises ObjectStoreError when a put failed for any other reason."""
    todo: dict[str, _Pdf] = {}
    for u in units:
        if u.pdf is not None and u.typed_master.get("pdf_object_key"):
            todo[u.typed_master["pdf_object_key"]] = u.pdf
    if not todo:
        return 0, {}

    def put(item: tuple[str, _Pdf]) -> BaseException | None:
        key, pdf = item
        try:
            pdfs.client.put_object(
                pdfs.bucket,
                key,
                io.BytesIO(pdf.data),
                len(pdf.data),
                content_type="application/pdf",
                metadata={"sha256": pdf.sha256},
            )
        except Exception as exc:  # noqa: BLE001 - sorted out below: one report's, or the batch's
            return exc
        return None

    with ThreadPoolExecutor(max_workers=max(1, pdfs.workers)) as pool:
        outcomes = dict(zip(todo, pool.map(put, todo.items()), strict=True))
    refused = {k: detail for k, exc in outcomes.items() if exc is not None and (detail := _refusal(exc))}
    failed = [exc for k, exc in outcomes.items() if exc is not None and k not in refused]
    if failed:  # any client or network error: the batch must not commit
        exc = failed[0]
        raise ObjectStoreError(
            f"putting {len(todo)} PDF(s) to bucket {pdfs.bucket!r} failed ({type(exc).__name__}: {exc}); "
            "nothing was committed: check S3 and retry"
        ) from exc
    return len(todo) - len(refused), refused


def _note_puts(engine: Engine, units: Sequence[_Unit], pdfs: Pdfs, master: spec.Entity, *, source: Source,
               run_id: str) -> None:  # fmt: skip
    """Record the objects about to be put in ``etl_pdf_pending`` (committed before the puts), so
    that those of a batch that never commits can be found and removed (:func:`sweep_pdfs`). One
    row per object: a put again refreshes ``put_at``, and waits while a sweep is deciding about
    that object (its row lock), so a sweep never removes an object a batch has just put."""
    rows = {
        u.typed_master["pdf_object_key"]: {
            "bucket": pdfs.bucket,
            "object_key": u.typed_master["pdf_object_key"],
            "source": source.id,
            "entity": master.name,
            "org_code": u.typed_master.get("org_code"),
            "report_form_no": _report_form_no(master, u),
            "run_id": run_id,
            "put_at": _utcnow(),
        }
        for u in units
        if u.pdf is not None and u.typed_master.get("pdf_object_key")
    }
    if not rows:
        return
    p = store.pdf_pending
    values = [rows[k] for k in sorted(rows)]  # one lock order for every batch: no deadlock
    with engine.begin() as conn:
        if conn.dialect.name in _UPSERT:
            upsert = _UPSERT[conn.dialect.name](p)
            refresh = {c: upsert.excluded[c] for c in ("source", "entity", "run_id", "put_at")}
            for i in range(0, len(values), _IN_GROUP):
                stmt = upsert.values(values[i : i + _IN_GROUP])
                conn.execute(
                    stmt.on_conflict_do_update(index_elements=[p.c.bucket, p.c.object_key], set_=refresh)
                )
        else:
            _forget_puts(conn, pdfs.bucket, list(rows))
            conn.execute(insert(p), values)


def _forget_puts(conn: Connection, bucket: str, keys: Sequence[str]) -> None:
    """The objects are referenced by committed rows now (or were never stored): not pending."""
    p = store.pdf_pending
    stmt = delete(p).where(p.c.bucket == bucket, p.c.object_key.in_(bindparam("keys", expanding=True)))
    keys = sorted(keys)
    for i in range(0, len(keys), _IN_GROUP):
        conn.execute(stmt, {"keys": keys[i : i + _IN_GROUP]})


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


PDF_SWEEP_GRACE = timedelta(hours=24)
"""How old a pending object must be before :func:`sweep_pdfs` may remove it: far longer than any
batch takes from its puts to its commit (the S3 client gives up within minutes)."""


class ObjectRemover(Protocol):
    def remove_object(self, bucket_name: str, object_name: str) -> Any: ...


def sweep_pdfs(
    engine: Engine,
    client: ObjectRemover,
    *,
    source: str | None = None,
    older_than: timedelta = PDF_SWEEP_GRACE,
    now: datetime | None = None,
    group: int = 100,
) -> int:
    """Remove the PDFs that batches put to S3 and never committed (a store error, a SIGKILL, a
    report held after its put), once they are ``older_than`` (UTC ``now``): each object in
    ``etl_pdf_pending`` that no stored row refers to. An object a committed row refers to — the
    same report and PDF committed by another run: keys are content-addressed — stays. Superseded
    versions' PDFs are never pending, so they stay too. Returns the number of objects removed.

    Race-free with concurrent loads: a group's pending rows are locked (``FOR UPDATE``, skipping
    rows another sweep holds) while its objects are checked and removed; a batch that puts one
    of them again first refreshes that row (:func:`_note_puts`), which waits for the lock and then
    is too young to be swept. ``source`` limits the sweep to one hospital's objects."""
    p = store.pdf_pending
    cutoff = (now or _utcnow()) - older_than
    where = [p.c.put_at < cutoff] + ([p.c.source == source] if source is not None else [])
    removed = 0
    while True:
        with engine.begin() as conn:
            stmt = select(p).where(*where).order_by(p.c.bucket, p.c.object_key).limit(group)
            rows = conn.execute(stmt.with_for_update(skip_locked=True)).all()
            if not rows:
                return removed
            referenced = _referenced(conn, rows)
            for r in rows:
                if r.object_key not in referenced:
                    client.remove_object(r.bucket, r.object_key)  # S3: removing a missing key is fine
                    removed += 1
            conn.execute(delete(p).where(p.c.id.in_([r.id for r in rows])))
        log.info("PDF sweep: %s object(s) of uncommitted batches removed so far", removed)


def _referenced(conn: Connection, rows: Sequence[Any]) -> set[str]:
    """The pending keys a stored row of their report refers to (found by the report's key prefix)."""
    found: set[str] = set()
    by_entity: dict[str, list[Any]] = {}
    for r in rows:
        by_entity.setdefault(r.entity, []).append(r)
    for entity, group in by_entity.items():
        t = store.SPEC_TABLES[entity]
        cond = t.c.pdf_object_key.in_([r.object_key for r in group])
        if all(r.report_form_no is not None for r in group):  # the primary key's first columns: indexed
            reports = sorted({(r.org_code, r.report_form_no) for r in group})
            cond = and_(tuple_(t.c.org_code, t.c.report_form_no).in_(reports), cond)
        found.update(conn.execute(select(t.c.pdf_object_key).where(cond)).scalars())
    return found


# --------------------------------------------------------------------------------------------
# store writes


def _key_columns(table: Table, entity: spec.Entity) -> list[Any]:
    return [table.c[store.column_name(entity, k)] for k in entity.key]


def _existing(
    conn: Connection, entity: spec.Entity, units: Sequence[_Unit], cursor: str, *, lock: bool = False
) -> dict[tuple[Any, ...], tuple[str, datetime | None]]:
    """(store hash, stored change time) of each unit's key, found by the first selective key
    column in IN groups; ``lock``: FOR UPDATE (the portable path's check inside its transaction)."""
    table = store.SPEC_TABLES[entity.name]
    keys = _key_columns(table, entity)
    probe_name = next((k for k in entity.key if k != "org_code"), entity.key[0])
    probe = table.c[store.column_name(entity, probe_name)]
    values = sorted({u.typed_master[probe.name] for u in units if u.typed_master})
    stmt = select(*keys, table.c.etl_content_hash, table.c[store.column_name(entity, cursor)])
    stmt = stmt.where(probe.in_(bindparam("values", expanding=True)))
    if lock:
        stmt = stmt.with_for_update()
    params: dict[str, Any] = {}
    if "org_code" in entity.key and probe.name != "org_code":  # form numbers repeat across hospitals
        stmt = stmt.where(table.c.org_code.in_(bindparam("orgs", expanding=True)))
        params["orgs"] = sorted({u.typed_master["org_code"] for u in units if u.typed_master})
    found: dict[tuple[Any, ...], tuple[str, datetime | None]] = {}
    for i in range(0, len(values), _IN_GROUP):
        for row in conn.execute(stmt, {**params, "values": values[i : i + _IN_GROUP]}):
            found[tuple(row[:-2])] = (row[-2], row[-1])
    return found


def _write_portable(
    conn: Connection, master: spec.Entity, item: spec.Entity | None, new: list[_Unit], changed: list[_Unit]
) -> None:
    table = store.SPEC_TABLES[master.name]
    if new:
        conn.execute(insert(table), [u.typed_master for u in new])
    if changed:
        keys = _key_columns(table, master)
        cols = [c for c in changed[0].typed_master if c not in {k.name for k in keys}]
        stmt = (
            update(table)
            .where(and_(*(k == bindparam(f"k_{k.name}") for k in keys)))
            .values({c: bindparam(f"v_{c}") for c in cols} | {"etl_loaded_at": func.current_timestamp()})
        )
        conn.execute(
            stmt,
            [
                {f"k_{k.name}": u.typed_master[k.name] for k in keys}
                | {f"v_{c}": u.typed_master[c] for c in cols}
                for u in changed
            ],
        )
    if item is not None:
        itable = store.SPEC_TABLES[item.name]
        link = _link(master, item)
        if changed:
            stmt = delete(itable).where(and_(*(itable.c[c] == bindparam(f"l_{c}") for c in link)))
            conn.execute(stmt, [{f"l_{c}": u.typed_master[c] for c in link} for u in changed])
        rows = [t for u in (*new, *changed) for t in u.typed_items]
        if rows:
            conn.execute(insert(itable), rows)


def _write_copy(
    conn: Connection, master: spec.Entity, item: spec.Entity | None, units: list[_Unit], cursor: str
) -> tuple[list[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """COPY into a temporary table, then one INSERT … ON CONFLICT; returns the keys written and
    the keys found stale (a newer version stored meanwhile). The upsert itself compares the change
    times (column ``cursor``): a stored row is only ever replaced by a version at least as new.

    Typed rows go through psycopg's ``write_row`` (not CSV), so an empty string stays an empty
    string and only None becomes NULL."""
    from psycopg import sql  # the copy path is taken only with psycopg

    raw = conn.connection.driver_connection
    table = store.SPEC_TABLES[master.name]
    cols = list(units[0].typed_master)
    keys = [k.name for k in _key_columns(table, master)]
    ident = sql.Identifier
    t, stage = ident(table.name), ident(f"etl_stage_{table.name}")
    col_list = sql.SQL(", ").join(map(ident, cols))
    key_list = sql.SQL(", ").join(map(ident, keys))

    def same(a: sql.Composable, b: sql.Composable, names: Iterable[str]) -> sql.Composable:
        return sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, ident(c), b, ident(c)) for c in names)

    ct = ident(store.column_name(master, cursor))
    with raw.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(stage, t)
        )
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, col_list)) as copy:
            for u in units:
                copy.write_row([u.typed_master[c] for c in cols])
        # rows stored meanwhile with the same hash leave the stage
        cur.execute(
            sql.SQL(
                "DELETE FROM {s} USING {t} WHERE {same} AND {t}.etl_content_hash = {s}.etl_content_hash"
            ).format(s=stage, t=t, same=same(t, stage, keys))
        )
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c))
            for c in [*cols, "etl_loaded_at"]
            if c not in keys
        )
        cur.execute(
            sql.SQL(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} "
                "ON CONFLICT ({keys}) DO UPDATE SET {updates} "
                "WHERE {t}.etl_content_hash IS DISTINCT FROM EXCLUDED.etl_content_hash "
                "AND ({t}.{ct} IS NULL OR EXCLUDED.{ct} IS NULL OR {t}.{ct} <= EXCLUDED.{ct}) "
                "RETURNING {keys}"
            ).format(t=t, cols=col_list, s=stage, keys=key_list, updates=updates, ct=ct)
        )
        written = [tuple(r) for r in cur.fetchall()]
        stale: set[tuple[Any, ...]] = set()
        by_key = {tuple(u.typed_master[k] for k in keys): u for u in units}
        missed = set(by_key) - set(written)
        if missed:  # the rare race: another run stored a version of these keys meanwhile
            found = _existing(conn, master, [by_key[k] for k in missed], cursor)
            stale = {k for k in missed if k in found and found[k][0] != by_key[k].hash}
            cur.executemany(  # only the written reports' sub-items are replaced below
                sql.SQL("DELETE FROM {s} WHERE {match}").format(
                    s=stage, match=sql.SQL(" AND ").join(sql.SQL("{} = %s").format(ident(k)) for k in keys)
                ),
                sorted(missed, key=repr),
            )
        if item is None or not written:
            return written, stale
        # the old sub-items of every written report go, the new ones come in by COPY
        itable = ident(store.SPEC_TABLES[item.name].name)
        cur.execute(
            sql.SQL("DELETE FROM {i} USING {s} WHERE {same}").format(
                i=itable, s=stage, same=same(itable, stage, _link(master, item))
            )
        )
        done = set(written)
        rows = [r for u in units if tuple(u.typed_master[k] for k in keys) in done for r in u.typed_items]
        if rows:
            icols = list(rows[0])
            with cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(itable, sql.SQL(", ").join(map(ident, icols)))
            ) as copy:
                for r in rows:
                    copy.write_row([r[c] for c in icols])
    return written, stale


def _quarantine(
    conn: Connection, master: spec.Entity, held: list[_Unit], *, source: Source, run_id: str
) -> int:
    if not held:
        return 0
    q = store.quarantine
    open_versions: set[tuple[str, str]] = set()
    stmt = select(q.c.record_key, q.c.content_hash).where(
        q.c.entity == master.name,
        q.c.source == source.id,
        q.c.resolved_at.is_(None),
        q.c.record_key.in_(bindparam("keys", expanding=True)),
    )
    keys = sorted({u.key for u in held})
    for i in range(0, len(keys), _IN_GROUP):
        open_versions.update((r[0], r[1]) for r in conn.execute(stmt, {"keys": keys[i : i + _IN_GROUP]}))
    rows = []
    for u in held:
        if (u.key, u.hash) in open_versions or u.hold is None:
            continue
        open_versions.add((u.key, u.hash))
        rows.append(
            {
                "run_id": run_id,
                "source": source.id,
                "org_code": source.org_code,
                "entity": master.name,
                "record_key": u.key,
                "report_form_no": _report_form_no(master, u),
                "content_hash": u.hash,
                "rules": _storable(_json(list(u.hold.rules))),
                "reason": _storable(u.hold.reason),
                "payload": _storable(
                    json.dumps(
                        {"master": None if u.orphan else u.master, "items": u.items},
                        ensure_ascii=False,
                        default=str,
                    )
                ),
            }
        )
    if rows:
        conn.execute(insert(q), rows)
    return len(rows)


def _report_form_no(master: spec.Entity, u: _Unit) -> str | None:
    """The number a held report goes by, also when its key is broken (None: not a report)."""
    if "report_form_no" not in master.key:
        return None
    row = u.master or (u.items[0] if u.items else {})
    value = row.get("report_form_no")
    return None if value is None or str(value) == "" else str(value)[:128]


def _resolve(conn: Connection, master: spec.Entity, b: _Batch, *, source: Source) -> int:
    """Resolve the open entries of the batch's valid reports: by key, and, for reports, by report
    number (a report corrected at the source under another key, e.g. a patient_id filled in),
    unless the batch also holds a version of that report number."""
    q = store.quarantine
    open_ = (q.c.entity == master.name, q.c.source == source.id, q.c.resolved_at.is_(None))
    if conn.execute(select(q.c.id).where(*open_).limit(1)).first() is None:
        return 0  # nothing open: the usual case, and IN lists of a whole batch saved
    keys = sorted({u.key for u in b.valid})
    forms = sorted(
        {_report_form_no(master, u) for u in b.valid} - {_report_form_no(master, u) for u in b.held} - {None}
    )
    by_key = update(q).where(*open_, q.c.record_key.in_(bindparam("values", expanding=True)))
    by_form = update(q).where(*open_, q.c.org_code == source.org_code,
                              q.c.report_form_no.in_(bindparam("values", expanding=True)))  # fmt: skip
    n = 0
    for stmt, values in ((by_key, keys), (by_form, forms)):
        stmt = stmt.values(resolved_at=func.current_timestamp())
        for i in range(0, len(values), _IN_GROUP):
            n += conn.execute(stmt, {"values": list(values[i : i + _IN_GROUP])}).rowcount or 0
    return n


def _add_run_counts(conn: Connection, run_pk: int, counts: LoadCounts) -> None:
    r = store.run
    conn.execute(
        update(r)
        .where(r.c.id == run_pk)
        .values(
            extracted=r.c.extracted + counts.extracted,
            loaded=r.c.loaded + counts.loaded,
            quarantined=r.c.quarantined + counts.quarantined,
            stale=func.coalesce(r.c.stale, 0) + counts.stale,
        )
    )


def advance_watermark(
    conn: Connection,
    *,
    source: str,
    stream: str,
    last_value: datetime,
    initial_value: datetime,
    run_id: str | None = None,
) -> datetime:
    """Move the cursor of (source, stream) forward to ``last_value`` — never back — in the
    caller's transaction (commit it with the rows). Returns the cursor's value afterwards."""
    wm = store.watermark
    where = (wm.c.source == source, wm.c.stream == stream)
    current = conn.execute(select(wm.c.last_value).where(*where).with_for_update()).scalar_one_or_none()
    if current is None:
        conn.execute(
            insert(wm).values(
                source=source,
                stream=stream,
                initial_value=initial_value,
                last_value=last_value,
                run_id=run_id,
            )
        )
        return last_value
    if last_value <= current:
        return current
    conn.execute(
        update(wm)
        .where(*where)
        .values(last_value=last_value, run_id=run_id, updated_at=func.current_timestamp())
    )
    return last_value


RUN_LEASE = timedelta(hours=3)
"""A ``running`` etl_run try older than this is over: no extraction task lives that long (each has
an ``execution_timeout`` of at most 2 h, ``hurren.dagfactory``; Airflow ends it then)."""

_SUMMED = (*(f.name for f in fields(LoadCounts)), "batches", "future_rows")  # per-try numbers that add up to the run's


def _db_now(conn: Connection) -> datetime:
    """The store's clock, as its DateTime columns hold it (``started_at`` is the server's)."""
    now = conn.execute(select(func.current_timestamp())).scalar_one()
    now = datetime.fromisoformat(now) if isinstance(now, str) else now
    return now.replace(tzinfo=None, microsecond=0)


def _tries(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's tries (details written before tries were kept: one try, its summary)."""
    try:
        details = json.loads(row["details"] or "{}")
    except ValueError:
        details = {}
    if isinstance(details.get("tries"), list):
        return details["tries"]
    first = {"try": 1, "status": row["status"], "started_at": str(row["started_at"])}
    return [{**first, **details}] if details else [first]


def _interrupted(row: Mapping[str, Any], tries: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The last try, found over without having said so: its counts are what its committed batches
    added to the row (the row's counts less the other tries')."""
    last = dict(tries[-1])
    done = {k: sum(int(t.get(k) or 0) for t in tries[:-1]) for k in ("extracted", "loaded", "quarantined", "stale")}
    counts = {k: int(row[k] or 0) - done[k] for k in done}
    counts["unchanged"] = counts["extracted"] - counts["loaded"] - counts["quarantined"] - counts["stale"]
    return {**last, **counts, "status": "interrupted", "found_over_at": str(now)}


_TRY_KEYS = ("try", "status", "started_at", "finished_at", "found_over_at")


def _last_summary(tries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The summary of the latest try that ended with one (success or failed)."""
    ended = [t for t in tries if t.get("status") in ("success", "failed")]
    return {k: v for k, v in ended[-1].items() if k not in _TRY_KEYS} if ended else None


def _details(tries: list[dict[str, Any]], latest: Mapping[str, Any] | None) -> str:
    """``details``: the latest try's summary with the run's counts summed over every try (numbers,
    and rule counts), and ``tries``: each try's own."""
    out = dict(latest or {})
    for key in _SUMMED:
        if any(key in t for t in tries):
            out[key] = sum(int(t.get(key) or 0) for t in tries)
    for key in ("errors_by_rule", "warnings_by_rule", "mapped"):
        merged: dict[str, int] = {}
        for t in tries:
            for k, v in (t.get(key) or {}).items():
                merged[k] = merged.get(k, 0) + int(v)
        if merged or key in out:
            out[key] = merged
    return _json({**out, "tries": tries})


def start_run(
    engine: Engine,
    *,
    run_id: str,
    dag_id: str,
    source: str,
    stream: str,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    lease: timedelta = RUN_LEASE,
) -> int:
    """The ``etl_run`` row of (run_id, source, stream), created or (a retried task) set running
    again with its counts kept and a new try added to ``details.tries``; returns its id for the
    batches' count updates.

    A try killed without a word (SIGKILL, OOM, a lost worker) leaves its row ``running``. Two
    things tell it is over, without asking Airflow: the same run starting again (Airflow starts a
    task's next try only once the last one is over), and a ``running`` try of another run of the
    same source and stream that started longer than ``lease`` ago (no task lives that long). Either
    marks it ``interrupted``, with the time it was found so and the counts its committed batches
    left; a run row that stays interrupted gets that status and ``finished_at``."""
    r = store.run
    with engine.begin() as conn:
        now = _db_now(conn)
        stale = conn.execute(
            select(r).where(r.c.source == source, r.c.stream == stream, r.c.status == "running", r.c.run_id != run_id)
        ).mappings()
        for row in list(stale):
            tries = _tries(row)
            started = datetime.fromisoformat(str(tries[-1].get("started_at") or row["started_at"]))
            if started > now - lease:
                continue  # it may still be working: a backfill next to the scheduled run, say
            tries[-1] = _interrupted(row, tries, now)
            conn.execute(update(r).where(r.c.id == row["id"], r.c.status == "running")
                         .values(status="interrupted", finished_at=now, details=_details(tries, _last_summary(tries))))  # fmt: skip
            log.warning("%s/%s: run %s was left running since %s: interrupted", source, stream, row["run_id"], started)
        found = conn.execute(
            select(r).where(r.c.run_id == run_id, r.c.source == source, r.c.stream == stream)
        ).mappings().first()  # fmt: skip
        if found is not None:
            tries = _tries(found)
            if found["status"] == "running":  # the try before this one never finished
                tries[-1] = _interrupted(found, tries, now)
                log.warning("%s/%s: try %s of run %s ended without a word: interrupted", source, stream,
                            tries[-1]["try"], run_id)  # fmt: skip
            tries.append({"try": len(tries) + 1, "status": "running", "started_at": str(now)})
            conn.execute(update(r).where(r.c.id == found["id"])
                         .values(status="running", finished_at=None, details=_details(tries, _last_summary(tries))))  # fmt: skip
            return int(found["id"])
        result = conn.execute(
            insert(r).values(
                run_id=run_id,
                dag_id=dag_id,
                source=source,
                stream=stream,
                interval_start=interval_start,
                interval_end=interval_end,
                status="running",
                details=_json({"tries": [{"try": 1, "status": "running", "started_at": str(now)}]}),
            )
        )
        return int(result.inserted_primary_key[0])


def finish_run(
    engine: Engine,
    run_pk: int,
    *,
    status: Literal["success", "failed"],
    details: Mapping[str, Any] | None = None,
) -> None:
    """The run's try ends: its summary (``details``) is kept as the try's, the row's ``details``
    become the run's (counts summed over its tries, :func:`_details`)."""
    r = store.run
    with engine.begin() as conn:
        now = _db_now(conn)
        row = conn.execute(select(r).where(r.c.id == run_pk)).mappings().one()
        tries = _tries(row)
        if tries[-1].get("status") != "running":  # a row from before tries were kept
            tries.append({"try": len(tries) + 1, "started_at": str(row["started_at"])})
        tries[-1] = {**tries[-1], **(details or {}), "status": status, "finished_at": str(now)}
        conn.execute(
            update(r)
            .where(r.c.id == run_pk)
            .values(status=status, finished_at=func.current_timestamp(), details=_details(tries, details))
        )


# --------------------------------------------------------------------------------------------
# entry points


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
    void_data_status: Sequence[str] = ("0",),
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
        counts.items_written = sum(len(u.typed_items) for u in written)
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
        if run_pk is not None:
            _add_run_counts(conn, run_pk, counts)
        if cursor is not None and max_cursor is not None:
            advance_watermark(
                conn,
                source=source.id,
                stream=stream,
                last_value=max_cursor,
                initial_value=cursor.initial_value,
                run_id=run_id,
            )


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
    _prepare(units, master, item, holds or {}, source.org_code, cursor=change_time, clock=clock)
    counts = LoadCounts(extracted=len(units), quarantined=sum(u.hold is not None for u in units))
    b = _sort_out(engine, master, item, change_time, units, counts)
    for u in b.to_write:
        u.typed_master["etl_run_id"] = run_id
        for t in u.typed_items:
            t["etl_run_id"] = run_id
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
        raise StoreWriteError(
            f"{source.id}/{stream}: writing {len(b.to_write)} {master.name} record(s) failed "
            f"({db_error_summary(exc)}); nothing was committed and the watermark did not move: "
            "fix the cause and retry the batch",
            exc,
        ) from None
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
    return counts


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


def load_records(
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
) -> LoadCounts:
    """Load one batch of PACS rows or accept/quote records, upserted by the spec key; the same
    rules as :func:`load_reports` without sub-items and PDFs. Accept/quote rows written are queued
    for the platform in the same transaction (``hurren.push.outbox.enqueue``), PACS rows are not."""
    d = STREAMS[batch.stream]
    return _load(
        engine,
        master=spec.entity(d.master),
        item=None,
        masters=batch.records,
        items=None,
        stream=batch.stream,
        max_cursor=batch.max_cursor,
        source=source,
        run_id=run_id,
        pdfs=None,
        holds=holds,
        run_pk=run_pk,
        cursor=cursor,
        method=method,
        void_data_status=(),  # records carry no data_status: none is a void
        clock=clock,
    )
