"""How patient identifiers appear in the analysts' reports: masked, the same way as in reasons."""

from __future__ import annotations

import json

import pytest

from hurren import spec, validation
from hurren.reports import masking

CASES = [
    ("name", "张三丰"),
    ("name", "阿依古丽·买买提"),
    ("PATIENTNAME", "李四"),
    ("id_no", "650102198001010016"),
    ("card_no", "K55297388"),
    ("card_no", "AD93299021234"),
    ("birth_date", "1980-01-01"),
]


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}-{len(v)}" for f, v in CASES])
def test_identifiers_are_masked_as_the_validator_masks_them(field, value):
    shown = masking.mask(field, value)
    assert shown == validation.mask(field, value)
    assert shown != value and value not in shown


def test_every_identifier_field_of_the_spec_is_covered():
    assert masking.IDENTIFIER_FIELDS == spec.PATIENT_IDENTIFIERS
    for f in spec.PATIENT_IDENTIFIERS:
        assert masking.is_identifier(f)


@pytest.mark.parametrize("field", ["report_form_no", "event_no", "org_code", "class_code"])
def test_other_fields_are_shown_as_they_are(field):
    assert masking.mask(field, "14437173") == "14437173"
    assert masking.mask(field, None) == ""


def test_a_record_key_that_carries_an_id_number_is_masked():
    ent = spec.entity("sehr_accept_record")
    assert "id_no" in ent.key
    values = {k: f"v{i}" for i, k in enumerate(ent.key)} | {"id_no": "650102198001010016"}
    key = json.dumps([values[k] for k in ent.key], ensure_ascii=False)
    shown = masking.mask_key(ent, key)
    assert shown["id_no"] == "6501**********0016"
    assert "650102198001010016" not in json.dumps(shown)
    assert masking.mask_key(ent, "not json") == {}


def test_scrub_replaces_every_known_value_and_find_reports_them():
    values = masking.identifier_values(
        [{"name": "王小明", "id_no": "650102198001010016", "birth_date": "1980-01-01", "card_no": None}, None]
    )
    assert values == {"王小明", "650102198001010016", "1980-01-01"}
    text = "patient 王小明 (650102198001010016), born 1980-01-01; doctor 李医生"
    clean = masking.scrub(text, values)
    assert masking.find_identifiers(clean, values) == []
    assert "王**" in clean and "6501**********0016" in clean and "****-**-**" in clean and "李医生" in clean
    assert masking.find_identifiers(text, values) == sorted(values)


def test_the_leak_scan_finds_clear_values_and_id_shaped_text():
    idents = {"王小明", "650102198001010016", "K55297388"}
    assert masking.leaks("报告 王小明 卡 K55297388", idents) == ["K55297388", "王小明"]
    assert masking.leaks("王** 6501**********0016", idents) == []
    assert masking.leaks("unknown 11010519491231002X here", set()) == ["11010519491231002X"]
    assert masking.leaks("uid 2.25.123456789012345678901234567890123", set()) == []
    # a patient's name that is also a doctor's name is not a leak by itself
    assert masking.leaks("审核 王小明", {"王小明"}, {"王小明"}) == []


def test_a_platforms_text_is_shown_with_the_patients_identifiers_masked():
    """What the push logs of a platform's words: the report's patient (name, ID number, card
    number, birth date in the spellings people write) masked, any ID-number-shaped string masked,
    report numbers and timestamps left alone."""
    from datetime import date

    row = {
        "name": "孙仁明",
        "id_no": "110105198001010016",
        "card_no": "K55297388",
        "birth_date": date(1980, 1, 1),
    }
    text = ("error:患者孙仁明(110105198001010016)卡号K55297388 出生1980-01-01/19800101/1980年01月01日 与登记不符; "
            "另 650102199003071234; 报告单号 2923062112103449216, 202403110000000012, 时间 2024-03-11 09:29:00")  # fmt: skip
    shown = masking.mask_text(text, [row])
    for clear in ("孙仁明", "110105198001010016", "K55297388", "1980-01-01", "19800101", "1980年01月01日",
                  "650102199003071234"):  # fmt: skip
        assert clear not in shown, clear
    assert "孙**" in shown and "1101**********0016" in shown and "6501**********1234" in shown
    for kept in ("2923062112103449216", "202403110000000012", "2024-03-11 09:29:00", "与登记不符"):
        assert kept in shown, kept
    assert masking.mask_text(None) is None and masking.mask_text("ok") == "ok"
