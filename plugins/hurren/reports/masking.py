"""Patient identifiers in reports for analysts: the one place that decides how they are shown.

The fields are the spec's :data:`hurren.spec.PATIENT_IDENTIFIERS` (name, id_no, card_no,
birth_date, PACS PATIENTNAME). A value of one of them is shown only through :func:`mask`, which
gives the same text as the validator's reasons (``hurren.validation.mask``): '张*', '6501**********1234',
'****-**-**'. Pages and exports built here never read any other representation of those fields.

Two more helpers are defence in depth for text that was written elsewhere (a quarantine reason,
a value of a free-text field): :func:`scrub` replaces every occurrence of known identifier values
with their mask, and :func:`find_identifiers` says which known values occur in a text (tests scan
every served page with it). :func:`mask_text` is what the push shows of a platform's own words (an
``error:`` reason, a SOAP fault's text): the report's patient's identifiers scrubbed, and anything
shaped like a resident ID number masked whoever it belongs to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from hurren import spec

IDENTIFIER_FIELDS: frozenset[str] = spec.PATIENT_IDENTIFIERS
"""Fields whose values never reach a page or an export in clear."""

MIN_SCRUB_LENGTH = 2
"""Shorter values are not searched for in free text (a one-character name would match anywhere)."""


def is_identifier(field_name: str | None) -> bool:
    return bool(field_name) and str(field_name) in IDENTIFIER_FIELDS


def mask(field_name: str, value: Any) -> str:
    """A value as a page may show it: masked when ``field_name`` is a patient identifier,
    as text otherwise; missing values as ''."""
    if value is None:
        return ""
    text = str(value)
    if not is_identifier(field_name):
        return text
    return _mask_identifier(field_name, text)


def _mask_identifier(field_name: str, text: str) -> str:
    # the validator's masking, so reasons and pages read alike (imported here: pulls pandas)
    from hurren.validation import mask as validation_mask

    return validation_mask(field_name, text)


def mask_key(entity: spec.Entity, record_key: str) -> dict[str, str]:
    """The record key (``store.record_key`` JSON) as field -> shown value, identifiers masked
    (accept/quote records carry the patient's id_no in their key)."""
    try:
        values = json.loads(record_key)
    except (TypeError, ValueError):
        return {}
    if not isinstance(values, list):
        return {}
    return {k: mask(k, v) for k, v in zip(entity.key, values, strict=False)}


def identifier_values(rows: Iterable[Mapping[str, Any] | None]) -> set[str]:
    """The identifier values present in some source rows (for :func:`scrub`)."""
    found: set[str] = set()
    for row in rows:
        if not row:
            continue
        for k in IDENTIFIER_FIELDS:
            v = row.get(k)
            if v is not None and len(str(v).strip()) >= MIN_SCRUB_LENGTH:
                found.add(str(v).strip())
    return found


def scrub(text: str, values: Iterable[str], *, field_name: str = "id_no") -> str:
    """``text`` with every occurrence of ``values`` (clear identifiers) replaced by a mask.

    Longer values first, so a name inside an ID number's surroundings is not half-replaced.
    ``field_name`` picks the mask for values whose field is unknown (the ID style keeps the
    first and last four characters of long values only)."""
    for v in sorted({v for v in values if v and len(v) >= MIN_SCRUB_LENGTH}, key=len, reverse=True):
        if v in text:
            text = text.replace(v, _mask_unknown(v, field_name))
    return text


def _mask_unknown(value: str, field_name: str) -> str:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return mask("birth_date", value)
    if re.search(r"\d", value):
        return mask(field_name, value)
    return mask("name", value)


ID_SHAPED = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])")
"""An 18-character resident ID number (or a 15-digit first-generation one), by its shape."""


def _birth_inside(number: str) -> bool:
    """Does the number carry a real birth date where an ID number does (GB 11643: characters 7-14;
    a 15-digit one: 7-12, year 19xx)? Report numbers and timestamps mostly do not."""
    digits = number[6:14] if len(number) == 18 else "19" + number[6:12]
    try:
        born = datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        return False
    return 1900 <= born.year <= datetime.now().year


def _spellings(value: Any) -> list[str]:
    """A birth date as people write it (YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD, YYYY年MM月DD日)."""
    day = value if isinstance(value, date) else None
    if day is None:
        try:
            day = date.fromisoformat(str(value).strip()[:10])
        except ValueError:
            return []
    return [day.strftime(f) for f in ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y年%m月%d日")]


def mask_text(text: str | None, rows: Iterable[Mapping[str, Any] | None] = ()) -> str | None:
    """Text a platform wrote (an ``error:`` reason, a fault's text, an answer in the wrong element)
    as a log line, an XCom or a dead-letter listing may show it: the identifiers of ``rows`` (the
    report's or the records' patients: name, id_no, card_no, birth_date in its usual spellings)
    replaced by their masks, and every ID-number-shaped string (with a real birth date inside)
    masked, known or not. The store's ``push_log.answer`` keeps the text as the platform wrote it."""
    if not text:
        return text
    rows = [r for r in rows if r]
    values = identifier_values(rows)
    for row in rows:
        values.update(_spellings(row.get("birth_date")) if row.get("birth_date") is not None else ())
    out = scrub(text, values)
    return ID_SHAPED.sub(lambda m: mask("id_no", m.group()) if _birth_inside(m.group()) else m.group(), out)


def find_identifiers(text: str, values: Iterable[str]) -> list[str]:
    """Which of ``values`` (clear identifiers) occur in ``text``."""
    return sorted(v for v in set(values) if v and v in text)


ID18 = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dX](?![0-9A-Za-z])")
"""Anything shaped like an 18-character resident ID number."""

SCAN_TABLES = ("labmaster", "exammaster", "sehr_accept_record", "sehr_quote_record", "v_web_jcjg")


def database_identifiers(engine: Any, tables: Iterable[str] = SCAN_TABLES) -> tuple[set[str], set[str]]:
    """(identifier values, every other text value) of a source or store database: what a scan
    of produced pages looks for, and what it may legitimately find (a patient's name that is
    also a doctor's name). Tables missing from the database are skipped."""
    from sqlalchemy import MetaData, select

    md = MetaData()
    md.reflect(engine, only=lambda name, _: name in set(tables))
    idents: set[str] = set()
    others: set[str] = set()
    with engine.connect() as conn:
        for t in md.tables.values():
            for row in conn.execute(select(t)).mappings():
                for k, v in row.items():
                    if v is None:
                        continue
                    (idents if k in IDENTIFIER_FIELDS else others).add(str(v))
    return {v for v in idents if len(v) >= MIN_SCRUB_LENGTH}, others


def leaks(text: str, idents: set[str], others: set[str] = frozenset()) -> list[str]:
    """Clear identifiers in a produced text: known values (not counting one that is also some
    other field's value, e.g. a doctor with the patient's name), and anything shaped like an
    18-character ID number."""
    found = [
        v for v in idents
        if v in text and v not in others and not any(v in o for o in others if len(o) < 64)
    ]  # fmt: skip
    return sorted(found) + ID18.findall(text)
