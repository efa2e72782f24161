"""Held reports into ``etl_quarantine`` (once per version), and the resolution of open entries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from hurren import spec, store
from hurren.load.common import _IN_GROUP, _json, _report_form_no, _storable
from hurren.load.units import _Unit
from hurren.pdf import Pdf
from hurren.sources import Source

if TYPE_CHECKING:
    from hurren.load import _Batch


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
                        default=_payload_value,
                    )
                ),
            }
        )
    if rows:
        conn.execute(insert(q), rows)
    return len(rows)


def _resolve(conn: Connection, master: spec.Entity, b: _Batch, *, source: Source) -> int:
    """Resolve the open entries of the batch's valid reports: by key, and, for reports, by report
    number (a report corrected at the source under another key, e.g. a patient_id filled in),
    unless the batch also holds a version of that report number."""
    return _resolve_keys(
        conn,
        master,
        lambda: (
            {u.key for u in b.valid},
            {_report_form_no(master, u) for u in b.valid}
            - {_report_form_no(master, u) for u in b.held}
            - {None},
        ),
        source=source,
    )


def _resolve_keys(
    conn: Connection,
    master: spec.Entity,
    keys_and_forms: Callable[[], tuple[Iterable[str], Iterable[str]]],
    *,
    source: Source,
) -> int:
    """Resolve the open entries of these record keys and report numbers (``keys_and_forms``,
    asked only when an entry of the entity is open)."""
    q = store.quarantine
    open_ = (q.c.entity == master.name, q.c.source == source.id, q.c.resolved_at.is_(None))
    if conn.execute(select(q.c.id).where(*open_).limit(1)).first() is None:
        return 0  # nothing open: the usual case, and IN lists of a whole batch saved
    key_set, form_set = keys_and_forms()
    keys, forms = sorted(key_set), sorted(form_set)
    by_key = update(q).where(*open_, q.c.record_key.in_(bindparam("values", expanding=True)))
    by_form = update(q).where(*open_, q.c.org_code == source.org_code,
                              q.c.report_form_no.in_(bindparam("values", expanding=True)))  # fmt: skip
    n = 0
    for stmt, values in ((by_key, keys), (by_form, forms)):
        stmt = stmt.values(resolved_at=func.current_timestamp())
        for i in range(0, len(values), _IN_GROUP):
            n += conn.execute(stmt, {"values": list(values[i : i + _IN_GROUP])}).rowcount or 0
    return n


def _payload_value(value: object) -> str:
    """A decoded PDF as the Base64 text the hospital sent (whitespace aside); anything else
    JSON does not know as its text."""
    return value.base64() if isinstance(value, Pdf) else str(value)
