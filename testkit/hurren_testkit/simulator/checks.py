"""The simulator's checks of a received payload, derived from the field specs and dictionaries.

A check yields :class:`Problem` s; the simulator answers ``error:`` with the first few. Messages
name the entity, the record's index, the field and what is wrong; a value is shown only when it is
not a patient identifier (``spec.PATIENT_IDENTIFIERS``) and then cut short.

Checks: attribute known (the alternative spellings of D2 are read as ours); not null; VARCHAR2
length in bytes of the configured encoding (D14); NUMBER(n) whole number of at most n digits;
``YYYY-MM-DD`` / ``YYYY-MM-DD HH:MM:SS`` real dates (D1 per ``retrieve_date_format``);
dictionary membership (open lists accept any code; the Modality check follows D4); a PDF is
Base64 of something starting with ``%PDF-``; an accept record with ``is_accept=2`` has a
``reason``; sub-items belong to a master of the same payload; no two records share a key.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from hurren import spec

__all__ = ["Problem", "check_records", "check_report", "shown"]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_NUMBER = re.compile(r"-?(\d+)")


@dataclass(frozen=True, slots=True)
class Problem:
    entity: str
    index: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.entity if self.index is None else f"{self.entity}[{self.index}]"
        return f"{where}.{self.field}: {self.message}" if self.field else f"{where}: {self.message}"


EXTRA_ATTRIBUTES: dict[str, frozenset[str]] = {"exammaster": frozenset({"patient_local_id"})}
"""Attributes a registration may carry beyond the field table: the spec's exam example sends
``patient_local_id`` (line ~296), its exammaster table has no such field (D22)."""


def shown(name: str, value: str) -> str:
    """A value for an error message: hidden for patient identifiers, cut short otherwise."""
    if name in spec.PATIENT_IDENTIFIERS:
        return "<hidden>"
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _dictionary_of(entity: spec.Entity, fld: spec.Field, options: spec.SpecOptions) -> str | None:
    if entity.name == "exammaster" and options.exam_modality_field == "class_name":  # D4, other reading
        if fld.name == "class_code":
            return None
        if fld.name == "class_name":
            return "Modality"
    return fld.dictionary


def _valid_datetime(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def _check_value(entity: spec.Entity, fld: spec.Field, value: str, options: spec.SpecOptions) -> str | None:
    kind = fld.type
    if kind == "date" and fld.name == "retrieve_date" and options.retrieve_date_format == "datetime":
        kind = "datetime"
    if kind == "text" or kind == "uid":
        size = options.measured_length(value)
        if fld.length is not None and size > fld.length:
            unit = (
                "characters" if options.length_semantics == "char" else f"bytes of {options.length_encoding}"
            )
            return f"{size} {unit} exceeds {fld.spec_type or 'the limit'} ({fld.length}, D14)"
    elif kind == "number":
        match = _NUMBER.fullmatch(value)
        if not match:
            return f"{shown(fld.name, value)} is not a whole number ({fld.spec_type})"
        if fld.length is not None and len(match.group(1)) > fld.length:
            return f"{len(match.group(1))} digits exceed NUMBER({fld.length})"
    elif kind == "date":
        if not (_DATE.fullmatch(value) and _valid_datetime(value, spec.DATE_FORMAT)):
            return f"{shown(fld.name, value)} is not a date YYYY-MM-DD"
    elif kind == "datetime":
        if not (_DATETIME.fullmatch(value) and _valid_datetime(value, spec.DATETIME_FORMAT)):
            return f"{shown(fld.name, value)} is not a datetime YYYY-MM-DD HH:MM:SS"
    elif kind == "pdf":
        return _check_pdf(value)
    dictionary = _dictionary_of(entity, fld, options)
    if dictionary and value not in spec.dictionary(dictionary):
        return f"code {shown(fld.name, value)} is not in {dictionary}"
    return None


def decode_pdf(value: str) -> bytes | None:
    """The PDF's bytes from strict Base64 (MIME line breaks tolerated), or None when it is not Base64."""
    if "\n" in value or "\r" in value:  # a scan only when needed: the text is ~170 KB
        value = value.replace("\r", "").replace("\n", "")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _check_pdf(value: str) -> str | None:
    data = decode_pdf(value)
    if data is None:
        return "is not valid Base64 (the PDF's bytes, Base64-encoded, are expected)"
    if not data.startswith(b"%PDF-"):
        return "is not a PDF (the decoded bytes do not start with %PDF-)"
    return None


