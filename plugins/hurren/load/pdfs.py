"""Report PDFs: decoded and checked, content-addressed keys, puts to S3 (in parallel, before the
batch commits), the pending list and its sweep."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from sqlalchemy import and_, bindparam, delete, insert, select, tuple_
from sqlalchemy.engine import Connection, Engine

from hurren import spec, store
from hurren.load.common import _IN_GROUP, _UPSERT, ObjectStoreError, _report_form_no, _utcnow
from hurren.pdf import MAGIC, Pdf
from hurren.sources import Source

if TYPE_CHECKING:
    from hurren.load.units import _Unit

log = logging.getLogger(__name__)


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
    workers: int = (
        8  # parallel puts (measured on a 2-core machine: 984 puts/s with 8 threads, 434/s one at a time)
    )


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


def _decode_pdf(value: object) -> tuple[Pdf | None, str | None]:
    """(the PDF, None) or (None, what is wrong: missing, not_base64, not_pdf). A value
    :func:`hurren.pdf.detach` decoded is taken as it is; text is decoded here (leniently: the
    validation decides; this only keeps a report without a readable PDF out of the store)."""
    if isinstance(value, Pdf):
        return value, None
    if not isinstance(value, str) or not value.strip():
        return None, "missing"
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None, "not_base64"
    if not data.startswith(MAGIC):
        return None, "not_pdf"
    return Pdf.of(data), None


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
    todo: dict[str, Pdf] = {}
    for u in units:
        if u.pdf is not None and u.typed_master.get("pdf_object_key"):
            todo[u.typed_master["pdf_object_key"]] = u.pdf
    if not todo:
        return 0, {}

    def put(item: tuple[str, Pdf]) -> BaseException | None:
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
            # executemany: one statement compiled once (and cached), its rows sent in batches
            conn.execute(
                upsert.on_conflict_do_update(index_elements=[p.c.bucket, p.c.object_key], set_=refresh),
                values,
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
