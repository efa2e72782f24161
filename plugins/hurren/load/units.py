"""A batch as units (a report: master + sub-items; or a record), typed and hashed column by column
(:mod:`hurren.rows`), with load's own checks (keys, types, PDFs, future change times)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from json.encoder import encode_basestring
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from hurren import spec, store
from hurren.load.common import Hold, SourceClock, _rule_text
from hurren.load.pdfs import _decode_pdf, pdf_object_key
from hurren.pdf import Pdf
from hurren.rows import (
    DATETIME_FORMAT,
    arrow_texts,
    copy_text,
    json_column,
    json_objects,
    json_rows,
    json_text,
    record_keys,
    row_hashes,
    sha256_hex,
    stored_texts,
    typed_column,
)

_PDF_SLOT = (
    "\x01"  # stands for the PDF in a master's JSON: JSON escapes it in any value (np.full drops a NUL)
)


@cache
def _stored_fields(entity: spec.Entity) -> tuple[tuple[str, spec.Field], ...]:
    """(store column, field) of the fields a row stores (the PDF is kept in S3)."""
    return tuple((store.column_name(entity, f.name), f) for f in entity.fields if f.type != "pdf")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A frame's column, or all missing when the frame lacks it (as ``row.get`` would give)."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


@dataclass(slots=True)
class _Typed:
    """A frame's rows typed for the store, column by column (:func:`hurren.rows.typed_column`):
    the values, and per row the first field that fails (-1: none) and whether it failed as
    not convertible (else: a key field that is empty)."""

    entity: spec.Entity
    columns: dict[str, np.ndarray]  # store column -> typed values
    first_fail: np.ndarray  # index into _stored_fields(entity), -1 when the row is fine
    bad_value: np.ndarray  # the first failure is a value that does not convert

    @classmethod
    def of(cls, entity: spec.Entity, frame: pd.DataFrame) -> _Typed:
        n = len(frame)
        columns: dict[str, np.ndarray] = {}
        first_fail = np.full(n, -1, dtype=np.int64)
        bad_value = np.zeros(n, dtype=bool)
        for i, (column, f) in enumerate(_stored_fields(entity)):
            values, bad = typed_column(f, _column(frame, f.name))
            columns[column] = values
            fails = bad | np.fromiter((v is None for v in values), dtype=bool, count=n) if f.key else bad
            new = fails & (first_fail == -1)
            first_fail[new] = i
            bad_value[new] = bad[new]
        return cls(entity, columns, first_fail, bad_value)

    def hold(self, row: int, unit: _Unit) -> bool:
        """Hold ``unit`` for row ``row``'s first failure, as the per-row check words it; whether it failed."""
        i = int(self.first_fail[row])
        if i < 0:
            return False
        f = _stored_fields(self.entity)[i][1]
        name = self.entity.name
        if self.bad_value[row]:
            rule = f.type if f.type in ("datetime", "number") else "datetime"  # date fields: rule datetime
            unit.add_hold(rule, name, f.name, f"{name}.{f.name} is not a valid {f.type}")
        else:
            unit.add_hold("not_null", name, f.name, f"{name}.{f.name} (a key field) is empty")
        return True


