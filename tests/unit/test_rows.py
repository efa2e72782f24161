"""The loader's column-wise typing and hashing against the per-row reference (``hurren.rows``).

A stored report's ``etl_content_hash`` is the version the outbox pushes: if the vectorised hash
differed from :func:`hurren.rows.content_hash` in one byte for one row, every such report would
look changed and be pushed again. These properties generate frames of hostile strings (quotes,
backslashes, control characters, lone surrogates, non-BMP characters, placeholder-like values)
and malformed typed values, and compare each report's hash, each typed value and each sub-item's
row hash with the per-row functions.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hurren import load, rows, spec, store
from hurren.extract import canonical_frame

LAB, ITEM, PACS = spec.entity("labmaster"), spec.entity("lab_subitem"), spec.entity("v_web_jcjg")

HOSTILE = st.sampled_from(
    ['"', "\\", '\\"', "\x00", "\x01", "\x1f", "\x7f", "\n\r\t\b\f", "\ud800", "\udfff", "\U0001f600",
     "𠀀", "é", "\u2028", "\ufeff", "null", "{}", "[]", ",", ":", "", " ", "%PDF-"]
)  # fmt: skip
TEXT = st.one_of(
    st.none(),
    st.text(max_size=12),  # surrogates and every other code point included
    st.lists(HOSTILE, max_size=4).map("".join),
)
DATETIME = st.one_of(
    TEXT,
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
    st.sampled_from(
        [
            "2024-02-30 10:00:00",
            "2024-03-11T09:29:00",
            "٢٠٢٤-03-11 09:29:00",
            "9999-12-31 23:59:59",
            "2024-03-11 09:29:00+08:00",
            "2024-03-11 09:29:00.5",
            "2024-03-11 24:00:00",
            "2024-03-11 09:29:00\n",
        ]
    ),
)
NUMBER = st.one_of(
    TEXT,
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(["01", "-0", "٣", "²", "1.0", "-", "1_000", "12 ", " 12", "+5", "12\n"]),
)
DATE = st.one_of(DATETIME, st.dates().map(str))
PDF = st.one_of(
    st.none(),
    TEXT,
    st.binary(max_size=40).map(lambda b: base64.b64encode(b"%PDF-" + b).decode()),
    st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
)


def _value(f: spec.Field) -> st.SearchStrategy[str | None]:
    return {"datetime": DATETIME, "date": DATE, "number": NUMBER, "pdf": PDF}.get(f.type, TEXT)


def _row(entity: spec.Entity, fixed: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({f.name: fixed.get(f.name, _value(f)) for f in entity.fields})


FORMS = st.sampled_from(["R1", "R2", "R3", None, '"R"'])  # few numbers: sub-items meet their masters
REPORT_KEYS = {"org_code": st.sampled_from(["457759922", None]), "report_form_no": FORMS}


def _frame(entity: spec.Entity, records: list[dict]) -> pd.DataFrame:
    return canonical_frame([tuple(r[n] for n in entity.names) for r in records], entity.names)


def _prepared(
    entity: spec.Entity, item: spec.Entity | None, masters: pd.DataFrame, items: pd.DataFrame | None
):
    units = load._units(entity, item, masters, items)
    load._prepare(units, entity, item, {}, "457759922", masters=masters, cursor=entity.names[0])
    return units


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    st.lists(_row(LAB, REPORT_KEYS), max_size=6),
    st.lists(_row(ITEM, REPORT_KEYS | {"serial_no": st.sampled_from(["1", "2", "01", None])}), max_size=12),
)
def test_report_hashes_are_the_per_row_ones(masters: list[dict], items: list[dict]) -> None:
    units = _prepared(LAB, ITEM, _frame(LAB, masters), _frame(ITEM, items))
    assert sum(len(u.item_pos) for u in units) == len(items)  # every sub-item in exactly one unit
    for u in units:
        pdf = u.pdf.sha256 if u.pdf else None
        if not u.orphan and pdf is None and u.master.get("pdf") is not None:
            pdf = (
                "invalid:"
                + __import__("hashlib").sha256(u.master["pdf"].encode("utf-8", "surrogatepass")).hexdigest()
            )
        assert u.hash == rows.content_hash(u.master, u.items, pdf)
        if not u.orphan:
            assert u.key == store.record_key(LAB, u.master)
        if u.typed_master:  # typed only when every field converts: each as the per-row function types it
            for column, f in load.units._stored_fields(LAB):
                assert u.typed_master[column] == rows.to_store_value(f, u.master.get(f.name)), column
            assert u.typed_master["etl_content_hash"] == u.hash


CLEAN = {  # values that type: most rows of a batch
    "datetime": st.one_of(st.none(), st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S"))),
    "date": st.one_of(
        st.none(), st.dates().map(str), st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S"))
    ),
    "number": st.one_of(
        st.none(), st.integers(-(10**12), 10**12).map(str), st.sampled_from(["01", "-0", "٣"])
    ),
}
CLEAN_ITEM = st.fixed_dictionaries(
    {f.name: (st.text(min_size=1, max_size=6) if f.key and f.type == "text" else CLEAN.get(f.type, TEXT))
     for f in ITEM.fields}
    | {"org_code": st.just("457759922"), "serial_no": st.integers(0, 99).map(str)}
)  # fmt: skip
_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def _copy_rows(text: bytes) -> list[list[str | None]]:
    """COPY's text format read back as PostgreSQL reads it: tab-separated, ``\\N`` null, backslash escapes."""
    lines = text.decode("utf-8").split("\n")
    assert lines.pop() == ""
    return [
        [
            None if v == "\\N" else re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], v)
            for v in line.split("\t")
        ]
        for line in lines
    ]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(st.one_of(_row(ITEM, REPORT_KEYS), CLEAN_ITEM), max_size=10))
