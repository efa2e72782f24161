"""What a queued version sends, read back from the store and S3.

A register sends the store's master row (every spec field, typed values formatted by
``hurren.platform.xml``), its sub-items in key order, and its PDF fetched from S3 and checked
against the SHA-256 the store kept (the XML builder Base64-encodes the bytes). A void sends the
filter built from the same master row (org_code, report_form_no, patient_id, event_type,
event_no, id_no, id_type). Daily counts and accept/quote records send their store rows as they
are, many per call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Connection

from hurren import spec, store
from hurren.push import outbox
from hurren.push.options import REPORT_ENTITIES

__all__ = ["MissingPdf", "ObjectReader", "PdfMismatch", "fetch_pdf", "item_link", "read_items", "read_rows"]


class ObjectReader(Protocol):
    """What the push needs of an S3 client (``minio.Minio`` has it)."""

    def get_object(self, bucket_name: str, object_name: str) -> Any: ...


class PdfMismatch(ValueError):
    """The PDF in S3 is not the one the store recorded (SHA-256 differs): reload the report."""


class MissingPdf(ValueError):
    """The store names no PDF object, or S3 has no such object: reload the report."""


def read_rows(conn: Connection, entity: str, record_keys: list[str]) -> dict[str, dict[str, Any]]:
    """The store rows of these outbox keys (report masters, daily counts, accept/quote records), one
    statement per 500: found by the key's clear columns, told apart by their hashed ones
    (``outbox.entry_key``)."""
    ent = spec.entity(entity)
    table = store.SPEC_TABLES[entity]
    wanted = set(record_keys)
    clear = list(outbox.key_values(ent, record_keys[0])) if record_keys else []
    key = tuple_(*(table.c[k] for k in clear))
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(record_keys), 500):
        values = {tuple(outbox.key_values(ent, k).values()) for k in record_keys[i : i + 500]}
        for r in conn.execute(select(table).where(key.in_(list(values)))).mappings():
            found = outbox.entry_key(ent, r)
            if found in wanted:
                out[found] = dict(r)
    return out


def item_link(entity: str) -> list[str]:
    """The key columns a report's sub-items share with their master (org_code, event_no, report_form_no)."""
    item = spec.entity(REPORT_ENTITIES[entity][1])
    return [k for k in item.key if k in spec.entity(entity).key]


def read_items(
    conn: Connection, entity: str, masters: list[Mapping[str, Any]]
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """The sub-items of these masters, in their key order, by the master's link values
    (:func:`item_link`): one statement per 500 masters."""
    item = spec.entity(REPORT_ENTITIES[entity][1])
    table = store.SPEC_TABLES[item.name]
    link = item_link(entity)
    key = tuple_(*(table.c[k] for k in link))
    wanted = sorted({tuple(m[k] for k in link) for m in masters}, key=repr)
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {w: [] for w in wanted}
    for i in range(0, len(wanted), 500):
        stmt = select(table).where(key.in_(wanted[i : i + 500])).order_by(*(table.c[k] for k in item.key))
        for r in conn.execute(stmt).mappings():
            out[tuple(r[k] for k in link)].append(dict(r))
    return out


def fetch_pdf(client: ObjectReader, bucket: str, master: Mapping[str, Any]) -> bytes:
    """The report's PDF from S3, checked against ``pdf_sha256``."""
    key, expected = master.get("pdf_object_key"), master.get("pdf_sha256")
    if not key or not expected:
        raise MissingPdf("the store names no PDF object for this report; reload it from the hospital")
    try:
        response = client.get_object(bucket, key)
    except Exception as exc:  # minio's S3Error: NoSuchKey is the data's fault, the rest is transient
        if getattr(exc, "code", None) in ("NoSuchKey", "NoSuchBucket"):
            raise MissingPdf(f"S3 has no object {key} in bucket {bucket}; reload the report") from None
        raise
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    if hashlib.sha256(data).hexdigest() != expected:
        raise PdfMismatch(f"the PDF object {key} does not match the store's SHA-256; reload the report")
    return data


def report_fields(entity: str, master: Mapping[str, Any], pdf: bytes | None) -> dict[str, Any]:
    """The master as the XML builder takes it: spec field names, the PDF as bytes."""
    ent = spec.entity(entity)
    out = {f.name: master.get(store.column_name(ent, f.name)) for f in ent.fields if f.type != "pdf"}
    if pdf is not None:
        out["pdf"] = pdf
    return out