class _Items:
    """A batch's sub-items, kept as columns: canonical JSON of each row (for the report's content
    hash), the typed columns, and, for the rows written, their own ``etl_content_hash`` and COPY
    text. By Arrow where it holds the batch's text (:func:`hurren.rows.arrow_texts`), else value by
    value in Python; never a dict per row, except for the few rows a quarantine entry carries."""

    def __init__(self, entity: spec.Entity, frame: pd.DataFrame) -> None:
        self.entity = entity
        self.frame = frame.reset_index(drop=True)
        n = len(self.frame)
        names = list(dict.fromkeys([*self.frame.columns, *entity.names]))
        self.texts = arrow_texts({c: _column(self.frame, c).to_numpy(dtype=object) for c in names})
        encoded = None
        if self.texts is not None and n:
            try:
                encoded = json_objects({c: json_text(self.texts[c]) for c in self.frame.columns}).to_pylist()
            except pa.ArrowException:  # beyond what one string array holds
                pass
        if encoded is None:
            encoded = json_rows({c: json_column(self.frame[c]) for c in self.frame.columns}, n)
        self.json = encoded
        self.typed = _Typed.of(entity, self.frame)
        keys = [self.typed.columns[store.column_name(entity, k)] for k in entity.key]
        self.key_of = list(zip(*keys, strict=True)) if keys else [()] * n

    def records(self, pos: Sequence[int]) -> list[dict[str, Any]]:
        return _records(self.frame.iloc[list(pos)])

    def store_rows(self, pos: Sequence[int], run_id: str | None) -> tuple[list[str], list[Any], bytes | None]:
        """(store columns, typed columns, COPY text or None) of the sub-items at ``pos`` (clean
        rows: typed without failure), with their ``etl_content_hash`` and run id."""
        idx = np.asarray(pos, dtype=np.int64)
        fields = _stored_fields(self.entity)
        typed = {c: v[idx] for c, v in self.typed.columns.items()}
        stored = None
        if self.texts is not None:
            taken = pa.array(idx)
            stored = stored_texts(fields, {f.name: self.texts[f.name].take(taken) for _, f in fields}, typed)
        if stored is not None:
            hashes = row_hashes(fields, stored)
        else:
            hashes = sha256_hex(json_rows({c: json_column(v) for c, v in typed.items()}, len(idx)))
        names = [*typed, "etl_content_hash", "etl_run_id"]
        text = copy_text(fields, stored, hashes, run_id) if stored is not None else None
        return names, [*typed.values(), hashes, [run_id] * len(idx)], text


@dataclass(slots=True)
class _Unit:
    key: str  # store.record_key of the canonical master
    master: dict[str, Any]  # canonical
    sub: _Items | None = None  # the batch's sub-items
    item_pos: list[int] = field(default_factory=list)  # this unit's, in the source's order
    hash: str = ""
    pdf: Pdf | None = None
    typed_master: dict[str, Any] = field(default_factory=dict)  # store column -> value
    hold: Hold | None = None
    orphan: bool = False  # sub-items without a master: quarantined, never stored

    @property
    def items(self) -> list[dict[str, Any]]:
        """The canonical sub-items (for a quarantine entry; built on demand)."""
        return self.sub.records(self.item_pos) if self.sub is not None and self.item_pos else []

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


def _plain(values: pd.Series) -> np.ndarray:
    out = values.to_numpy(dtype=object, copy=True)
    out[pd.isna(out)] = None
    return out


def _link(master: spec.Entity, item: spec.Entity) -> tuple[str, ...]:
    return tuple(k for k in item.key if k in master.key)


def _units(
    master: spec.Entity, item: spec.Entity | None, masters: pd.DataFrame, items: pd.DataFrame | None
) -> list[_Unit]:
    names = master.names
    columns = [_plain(_column(masters, n)) for n in names]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    by_link: dict[tuple[Any, ...], list[int]] = {}
    link: tuple[str, ...] = ()
    sub: _Items | None = None
    if item is not None and items is not None:
        link = _link(master, item)
        sub = _Items(item, items)
        for pos, k in enumerate(zip(*(_plain(_column(sub.frame, c)) for c in link), strict=True)):
            by_link.setdefault(k, []).append(pos)
    units = [
        _Unit(
            key=key,
            master=r,
            sub=sub,
            item_pos=by_link.pop(tuple(r[k] for k in link), []) if item is not None else [],
        )
        for key, r in zip(record_keys(master, masters), rows, strict=True)
    ]
    # sub-items whose master is not in the batch: held under the key their master would have
    # (the link values, null for the rest), as hurren.validation files them
    for values, orphans in by_link.items():
        stub = {k: None for k in master.key} | dict(zip(link, values, strict=True))
        u = _Unit(key=store.record_key(master, stub), master={}, sub=sub, item_pos=orphans, orphan=True)
        u.add_hold(
            "orphan_item",
            item.name if item else master.name,
            None,
            "sub-items without their master in the batch",
        )
        units.append(u)
    return units


