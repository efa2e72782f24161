"""The rule catalogue: derived from the spec's field tables, severities and messages from data."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from hurren import rules, spec
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS

ENTITIES = sorted(spec.entities())
WARNINGS = {"id_card_legacy", "id_sex", "id_birth_date", "effective_dtime", "dtime_order", "accept_reason"}


def checks_of(entity: str, options: spec.SpecOptions = spec.DEFAULT_OPTIONS) -> list[rules.Check]:
    return list(rules.plan(entity, options).checks)


def by(
    entity: str, rule: str, options: spec.SpecOptions = spec.DEFAULT_OPTIONS
) -> dict[str, list[rules.Check]]:
    out: dict[str, list[rules.Check]] = {}
    for c in checks_of(entity, options):
        if c.rule == rule:
            out.setdefault(c.field, []).append(c)
    return out


# --- the rules document -----------------------------------------------------------------------


def test_every_rule_id_has_a_severity_and_messages():
    rb = rules.load_rulebook()
    assert set(rb.rules) == set(rules.RULE_IDS)
    for rid, text in rb.rules.items():
        assert text.severity == ("warning" if rid in WARNINGS else "error"), rid
        assert text.title_zh and text.title_en


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_check_has_a_message_in_both_languages(entity):
    rb = rules.load_rulebook()
    for c in checks_of(entity):
        names = [c.check] if c.check else list(rules.OUTCOME_CODES[c.derived[-1].kind])
        for name in names:
            zh, en = rb.message(c.rule, name)
            assert zh and en and re.search(r"[\u4e00-\u9fff]", zh), (c.id, name)


def test_overrides_most_specific_wins():
    rb = rules.load_rulebook()
    assert rb.severity("uid", "exammaster", "study_instance_uid") == "warning"  # D11, rules.json
    assert rb.severity("uid", "v_web_jcjg", "STUDIUIID") == "error"
    rb2 = rb.with_severity("dictionary", "warning").with_severity("dictionary", "error", entity="labmaster")
    rb2 = rb2.with_severity("dictionary", "warning", entity="labmaster", field="sex_code")
    assert rb2.severity("dictionary", "exammaster", "sex_code") == "warning"
    assert rb2.severity("dictionary", "labmaster", "event_type") == "error"
    assert rb2.severity("dictionary", "labmaster", "sex_code") == "warning"
    assert rb.severity("dictionary", "exammaster", "sex_code") == "error"  # the original is unchanged
    assert rb2.fingerprint != rb.fingerprint


def doc() -> dict:
    return json.loads(rules.RULES_FILE.read_text(encoding="utf-8"))


def broken(change) -> dict:
    d = doc()
    change(d)
    return d


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (broken(lambda d: d["rules"].pop("pdf")), r"missing rule id\(s\) \['pdf'\]"),
        (broken(lambda d: d["rules"].__setitem__("spelling", d["rules"]["pdf"])), r"unknown rule id\(s\) \['spelling'\]"),
        (broken(lambda d: d["rules"]["pdf"].__setitem__("severity", "fatal")), "severity must be one of"),
        (broken(lambda d: d["rules"]["pdf"]["messages"]["missing"].pop("zh")), "non-empty 'zh' and 'en'"),
        (broken(lambda d: d["overrides"].append({"rule": "uid", "entity": "nope", "severity": "warning"})), "unknown entity"),
        (broken(lambda d: d["overrides"].append({"rule": "uid", "entity": "exammaster", "field": "nope", "severity": "warning"})), "has no field"),
        (broken(lambda d: d["params"].__setitem__("pdf_max_bytes", -1)), "pdf_max_bytes"),
    ],
    ids=["missing-rule", "unknown-rule", "bad-severity", "missing-zh", "override-entity", "override-field", "pdf-limit"],
)  # fmt: skip
def test_a_malformed_rules_document_is_refused_with_a_reason(document, error):
    with pytest.raises(rules.RulesError, match=error):
        rules.rulebook_from_mapping(document)


def test_unknown_rule_in_code_is_refused():
    with pytest.raises(rules.RulesError, match="unknown rule"):
        rules.load_rulebook().with_severity("nope", "warning")
    with pytest.raises(rules.RulesError, match="severity"):
        rules.load_rulebook().with_severity("pdf", "fatal")


# --- the plan is derived from the spec --------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES)
def test_checks_follow_the_field_tables(entity):
    ent = spec.entity(entity)
    not_null = by(entity, "not_null")
    length = by(entity, "length")
    dictionary = by(entity, "dictionary")
    datetime_ = by(entity, "datetime")
    number = by(entity, "number")
    xml = by(entity, "xml_chars")
    for f in ent.fields:
        required = [c for c in not_null.get(f.name, []) if c.check == "required"]
        assert bool(required) == (not f.nullable and f.type != "pdf"), f.name
        if f.type == "text" and f.length:
            (c,) = length[f.name]
            assert c.test == rules.AtMost(f"__bytes__{f.name}", f.length)
        else:
            assert f.name not in length
        dic = rules.dictionary_of(ent, f, spec.SpecOptions())
        if dic is not None and dic.kind == "closed":
            (c,) = dictionary[f.name]
            assert set(c.test.values) == set(dic.codes)
        else:
            assert f.name not in dictionary
        assert (f.name in datetime_) == (f.type in ("date", "datetime"))
        assert (f.name in number) == (f.type == "number")
        assert (f.name in xml) == (f.type in ("text", "uid"))
    assert len(by(entity, "unique_key")) == 1
    ids = [c.id for c in checks_of(entity)]
    assert len(ids) == len(set(ids))
    raw = {c for c in rules.plan(entity, options=DEFAULT_OPTIONS).columns}
    assert raw <= set(ent.names)


def test_open_dictionaries_accept_anything():
    assert rules.dictionary_of(spec.entity("lab_subitem"), spec.entity("lab_subitem").field("class_code"), spec.SpecOptions()).kind == "open"  # fmt: skip
    assert "class_code" not in by("lab_subitem", "dictionary")
    assert "exam_item_code" not in by("exam_subitem", "dictionary")


def test_d1_retrieve_date_accepts_a_datetime_only_for_labmaster():
    (fmt, _), = [by("labmaster", "datetime")["retrieve_date"]]  # fmt: skip
    assert fmt.test.pattern == rules.DATE_OR_DATETIME_RE
    assert by("exammaster", "datetime")["retrieve_date"][0].test.pattern == rules.DATE_RE


def test_d4_modality_follows_the_option():
    assert dict(by("exammaster", "dictionary")["class_code"][0].context).get("dictionary") == "Modality"
    moved = by("exammaster", "dictionary", spec.SpecOptions(exam_modality_field="class_name"))
    assert "class_code" not in moved and dict(moved["class_name"][0].context)["dictionary"] == "Modality"


def test_d14_char_semantics_use_gx_native_lengths():
    c = by("labmaster", "length", spec.SpecOptions(length_semantics="char"))["class_name"][0]
    assert c.test == rules.MaxChars("class_name", 128) and c.check == "chars"


def test_d11_uid_rule_on_pacs_views_and_the_exam_study_uid():
    assert set(by("v_web_jcjg", "uid")) == {"STUDIUIID", "SERIESIUID", "INSTANCESOPIUID"}
    assert set(by("v_web_jctj", "uid")) == {"STUDIUIID"}
    assert set(by("exammaster", "uid")) == {"study_instance_uid"}
    assert "study_instance_uid" in by("exammaster", "length")  # still VARCHAR2(512) bytes


def test_cross_field_rules_land_where_the_spec_says():
    assert set(by("lab_subitem", "effective_dtime")) == {"effective_dtime"}  # D9
    assert set(by("exam_subitem", "effective_dtime")) == {"effective_dtime"}
    assert set(by("lab_subitem", "pq_numeric")) == {"result_value"}
    assert set(by("lab_subitem", "limits_order")) == {"norm_lower_limit"}
    for e in ("labmaster", "exammaster", "sehr_accept_record", "sehr_quote_record"):
        assert set(by(e, "id_card")) == {"id_no"}
    assert set(by("exammaster", "id_birth_date")) == {"birth_date"}
    assert set(by("labmaster", "no_items")) == {"lab_subitem"}
    assert set(by("exam_subitem", "orphan_item")) == {"org_code,event_no,report_form_no"}
    assert set(by("labmaster", "unique_key")) == {"org_code,event_no,report_form_no"}  # what items link by
    assert set(by("v_web_jcjg", "unique_key")) == {"INSTANCESOPIUID"}
    (required,) = [c for c in by("sehr_accept_record", "not_null")["reason"]]
    assert required.test == rules.NotNull("reason", rules.When("is_accept", "2"))
    assert set(by("sehr_accept_record", "accept_reason")) == {"reason"}
    assert by("sehr_quote_record", "accept_reason") == {}
    assert "pdf" not in by("labmaster", "not_null") and set(by("labmaster", "pdf")) == {"pdf"}


def test_every_rule_applies_somewhere():
    table = rules.rule_table(rulebook=load_rulebook(), options=DEFAULT_OPTIONS)
    assert [r.rule for r in table] == list(rules.RULE_IDS)
    assert all(r.fields for r in table), [r.rule for r in table if not r.fields]


# --- patterns mean the same in Python re and RE2 (pandas picks either) ------------------------


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (rules.DATETIME_RE, ["2024-03-11 09:29:00"], ["2024-03-11 09:29:00\n", "2024-3-11 09:29:00", "２０２４-03-11 09:29:00", "2024-03-11T09:29:00"]),
        (rules.DATE_RE, ["2024-03-11"], ["2024-03-11 00:00:00", "20240311"]),
        (rules.DATE_OR_DATETIME_RE, ["2024-03-11", "2024-03-11 09:29:00"], ["2024-03-11 09:29"]),
        (rules.INTEGER_RE, ["0", "46530132"], ["-1", "1.0", "１", " 1", "1\n"]),
        (rules.DECIMAL_RE, ["11.25", "-0.5", ".5", "5.", "+3"], ["<0.5", "1e3", "", "1,5", "NaN"]),
        (rules.UID_RE, ["1.2.840.10008.1.1", "0", "1.0.3"], ["1.02", "1..2", ".1", "1.", "1.2a"]),
        (rules.ID18_RE, ["11010519491231002X"], ["11010519491231002x", "1101051949123100"]),
    ],
    ids=["datetime", "date", "date-or-datetime", "integer", "decimal", "uid", "id18"],
)  # fmt: skip
def test_patterns(pattern, good, bad):
    for dtype in ("str", object):
        s = pd.Series(good + bad, dtype=dtype)
        got = s.str.contains(pattern).tolist()
        assert got == [True] * len(good) + [False] * len(bad), (
            dtype,
            list(zip(good + bad, got, strict=True)),
        )
