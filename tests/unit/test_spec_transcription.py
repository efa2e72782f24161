"""Our spec data (include/spec, include/dictionaries) against the spec's own text.

Every field, type, nullability, key mark and dictionary code is compared with an independent
parse of the Chinese original (tests/spec_text.py); departures are allowed only where the field
names a decision of docs/spec-decisions.md. The tests marked ``spec_text`` need that text
(``../shared/spec`` or ``$HURREN_SPEC_TEXT``): without it they are skipped, saying so, and in CI
(``HURREN_REQUIRE_SPEC_TEXT=1``, set by ``.ci/run``) they fail (``tests/conftest.py``).
"""

from __future__ import annotations

import re

import pytest

from hurren import spec
from tests import spec_text

DECISIONS_DOC = (spec.INCLUDE.parent / "docs" / "spec-decisions.md").read_text(encoding="utf-8")

# Dictionaries the spec names in words (a field's note) rather than in its dictionary column.
DICTIONARIES_IN_WORDS = {
    ("lab_subitem", "recognition"): "STD_LAB_EXAM_RECOGNITION",  # 1:可互认,0:不可互认
    ("exam_subitem", "recognition"): "STD_LAB_EXAM_RECOGNITION",
    ("exammaster", "checked_status"): "ENUM_CHECKED_STATUS",  # 1: 是; 0: 否
    ("exammaster", "is_abnormal"): "ENUM_IS_ABNORMAL",  # 1: 正常, 0: 异常
    ("exammaster", "state"): "ENUM_EXAM_STATE",  # 0=登记完成 … 4=修订完成
    ("sehr_accept_record", "is_accept"): "ENUM_IS_ACCEPT",  # 1 采纳, 2 不采纳
    ("sehr_accept_record", "type"): "ENUM_RECORD_TYPE",  # 1 检查, 2 检验
    ("sehr_quote_record", "type"): "ENUM_RECORD_TYPE",
    ("v_web_jcjg", "PATIENTSEX"): "STD_SEX",  # GB/T2261.1-2003
    ("v_web_jcjg", "MODALITY"): "Modality",  # 检查设备
    ("v_web_jctj", "MODALITY"): "Modality",
}

ENTITIES = sorted(spec_text.ENTITY_SECTIONS)
needs_spec_text = pytest.mark.spec_text


def _spec_dictionary(entity: str, row: spec_text.SpecRow) -> str | None:
    if (entity, row.name) in DICTIONARIES_IN_WORDS:
        return DICTIONARIES_IN_WORDS[entity, row.name]
    return row.dictionary if row.dictionary.startswith("STD_") else None


@needs_spec_text
@pytest.mark.parametrize("entity", ENTITIES)
def test_every_field_is_transcribed_in_order(entity):
    ours = spec.entity(entity)
    theirs = spec_text.entity_rows(entity)
    assert len(theirs) > 5, "the spec parser found no table: section headings moved?"
    # D2: the table's 'Pdf' is sent as 'pdf'; every other name is exactly the spec's.
    assert [f.name for f in ours.fields] == ["pdf" if r.name == "Pdf" else r.name for r in theirs]
    assert [f.zh_name for f in ours.fields] == [r.zh_name for r in theirs]
    assert [f.spec_type for f in ours.fields] == [r.type for r in theirs]


@needs_spec_text
@pytest.mark.parametrize("entity", ENTITIES)
def test_types_lengths_nullability_keys_and_dictionaries(entity):
    for f, row in zip(spec.entity(entity).fields, spec_text.entity_rows(entity), strict=True):
        where = f"{entity}.{f.name}"
        departs = f.decision is not None
        m = re.fullmatch(r"(?i)(VARCHAR2|varchar|CHAR|NUMBER)\((\d+)\)", row.type)
        if m and not departs:
            assert f.length == int(m.group(2)), where
            assert f.type == ("number" if m.group(1).upper() == "NUMBER" else "text"), where
        if row.type in ("DATE", "datetime", "Date") and not departs:
            with_time = "hh24" in row.note or "HH:mm" in row.note or row.type != "DATE"
            assert f.type == ("datetime" if with_time else "date"), where
        if not departs:
            assert f.nullable == (row.nullable == "Yes"), where
            assert f.dictionary == _spec_dictionary(entity, row), where
        assert f.key == ("主键" in row.note), where