def test_sub_item_typing_row_hashes_and_copy_text_are_the_per_row_ones(items: list[dict]) -> None:
    """Typed as :func:`hurren.rows.to_store_value` types each value; the rows written hashed as
    :func:`hurren.rows.row_hash` hashes them and sent to COPY as their typed values (by Arrow,
    unless a lone surrogate keeps the batch out of Arrow: row by row then)."""
    sub = load.units._Items(ITEM, _frame(ITEM, items))
    clean, references = [], []
    for pos, record in enumerate(items):
        reference: dict = {}
        failed = None
        for column, f in load.units._stored_fields(ITEM):
            try:
                reference[column] = rows.to_store_value(f, record[f.name])
            except ValueError:
                failed = failed or "bad"
                continue
            if f.key and reference[column] is None:
                failed = failed or "null"
        assert (sub.typed.first_fail[pos] >= 0) == (failed is not None)
        if failed is None:
            clean.append(pos)
            references.append(reference)
    names, columns, text = sub.store_rows(clean, "run-1")
    surrogate = any(isinstance(v, str) and re.search("[\ud800-\udfff]", v) for r in items for v in r.values())
    assert (text is None) == surrogate
    got = [dict(zip(names, r, strict=True)) for r in zip(*columns, strict=True)]
    assert [{c: row[c] for c in ref} for row, ref in zip(got, references, strict=True)] == references
    assert [row["etl_content_hash"] for row in got] == [rows.row_hash(ref) for ref in references]
    if text is not None:
        assert _copy_rows(text) == [[None if v is None else str(v) for v in row.values()] for row in got]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(_row(PACS, {}), max_size=8))
def test_record_hashes_are_the_per_row_ones(records: list[dict]) -> None:
    for u in _prepared(PACS, None, _frame(PACS, records), None):
        assert u.hash == rows.content_hash(u.master)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(_row(PACS, {}), max_size=8))
def test_the_column_wise_record_hashes_are_the_per_row_ones(records: list[dict]) -> None:
    """The PACS load hashes a batch by Arrow (``rows.record_hashes``), or, where Arrow cannot hold a
    value (a lone surrogate), through ``json_column``: the same hash as ``content_hash`` either way."""
    frame = _frame(PACS, records)
    assert load.records.content_hashes(PACS, frame) == [rows.content_hash(r) for r in records]
    columns = {f: frame[f].to_numpy(dtype=object) for f in PACS.names}
    surrogate = any(
        isinstance(v, str) and re.search("[\ud800-\udfff]", v) for r in records for v in r.values()
    )
    assert (rows.record_hashes(columns, len(frame)) is None) == surrogate


def _reference(f: spec.Field, v: str | None) -> object:
    try:
        return rows.to_store_value(f, v)
    except (ValueError, TypeError, AttributeError):
        return rows.BAD


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_typed_column_is_to_store_value_of_each_value(data: st.DataObject) -> None:
    """The loader types whole columns: the same values, of the same types, as ``to_store_value``
    gives each (near misses of the strict forms included), and BAD exactly where it fails."""
    f = data.draw(
        st.sampled_from(
            [f for e in (LAB, PACS) for f in e.fields if f.type in ("datetime", "date", "number")]
        )
    )
    values = data.draw(st.lists(_value(f), max_size=12))
    typed, bad = rows.typed_column(f, pd.Series(values, dtype=object))
    reference = [_reference(f, v) for v in values]
    assert [(type(t), t) for t in typed] == [(type(r), r) for r in reference]
    assert bad.tolist() == [r is rows.BAD for r in reference]


def test_a_surrogate_and_a_non_bmp_character_hash_as_before() -> None:
    """A fixed value (hashed by main before this change), so a change of the definition itself is caught too."""
    master = {n: None for n in PACS.names} | {"FILEPATH": 'a"\\\ud800\U0001f600\x01'}
    assert rows.content_hash(master) == "4222732854f6581d6fec7832e64eb720c0b90e0642c839eca0d73267fd5c9434"
    assert _prepared(PACS, None, _frame(PACS, [master]), None)[0].hash == rows.content_hash(master)


def test_json_column_handles_missing_values_as_null() -> None:
    values = pd.Series(["a", None, float("nan"), pd.NA], dtype=object)
    assert list(rows.json_column(values)) == ['"a"', "null", "null", "null"]
    assert list(
        rows.json_rows({"b": np.array(['"x"'], dtype=object), "a": np.array(["null"], dtype=object)}, 1)
    ) == ['{"a":null,"b":"x"}']
    assert store.record_key(PACS, {k: "1" for k in PACS.key})  # the record key is still per row
