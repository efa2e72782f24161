"""What the simulated platform keeps: reports, sub-items, daily counts, accept/quote records (SQLite).

One connection behind one lock (SQLite in memory cannot be shared otherwise, and the simulator's
load is small). Records are kept as JSON of their attribute texts, keyed by the spec's keys
(``spec.entity(name).key``). A report and its sub-items are replaced together in one transaction;
a void marks the report (``voided_at``) and a later registration with the same key revives it.
PDFs are not kept, only their size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hurren import spec
from hurren_testkit.simulator.checks import decode_pdf

__all__ = ["Store", "StoredReport"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS report (
    kind TEXT NOT NULL,              -- lab | exam
    key TEXT NOT NULL,               -- JSON array of the master's key values
    id_no TEXT NOT NULL,
    id_type TEXT NOT NULL,
    org_code TEXT NOT NULL,
    report_form_no TEXT NOT NULL,
    report_time TEXT NOT NULL,       -- authenticator_dtime: the recent window and expiry count from it
    master TEXT NOT NULL,            -- JSON, without the PDF
    pdf_size INTEGER,
    pdf_sha256 TEXT,
    submitter_org TEXT NOT NULL,
    submitter_org_name TEXT NOT NULL,
    received_at TEXT NOT NULL,
    voided_at TEXT,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS report_person ON report (id_no, id_type);
CREATE INDEX IF NOT EXISTS report_form ON report (org_code, report_form_no);
CREATE TABLE IF NOT EXISTS item (
    kind TEXT NOT NULL,
    report_key TEXT NOT NULL,
    key TEXT NOT NULL,
    position INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, report_key, key)
);
CREATE TABLE IF NOT EXISTS record (
    entity TEXT NOT NULL,            -- lab_exam_report | sehr_accept_record | sehr_quote_record
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    submitter_org TEXT NOT NULL,
    submitter_org_name TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (entity, key)
);
"""

_KINDS = {"lab": ("labmaster", "lab_subitem"), "exam": ("exammaster", "exam_subitem")}


@dataclass(frozen=True, slots=True)
class StoredReport:
    kind: str
    key: tuple[str, ...]
    master: dict[str, str]
    items: list[dict[str, str]]
    submitter_org: str
    submitter_org_name: str
    received_at: str
    voided_at: str | None


def _key_of(entity_name: str, record: Mapping[str, str]) -> str:
    return json.dumps([record.get(k, "") for k in spec.entity(entity_name).key], ensure_ascii=False)