def check_record(
    entity: spec.Entity,
    record: Mapping[str, str],
    *,
    index: int | None,
    options: spec.SpecOptions,
    strict: bool = True,
) -> list[Problem]:
    """Every problem of one record (attribute name → text) against its entity's fields."""
    problems: list[Problem] = []
    known = set(entity.names) | EXTRA_ATTRIBUTES.get(entity.name, frozenset())
    if strict:
        for name in record:
            if name not in known and name != "items":
                problems.append(
                    Problem(entity.name, index, name, "unknown attribute (not in the spec's field table)")
                )
    for fld in entity.fields:
        value = record.get(fld.name)
        if value is None or value == "":
            if not fld.nullable:
                problems.append(
                    Problem(
                        entity.name,
                        index,
                        fld.name,
                        "is missing" if value is None else "is empty but required",
                    )
                )
            continue
        message = _check_value(entity, fld, value, options)
        if message:
            problems.append(Problem(entity.name, index, fld.name, message))
    if entity.name == "sehr_accept_record" and record.get("is_accept") == "2" and not record.get("reason"):
        problems.append(
            Problem(entity.name, index, "reason", "is required when is_accept is 2 (STD_REJECT_REASON)")
        )
    return problems


def _key(entity: spec.Entity, record: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(record.get(k, "") for k in entity.key)


def check_records(
    entity: spec.Entity,
    records: Sequence[Mapping[str, str]],
    *,
    options: spec.SpecOptions,
    strict: bool = True,
) -> list[Problem]:
    """Each record, then duplicate keys within the payload."""
    problems: list[Problem] = []
    seen: dict[tuple[str, ...], int] = {}
    for index, record in enumerate(records):
        problems += check_record(entity, record, index=index, options=options, strict=strict)
        key = _key(entity, record)
        if key in seen:
            problems.append(
                Problem(entity.name, index, None, f"same key ({', '.join(entity.key)}) as record {seen[key]}")
            )
        else:
            seen[key] = index
    return problems


def check_report(
    master_entity: spec.Entity,
    masters: Sequence[Mapping[str, str]],
    item_entity: spec.Entity,
    items: Sequence[Mapping[str, str]],
    *,
    options: spec.SpecOptions,
    strict: bool = True,
) -> list[Problem]:
    """A registration payload: masters and items, and every item belongs to one of the masters."""
    problems = check_records(master_entity, masters, options=options, strict=strict)
    if not masters:
        problems.append(
            Problem(master_entity.name, None, None, "no report in the payload (an <item> is required)")
        )
    problems += check_records(item_entity, items, options=options, strict=strict)
    shared = [k for k in item_entity.key if k in master_entity.key]
    owners = {tuple(m.get(k, "") for k in shared) for m in masters}
    for index, item in enumerate(items):
        if tuple(item.get(k, "") for k in shared) not in owners:
            problems.append(
                Problem(
                    item_entity.name,
                    index,
                    None,
                    f"belongs to no {master_entity.name} of this payload ({', '.join(shared)})",
                )
            )
    return problems


def effective_drift(
    masters: Iterable[Mapping[str, str]], items: Iterable[Mapping[str, str]], tolerance_s: int
) -> int:
    """D9: how many sub-items' effective_dtime differ from their master's authenticator_dtime by more than the tolerance."""
    times = {}
    for m in masters:
        try:
            times[(m.get("org_code"), m.get("event_no"), m.get("report_form_no"))] = datetime.strptime(
                m.get("authenticator_dtime", ""), spec.DATETIME_FORMAT
            )
        except ValueError:
            continue
    drift = 0
    for item in items:
        at = times.get((item.get("org_code"), item.get("event_no"), item.get("report_form_no")))
        try:
            own = datetime.strptime(item.get("effective_dtime", ""), spec.DATETIME_FORMAT)
        except ValueError:
            continue
        if at is not None and abs((own - at).total_seconds()) > tolerance_s:
            drift += 1
    return drift
