"""Deliberate, labelled defects: one per chosen unit (report, PACS study, record), never more.

Which units get a defect is decided up front from a stream of its own, so the clean rows of a run
with defects are byte-identical to those of the same run without: a defective run differs from
the clean run only in the rows and fields its labels name. ``expected_rule`` is the id of the
validation rule that must catch the defect (the vocabulary of ``hurren.validation``).

A field a defect may touch is chosen from the spec, not from a list typed here: for ``not_null``,
``length`` and ``xml_chars`` any required text field that is not a key, has no dictionary and no
D-decision, and is not a patient identifier; for ``datetime`` any date/datetime field except the
watermark and ``authenticator_dtime`` (which the D9 sub-item check depends on).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Collection
from dataclasses import asdict, dataclass
from functools import cache
from typing import Literal

from hurren import spec

from .people import id_check_digit
from .reports import Report, Row

__all__ = [
    "DEFECT_KINDS",
    "Label",
    "apply_record_defect",
    "apply_report_defect",
    "apply_study_defect",
    "plan_defects",
]

Unit = Literal["lab", "exam", "pacs", "accept", "quote"]


@dataclass(frozen=True, slots=True)
class Label:
    entity: str
    org_code: str | None
    report_form_no: str | None
    event_no: str | None
    patient_id: str | None
    event_type: str | None
    item_key: str | None
    kind: str
    field: str | None
    expected_rule: str
    row_key: str  # JSON object: the entity's key columns of the defective row, as stored
    detail: str

    def as_row(self, seq: int) -> dict[str, object]:
        return {"seq": seq, **asdict(self)}


# kind -> (unit, entity, expected_rule, description)
_KINDS: dict[str, tuple[Unit, str, str, str]] = {
    "lab_not_null": ("lab", "labmaster", "not_null", "a required text field is NULL"),
    "lab_length": (
        "lab",
        "labmaster",
        "length",
        "Chinese text under the length in characters but over it in UTF-8 bytes",
    ),
    "lab_sex_code": ("lab", "labmaster", "dictionary", "sex_code '7' (not STD_SEX)"),
    "lab_dept_code": (
        "lab",
        "labmaster",
        "dictionary",
        "participant/performer_dept_std_code 'Z99' (not STD_DEPT)",
    ),
    "lab_datetime_impossible": (
        "lab",
        "labmaster",
        "datetime",
        "a date that does not exist, e.g. 2026-02-30 10:00:00",
    ),
    "lab_datetime_format": ("lab", "labmaster", "datetime", "a date in the wrong format, e.g. 2026/11/24"),
    "lab_event_type": ("lab", "labmaster", "number", "event_type 'A' in a NUMBER(2) field"),
    "lab_id_card": ("lab", "labmaster", "id_card", "id_type_code 01 with a wrong GB 11643 check character"),
    "lab_pdf_not_pdf": ("lab", "labmaster", "pdf", "valid Base64 that does not decode to a PDF"),
    "lab_pdf_missing": ("lab", "labmaster", "pdf", "pdf NULL or empty"),
    "lab_xml_chars": (
        "lab",
        "labmaster",
        "xml_chars",
        "a control character (not allowed in XML 1.0) inside a text field",
    ),
    "lab_result_interpre": (
        "lab",
        "lab_subitem",
        "dictionary",
        "result_interpre 'X' (not STD_OBSERVATION_INTERPRET)",
    ),
    "lab_pq_numeric": ("lab", "lab_subitem", "pq_numeric", "result_type PQ with a non-numeric result_value"),
    "lab_limits_order": ("lab", "lab_subitem", "limits_order", "norm_lower_limit > norm_upper_limit"),
    "lab_unique_key": (
        "lab",
        "lab_subitem",
        "unique_key",
        "two sub-items of one report with the same serial_no",
    ),
    "lab_orphan_item": ("lab", "lab_subitem", "orphan_item", "an extra sub-item whose master does not exist"),
    "lab_no_items": ("lab", "labmaster", "no_items", "a master without any sub-items"),
    "exam_not_null": ("exam", "exammaster", "not_null", "a required text field is NULL"),
    "exam_length": (
        "exam",
        "exammaster",
        "length",
        "Chinese text under the length in characters but over it in UTF-8 bytes",
    ),
    "exam_class_code": ("exam", "exammaster", "dictionary", "class_code 'ZZ' (not a Modality code, D4)"),
    "exam_state": ("exam", "exammaster", "dictionary", "state outside 0-4 (ENUM_EXAM_STATE, D12)"),
    "exam_datetime_impossible": ("exam", "exammaster", "datetime", "a date that does not exist"),
    "exam_datetime_format": ("exam", "exammaster", "datetime", "a date in the wrong format"),
    "exam_event_type": ("exam", "exammaster", "number", "event_type 'A' in a NUMBER(2) field"),
    "exam_id_card": (
        "exam",
        "exammaster",
        "id_card",
        "id_type_code 01 with a wrong GB 11643 check character",
    ),
    "exam_pdf_not_pdf": ("exam", "exammaster", "pdf", "valid Base64 that does not decode to a PDF"),
    "exam_pdf_missing": ("exam", "exammaster", "pdf", "pdf NULL or empty"),
    "exam_xml_chars": ("exam", "exammaster", "xml_chars", "a control character inside a text field"),
    "exam_unique_key": (
        "exam",
        "exam_subitem",
        "unique_key",
        "two sub-items of one report with the same exam_item_code",
    ),
    "exam_orphan_item": (
        "exam",
        "exam_subitem",
        "orphan_item",
        "an extra sub-item whose master does not exist",
    ),
    "exam_no_items": ("exam", "exammaster", "no_items", "a master without any sub-items"),
    "pacs_uid_letters": ("pacs", "v_web_jcjg", "uid", "INSTANCESOPIUID with letters (a hex UUID)"),
    "pacs_uid_too_long": ("pacs", "v_web_jcjg", "uid", "SERIESIUID longer than 64 characters"),
    "pacs_sex": ("pacs", "v_web_jcjg", "dictionary", "PATIENTSEX 'X' (not STD_SEX)"),
    "pacs_modality": ("pacs", "v_web_jctj", "dictionary", "MODALITY 'FOO' (not Modality)"),
    "accept_reason_missing": ("accept", "sehr_accept_record", "not_null", "is_accept 2 without a reason"),
    "accept_reason_unknown": (
        "accept",
        "sehr_accept_record",
        "dictionary",
        "is_accept 2 with reason '11' (not STD_REJECT_REASON)",
    ),
    "quote_not_null": ("quote", "sehr_quote_record", "not_null", "a required text field is NULL"),
}

DEFECT_KINDS: dict[str, tuple[str, str, str]] = {k: (e, r, d) for k, (_, e, r, d) in _KINDS.items()}
"""kind -> (entity, expected_rule, description), for tests and docs to enumerate."""

KIND_UNIT: dict[str, Unit] = {k: v[0] for k, v in _KINDS.items()}

_CONTROL = ("\x07", "\x1b", "\x01", "\x08", "\x0b")  # inserted mid-value, so no strip() removes them
_ZH_FILL = "患者自述症状持续数日伴有明显不适感请结合临床病史进一步检查并随访复查"
_NOT_PDF = (
    b"<html><head><title>report</title></head><body>PDF export failed</body></html>",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x00\x00\x00\x02\x00\x08\x06\x00\x00\x00",
    b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00word/document.xml",
)


def plan_defects(
    unit: Unit, n: int, *, rate: float, kinds: Collection[str] | None, seed: int, org: str, day: object
) -> dict[int, str]:
    """Which of the ``n`` units get which defect: exactly ``round(rate * n)`` of them, the kinds
    (of this unit, among ``kinds``) dealt out in turn so each appears once enough units are drawn."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"defect_rate must be between 0 and 1, got {rate}")
    eligible = [k for k, u in KIND_UNIT.items() if u == unit and (kinds is None or k in kinds)]
    count = min(n, round(rate * n))
    if not eligible or count == 0:
        return {}
    rng = random.Random(f"{seed}|{org}|{day}|defects|{unit}|{','.join(eligible)}")
    chosen = sorted(rng.sample(range(n), count))
    rng.shuffle(eligible)
    order = rng.sample(range(count), count)
    return {idx: eligible[order[j] % len(eligible)] for j, idx in enumerate(chosen)}