def test_every_decision_named_in_a_table_is_documented():
    used = {f.decision for e in spec.entities().values() for f in e.fields if f.decision}
    assert used, "no decision used at all: the decision column was lost?"
    for d in sorted(used):
        assert re.search(rf"^\| {d} \|", DECISIONS_DOC, flags=re.M), f"{d} is not in docs/spec-decisions.md"


@needs_spec_text
def test_decisions_cover_every_contradiction_listed_with_the_spec():
    readme = (spec_text.spec_path().parent / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^(\d+)\. ", readme.split("disagrees with itself")[1], flags=re.M)
    documented = re.findall(r"^\| D(\d+) \|", DECISIONS_DOC, flags=re.M)
    assert len(listed) == 14
    assert set(listed) <= set(documented)


SPEC_DICTIONARIES = [
    "STD_EVENT_TYPE",
    "STD_SEX",
    "STD_ID_TYPE",
    "STD_PRIORITY",
    "STD_DEPT",
    "STD_SPECIMEN_DETERMINER",
    "STD_OBSERVATION_TYPE",
    "STD_OBSERVATION_INTERPRET",
    "STD_LAB_EXAM_RECOGNITION",
]


@needs_spec_text
@pytest.mark.parametrize("name", SPEC_DICTIONARIES)
def test_appendix_dictionary_codes_and_names(name):
    theirs = spec_text.dictionary_rows(name)
    assert theirs, f"{name} not found in the spec text"
    assert list(spec.dictionary(name).codes.items()) == theirs


@needs_spec_text
def test_std_dept_is_complete_with_its_hierarchy():
    dept = spec.dictionary("STD_DEPT")
    assert len(dept) == len(spec_text.dictionary_rows("STD_DEPT")) == 174
    assert dept.parents["A04.01.01"] == "A04.01"
    assert dept.parents["A04.01"] == "A04"
    assert "A04" not in dept.parents
    for code, parent in dept.parents.items():
        assert code.startswith(parent + "."), code


@needs_spec_text
@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("Modality", "3.12 设备类型", "3.13 不予互认理由字典"),
        ("STD_REJECT_REASON", "3.13 不予互认理由字典", None),
    ],
)
def test_two_column_appendix_tables(name, start, end):
    theirs = spec_text.table_rows(start, end)
    assert len(theirs) == {"Modality": 20, "STD_REJECT_REASON": 10}[name]
    assert list(spec.dictionary(name).codes.items()) == theirs


@needs_spec_text
@pytest.mark.parametrize(
    ("entity", "field_name"),
    [(e, f) for (e, f), d in DICTIONARIES_IN_WORDS.items() if d.startswith("ENUM_")],
)
def test_inline_enumerations_match_the_note_they_come_from(entity, field_name):
    row = next(r for r in spec_text.entity_rows(entity) if r.name == field_name)
    text = row.note + row.dictionary
    for code, label in spec.dictionary(spec.entity(entity).field(field_name).dictionary).codes.items():
        assert re.search(rf"{code}\s*[=:：]?\s*{label}", text), f"{code} {label} not in {text!r}"


def test_open_lists_are_open_until_a_site_supplies_them(tmp_path, monkeypatch):
    assert "ANY-CODE" in spec.dictionary("STD_LOINC_CLASS")
    (tmp_path / "STD_LOINC_CLASS.tsv").write_text("code\tname\n250301002\t白蛋白(ALB)\n", encoding="utf-8")
    monkeypatch.setenv("HURREN_SITE_DICTIONARIES", str(tmp_path))
    spec.dictionaries.cache_clear()
    try:
        loinc = spec.dictionary("STD_LOINC_CLASS")
        assert "250301002" in loinc
        assert "ANY-CODE" not in loinc
    finally:
        monkeypatch.delenv("HURREN_SITE_DICTIONARIES")
        spec.dictionaries.cache_clear()


@needs_spec_text
@pytest.mark.parametrize("name", sorted(spec_text.FILTER_SECTIONS))
def test_filters(name):
    assert ["root", *spec.filters()[name].elements] == spec_text.filter_rows(name)


def test_patient_identifiers_are_fields():
    names = {f.name for e in spec.entities().values() for f in e.fields}
    assert spec.PATIENT_IDENTIFIERS <= names