class Store:
    def __init__(self, *, path: str = ":memory:") -> None:
        self._path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a test platform: no fsync per stored report
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def clear(self) -> None:
        with self._lock:
            self._db.executescript("DELETE FROM report; DELETE FROM item; DELETE FROM record;")

    # -- writes ---------------------------------------------------------------------------------

    def put_report(
        self,
        kind: str,
        master: Mapping[str, str],
        items: Sequence[Mapping[str, str]],
        *,
        submitter_org: str,
        submitter_org_name: str,
        now: datetime,
    ) -> None:
        """Upsert one report and replace its sub-items, atomically."""
        master_entity, item_entity = _KINDS[kind]
        row = {k: v for k, v in master.items() if k != "pdf"}
        pdf = master.get("pdf") or ""
        size = sha = None
        data = decode_pdf(pdf) if pdf else None
        if data is not None:
            size, sha = len(data), hashlib.sha256(data).hexdigest()
        key = _key_of(master_entity, master)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO report VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
                    (
                        kind,
                        key,
                        master.get("id_no", ""),
                        master.get("id_type_code", ""),
                        master.get("org_code", ""),
                        master.get("report_form_no", ""),
                        master.get("authenticator_dtime") or master.get("last_update_dtime", ""),
                        json.dumps(row, ensure_ascii=False),
                        size,
                        sha,
                        submitter_org,
                        submitter_org_name,
                        now.strftime(spec.DATETIME_FORMAT),
                    ),
                )
                self._db.execute("DELETE FROM item WHERE kind = ? AND report_key = ?", (kind, key))
                self._db.executemany(
                    "INSERT INTO item VALUES (?,?,?,?,?)",
                    [
                        (kind, key, _key_of(item_entity, item), n, json.dumps(dict(item), ensure_ascii=False))
                        for n, item in enumerate(items)
                    ],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def put_records(
        self,
        entity_name: str,
        records: Sequence[Mapping[str, str]],
        *,
        submitter_org: str,
        submitter_org_name: str,
        now: datetime,
    ) -> None:
        """Upsert daily counts or accept/quote records by their key (D16 for the records)."""
        stamp = now.strftime(spec.DATETIME_FORMAT)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO record VALUES (?,?,?,?,?,?)",
                    [
                        (
                            entity_name,
                            _key_of(entity_name, r),
                            json.dumps(dict(r), ensure_ascii=False),
                            submitter_org,
                            submitter_org_name,
                            stamp,
                        )
                        for r in records
                    ],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def void(self, kind: str, key: Sequence[str], *, now: datetime) -> StoredReport | None:
        """Mark a report void; the report as it was, or None when there is no such report."""
        found = self.report(kind, key)
        if found is None:
            return None
        with self._lock:
            self._db.execute(
                "UPDATE report SET voided_at = COALESCE(voided_at, ?) WHERE kind = ? AND key = ?",
                (now.strftime(spec.DATETIME_FORMAT), kind, json.dumps(list(key), ensure_ascii=False)),
            )
        return found

    # -- reads ----------------------------------------------------------------------------------

    def _items(self, kind: str, key: str) -> list[dict[str, str]]:
        rows = self._db.execute(
            "SELECT data FROM item WHERE kind = ? AND report_key = ? ORDER BY position", (kind, key)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def _report(self, row: tuple[Any, ...]) -> StoredReport:
        kind, key, master, org, org_name, received, voided = row
        return StoredReport(
            kind=kind,
            key=tuple(json.loads(key)),
            master=json.loads(master),
            items=self._items(kind, key),
            submitter_org=org,
            submitter_org_name=org_name,
            received_at=received,
            voided_at=voided,
        )

    _COLUMNS = "kind, key, master, submitter_org, submitter_org_name, received_at, voided_at"

    def same_report(self, kind: str, master: Mapping[str, str], items: Sequence[Mapping[str, str]]) -> bool:
        """Does the stored report of ``master``'s key hold exactly this master, these sub-items (in
        this order) and this PDF? (A retried registration; D20.)"""
        key = _key_of(_KINDS[kind][0], master)
        pdf = master.get("pdf") or ""
        data = decode_pdf(pdf) if pdf else None
        sha = hashlib.sha256(data).hexdigest() if data is not None else None
        with self._lock:
            row = self._db.execute(
                "SELECT master, pdf_sha256 FROM report WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            if row is None:
                return False
            stored_items = self._items(kind, key)
        incoming = {k: v for k, v in master.items() if k != "pdf"}
        return json.loads(row[0]) == incoming and row[1] == sha and stored_items == [dict(i) for i in items]

    def report(self, kind: str, key: Sequence[str]) -> StoredReport | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM report WHERE kind = ? AND key = ?",
                (kind, json.dumps(list(key), ensure_ascii=False)),
            ).fetchone()
            return None if row is None else self._report(row)

    def reports_for(
        self, *, id_no: str, id_type: str, since: str, kind: str | None = None
    ) -> list[StoredReport]:
        """A person's reports not voided, authenticated at or after ``since`` (newest first)."""
        sql = (
            f"SELECT {self._COLUMNS} FROM report WHERE id_no = ? AND id_type = ? AND voided_at IS NULL "
            "AND report_time >= ?"
        )
        args: list[Any] = [id_no, id_type, since]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY report_time DESC, key", args).fetchall()
            return [self._report(r) for r in rows]

    def records(self, entity_name: str, **where: str) -> list[tuple[dict[str, str], str, str]]:
        """Records of an entity whose fields equal ``where``: (record, submitter org, its name)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data, submitter_org, submitter_org_name FROM record WHERE entity = ? ORDER BY received_at, key",
                (entity_name,),
            ).fetchall()
        out = []
        for data, org, org_name in rows:
            record = json.loads(data)
            if all(record.get(k) == v for k, v in where.items()):
                out.append((record, org, org_name))
        return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {f"{k}master": 0 for k in _KINDS}
            for kind, n in self._db.execute(
                "SELECT kind, count(*) FROM report WHERE voided_at IS NULL GROUP BY kind"
            ):
                out[f"{kind}master"] = n
            out["voided"] = self._db.execute(
                "SELECT count(*) FROM report WHERE voided_at IS NOT NULL"
            ).fetchone()[0]
            for kind, n in self._db.execute("SELECT kind, count(*) FROM item GROUP BY kind"):
                out[_KINDS[kind][1]] = n
            for entity, n in self._db.execute("SELECT entity, count(*) FROM record GROUP BY entity"):
                out[entity] = n
            return out

    def report_keys(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Stored reports by key, without patient identifiers: for ``GET /_admin/reports``."""
        sql = "SELECT kind, key, pdf_size, pdf_sha256, received_at, voided_at, (SELECT count(*) FROM item i WHERE i.kind = r.kind AND i.report_key = r.key) FROM report r"
        args: list[Any] = []
        if kind:
            sql += " WHERE kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY received_at, key", args).fetchall()
        out = []
        for kind_, key, size, sha, received, voided, items in rows:
            names = spec.entity(_KINDS[kind_][0]).key
            out.append(
                {
                    "kind": kind_,
                    "key": dict(zip(names, json.loads(key), strict=True)),
                    "items": items,
                    "pdf_bytes": size,
                    "pdf_sha256": sha,
                    "received_at": received,
                    "voided_at": voided,
                }
            )
        return out