def check_kinds(kinds: Collection[str] | None) -> None:
    if kinds is None:
        return
    unknown = sorted(set(kinds) - set(_KINDS))
    if unknown:
        raise ValueError(f"unknown defect kind(s) {unknown}; known kinds: {sorted(_KINDS)}")


# -- candidate fields, from the spec -------------------------------------------------------------
@cache
def _plain_text(entity: str) -> tuple[str, ...]:
    ent = spec.entity(entity)
    return tuple(
        f.name
        for f in ent.fields
        if f.type == "text"
        and not f.nullable
        and not f.key
        and f.name not in ent.key
        and not f.dictionary
        and not f.decision
        and f.name not in spec.PATIENT_IDENTIFIERS
    )


@cache
def _time_fields(entity: str) -> tuple[str, ...]:
    skip = {"last_update_dtime", "authenticator_dtime"}
    return tuple(
        f.name for f in spec.entity(entity).fields if f.type in ("date", "datetime") and f.name not in skip
    )


def _key_json(entity: str, row: Row) -> str:
    return json.dumps({k: row.get(k) for k in spec.entity(entity).key}, ensure_ascii=False)


# -- reports -------------------------------------------------------------------------------
def apply_report_defect(kind: str, rep: Report, rng: random.Random) -> Label:
    """Inject defect ``kind`` into ``rep`` (in place) and return its label."""
    unit, entity, rule, descr = _KINDS[kind]
    if unit != rep.kind:
        raise ValueError(f"defect {kind} is for {unit} reports, not {rep.kind}")
    m = rep.master
    target: Row = m
    field: str | None
    detail = descr
    suffix = kind.split("_", 1)[1]
    if suffix == "not_null":
        field = rng.choice(_plain_text(rep.entity))
        m[field] = None
    elif suffix == "length":
        field = rng.choice(
            [f for f in _plain_text(rep.entity) if (spec.entity(rep.entity).field(f).length or 0) >= 64]
        )
        length = spec.entity(rep.entity).field(field).length or 0
        chars = length // 3 + 1 + rng.randrange(6)
        m[field] = (_ZH_FILL * (chars // len(_ZH_FILL) + 1))[:chars]
        detail = f"{chars} characters, {chars * 3} UTF-8 bytes > {length}"
    elif kind == "lab_sex_code":
        field, m["sex_code"] = "sex_code", "7"
    elif kind == "lab_dept_code":
        field = rng.choice(("participant_dept_std_code", "performer_dept_std_code"))
        m[field] = "Z99"
    elif kind == "exam_class_code":
        field, m["class_code"] = "class_code", "ZZ"
    elif kind == "exam_state":
        field, m["state"] = "state", rng.choice(("5", "7", "9"))
    elif suffix == "datetime_impossible":
        field = rng.choice(_time_fields(rep.entity))
        old = m[field] or "2026-01-01 00:00:00"
        bad = rng.choice(("{y}-02-30", "{y}-04-31", "{y}-13-01")).format(y=old[:4])
        m[field] = bad + old[10:]
    elif suffix == "datetime_format":
        field = rng.choice(_time_fields(rep.entity))
        old = m[field] or "2026-01-01 00:00:00"
        m[field] = old.replace("-", "/")
    elif suffix == "event_type":
        field, m["event_type"] = "event_type", "A"
    elif suffix == "id_card":
        field = "id_no"
        if m["id_type_code"] != "01" or len(m["id_no"] or "") != 18:
            m["id_type_code"] = "01"
            first17 = f"650102{rng.randrange(1950, 2020)}0101{rng.randrange(100, 1000)}"
            m["id_no"] = first17 + id_check_digit(first17)
            detail = descr + " (id_type_code set to 01 as well)"
        good = id_check_digit(m["id_no"][:17])
        m["id_no"] = m["id_no"][:17] + rng.choice([c for c in "0123456789X" if c != good])
    elif suffix == "pdf_not_pdf":
        field = "pdf"
        m["pdf"] = base64.b64encode(rng.choice(_NOT_PDF)).decode("ascii")
    elif suffix == "pdf_missing":
        field = "pdf"
        m["pdf"] = rng.choice((None, ""))
        detail = f"pdf {'NULL' if m['pdf'] is None else 'empty'}"
    elif suffix == "xml_chars":
        field = rng.choice([f for f in _plain_text(rep.entity) if len(m[f] or "") >= 2])
        pos = rng.randrange(1, len(m[field]))
        ch = rng.choice(_CONTROL)
        m[field] = m[field][:pos] + ch + m[field][pos:]
        detail = f"U+{ord(ch):04X} at character {pos}"
    elif kind == "lab_result_interpre":
        target = rng.choice(rep.items)
        field, target["result_interpre"] = "result_interpre", "X"
    elif kind == "lab_pq_numeric":
        target = rng.choice([it for it in rep.items if it["result_type"] == "PQ"])
        field, target["result_value"] = "result_value", rng.choice(("阴性", "未检出", "见备注"))
    elif kind == "lab_limits_order":
        target = rng.choice([it for it in rep.items if it["norm_lower_limit"] and it["norm_upper_limit"]])
        field = "norm_lower_limit"
        target["norm_lower_limit"], target["norm_upper_limit"] = (
            target["norm_upper_limit"],
            target["norm_lower_limit"],
        )
    elif suffix == "unique_key":
        src = rng.choice(rep.items)
        dup = dict(src)
        if rep.kind == "lab":
            dup["examine_way"] = "复检"
        else:
            dup["body_part_name"] = src["body_part_name"] + "(复)"
        rep.items.insert(rep.items.index(src) + 1, dup)
        target, field = dup, rep.item_key_field
    elif suffix == "orphan_item":
        orphan = dict(rng.choice(rep.items))
        rfn = m["report_form_no"]
        orphan["report_form_no"] = rfn[:6] + ("3" if rep.kind == "lab" else "4") + rfn[7:]
        rep.items.append(orphan)
        return _item_label(kind, rep, orphan, None, descr, master=False)
    elif suffix == "no_items":
        field = None
        detail = f"{len(rep.items)} sub-items withheld"
        rep.items.clear()
        return _label(kind, entity, m, m, None, None, detail)
    else:  # pragma: no cover - every kind above is handled
        raise ValueError(f"no injector for {kind}")
    if target is m:
        return _label(kind, entity, m, m, None, field, detail)
    return _item_label(kind, rep, target, field, detail)


def _label(
    kind: str, entity: str, master: Row, row: Row, item_key: str | None, field: str | None, detail: str
) -> Label:
    return Label(
        entity=entity,
        org_code=master.get("org_code"),
        report_form_no=master.get("report_form_no"),
        event_no=master.get("event_no"),
        patient_id=master.get("patient_id"),
        event_type=master.get("event_type"),
        item_key=item_key,
        kind=kind,
        field=field,
        expected_rule=_KINDS[kind][2],
        row_key=_key_json(entity, row),
        detail=detail,
    )


def _item_label(
    kind: str, rep: Report, item: Row, field: str | None, detail: str, *, master: bool = True
) -> Label:
    """A sub-item's label: the report's key (or, for an orphan, only what the orphan carries)."""
    m = rep.master if master else {k: item[k] for k in ("org_code", "report_form_no", "event_no")}
    return _label(kind, rep.item_entity, m, item, item[rep.item_key_field], field, detail)


# -- PACS studies ----------------------------------------------------------------------------
def apply_study_defect(kind: str, rep: Report, rng: random.Random) -> Label:
    """Inject a PACS defect into the study of exam report ``rep``."""
    unit, entity, rule, descr = _KINDS[kind]
    if unit != "pacs" or rep.study is None:
        raise ValueError(f"defect {kind} is not a PACS defect, or the report has no study")
    if kind == "pacs_modality":
        row, field = rep.study, "MODALITY"
        row["MODALITY"] = "FOO"
    else:
        row = rng.choice(rep.instances)
        if kind == "pacs_uid_letters":
            field = "INSTANCESOPIUID"
            row[field] = f"2.25.a{rng.getrandbits(124):031x}"
        elif kind == "pacs_uid_too_long":
            field = "SERIESIUID"
            row[field] = (
                row[field] + "." + "".join(rng.choice("123456789") for _ in range(70 - len(row[field])))
            )
        else:
            field, row["PATIENTSEX"] = "PATIENTSEX", "X"
    key = spec.entity(entity).key[0]
    return Label(
        entity=entity,
        org_code=row["INSTITUTIONCODE"],
        report_form_no=rep.master["report_form_no"],
        event_no=rep.master["event_no"],
        patient_id=row["PATIENT_ID"],
        event_type=None,
        item_key=row[key],
        kind=kind,
        field=field,
        expected_rule=rule,
        row_key=_key_json(entity, row),
        detail=f"{descr}; ACCESS_NO {row['ACCESS_NO']}",
    )


# -- records ---------------------------------------------------------------------------------
def apply_record_defect(kind: str, row: Row, rng: random.Random, *, org_code: str) -> Label:
    """Inject a defect into an accept/quote record written by hospital ``org_code``."""
    unit, entity, rule, descr = _KINDS[kind]
    if kind == "accept_reason_missing":
        field, row["is_accept"], row["reason"] = "reason", "2", None
    elif kind == "accept_reason_unknown":
        field, row["is_accept"], row["reason"] = "reason", "2", "11"
    elif kind == "quote_not_null":
        field = rng.choice(_plain_text(entity))
        row[field] = None
    else:
        raise ValueError(f"defect {kind} is not a record defect")
    return Label(
        entity=entity,
        org_code=org_code,
        report_form_no=row["hr_report_form_no"],
        event_no=row["new_event_no"],
        patient_id=None,
        event_type=row["new_event_type"],
        item_key=row["code"],
        kind=kind,
        field=field,
        expected_rule=rule,
        row_key=_key_json(entity, row),
        detail=descr,
    )
