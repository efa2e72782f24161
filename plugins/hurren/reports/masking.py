"""Patient identifiers in reports for analysts: the one place that decides how they are shown.

The fields are the spec's :data:`hurren.spec.PATIENT_IDENTIFIERS` (name, id_no, card_no,
birth_date, PACS PATIENTNAME). A value of one of them is shown only through :func:`mask`, which
gives the same text as the validator's reasons (``hurren.validation.mask``): '张*', '6501**********1234',
'****-**-**'. Pages and exports built here never read any other representation of those fields.

Two more helpers are defence in depth for text that was written elsewhere (a quarantine reason,
a value of a free-text field): :func:`scrub` replaces every occurrence of known identifier values
with their mask, and :func:`find_identifiers` says which known values occur in a text (tests scan
every served page with it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
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


def leaks(text: str, idents: set[str], others: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Clear identifiers in a produced text: known values (not counting one that is also some
    other field's value, e.g. a doctor with the patient's name), and anything shaped like an
    18-character ID number."""
    found = [
        v for v in idents
        if v in text and v not in others and not any(v in o for o in others if len(o) < 64)
    ]  # fmt: skip
    return sorted(found) + ID18.findall(text)