def _change_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and DATETIME_FORMAT.fullmatch(value):
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
    masters: pd.DataFrame,
    cursor: str,
    clock: SourceClock | None = None,
) -> None:
    """Load's own checks, typed rows, PDFs and hashes, in place. ``masters``: the canonical frame
    the first units were made of, in order (orphans follow). ``cursor``: the stream's change time
    field; with a ``clock``, a unit whose change time is in the future is held.

    Typing and hashing go column by column (:mod:`hurren.rows`); the loop below only looks up
    each report's results and decodes its PDF."""
    has_pdf = any(f.type == "pdf" for f in master.fields)
    n = len(masters)
    typed = _Typed.of(master, masters)
    # the master's canonical JSON, its PDF as a placeholder
    parts = {name: json_column(_column(masters, name)) for name in master.names if name != "pdf"}
    if has_pdf:
        parts["pdf"] = np.full(n, _PDF_SLOT, dtype=object)
    master_json = json_rows(parts, n)
    rows = list(zip(*typed.columns.values(), strict=True)) if typed.columns else [()] * n
    names = list(typed.columns)
    sub = next((u.sub for u in units if u.sub is not None), None)
    item_fail = np.zeros(0, dtype=bool)
    if sub is not None:
        item_fail = sub.typed.first_fail >= 0
    texts: list[str] = []
    seen: dict[tuple[Any, ...], _Unit] = {}
    key_at = [names.index(store.column_name(master, c)) for c in master.key]
    for i, u in enumerate(units):
        if u.key in holds:
            u.hold = holds[u.key]
        if clock is not None:
            _hold_future(u, master, item, cursor, clock)
        items_json = ",".join(sorted(sub.json[p] for p in u.item_pos)) if sub is not None else ""
        if u.orphan:
            texts.append(f'{{"items":[{items_json}],"master":{{}}}}')
            continue
        typed_ok = not typed.hold(i, u)
        if sub is not None and u.item_pos:
            keys: set[tuple[Any, ...]] = set()
            for p in u.item_pos:  # the first sub-item that fails, as the per-row check found it
                if item_fail[p]:
                    sub.typed.hold(p, u)
                    break
                if sub.key_of[p] in keys:
                    u.add_hold(
                        "unique_key", sub.entity.name, None, f"two {sub.entity.name} rows with the same key"
                    )
                    break
                keys.add(sub.key_of[p])
        pdf_json = "null"
        if has_pdf:
            raw = u.master.get("pdf")
            u.pdf, problem = _decode_pdf(raw)
            if u.pdf is not None:
                pdf_json = encode_basestring(u.pdf.sha256)
            else:
                if raw is not None:
                    pdf_json = encode_basestring(  # surrogatepass: a lone surrogate no longer fails the batch
                        "invalid:" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
                    )
                if u.hold is None or not any(r.get("field") == "pdf" for r in u.hold.rules):
                    text = {"missing": "the PDF is missing", "not_base64": "the PDF is not valid Base64"}
                    u.add_hold(
                        "pdf",
                        master.name,
                        "pdf",
                        text.get(problem or "", "the PDF is not a PDF file"),
                        problem,
                    )
        texts.append(f'{{"items":[{items_json}],"master":{master_json[i].replace(_PDF_SLOT, pdf_json, 1)}}}')
        if not typed_ok:
            continue
        k = tuple(rows[i][j] for j in key_at)
        if k in seen:  # the same key twice in one batch: hold both, neither is the report
            for dup in (seen[k], u):
                if dup.hold is None or not any(r["rule"] == "unique_key" for r in dup.hold.rules):
                    dup.add_hold(
                        "unique_key", master.name, None, f"the same {master.name} key twice in one batch"
                    )
            continue
        seen[k] = u
        row = dict(zip(names, rows[i], strict=True))
        if u.pdf is not None:
            row["pdf_object_key"] = pdf_object_key(
                u.master.get("org_code") or org_code, master.name, u.master["report_form_no"], u.pdf.sha256
            )
            row["pdf_sha256"] = u.pdf.sha256
            row["pdf_size"] = len(u.pdf.data)
        u.typed_master = row
    for u, h in zip(units, sha256_hex(texts), strict=True):
        u.hash = h
        if u.typed_master:
            u.typed_master["etl_content_hash"] = h


def holds_from_verdicts(verdicts: Any) -> dict[str, Hold]:
    """Holds from :mod:`hurren.validation` verdicts: every held record key with the rules it
    broke (``rules_broken``, no values) and its readable reason (``reason``)."""
    return {k: Hold(tuple(verdicts.rules_broken(k)), verdicts.reason(k)) for k in verdicts.held_keys}
