"""Validation of batches: one defect at a time, both engines agreeing, no identifier in clear.

Test data starts from the spec's own example reports (1.2.2.1, 1.2.2.3, 1.4.2.3), completed from
the field tables (every field of the entity gets a valid value of its type), then breaks one thing
at a time. The single-defect cases run on the fast pandas engine; one batch holding every case
runs through Great Expectations too and must give exactly the same failures.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import pytest

from hurren import rules, spec, store
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren.validation import ValidationError, Verdicts, mask, validate_records, validate_reports

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PDF_B64 = base64.b64encode(PDF).decode()

VALID_ID = "110105198001010016"  # GB 11643 check character 6; birth 1980-01-01; 17th digit 1: male
VALID_ID_F = "320102199003071239"  # 17th digit 3: male; 1990-03-07
PASSPORT = "E12345678"

# The spec's example lab report (1.2.2.1), placeholders ("身份证号", "患者姓名", the PDF) made real.
LABMASTER_EXAMPLE = {
    "last_update_dtime": "2024-03-11 09:29:00", "org_code": "457759922", "apply_form_no": "",
    "report_form_no": "14437173", "patient_id": "1878", "event_type": "1", "event_no": "1878",
    "id_no": VALID_ID, "id_type_code": "01", "card_no": "K55297388", "retrieve_date": "2024-03-11 09:29:00",
    "class_code": "A01", "class_name": "生化", "class_local_name": "生化", "report_title": "常规报告",
    "effective_dtime": "2024-03-11 08:09:38", "name": "张三丰", "sex_code": "1", "sex_name": "男性",
    "author_id": "8262", "author_dtime": "2024-03-11 09:29:00", "author_name": "黄胜", "authenticator_id": "8262",
    "authenticator_dtime": "2024-03-11 09:28:59", "authenticator_name": "黄胜", "participant_id": "8106",
    "participant_dtime": "2024-03-11 08:09:38", "participant_name": "白萍", "participant_dept_code": "1511",
    "participant_dept_name": "保健科门诊", "participant_dept_std_code": "A01", "participant_dept_std_name": "预防保健科",
    "order_id": "14437173", "order_priority": "", "order_priority_name": "", "specimen_id": "33",
    "specimen_class_code": "", "specimen_determiner_code": "", "specimen_determiner_name": "",
    "performer_dept_code": "4300", "performer_dept_name": "检验科", "performer_dept_std_code": "A30",
    "performer_dept_std_name": "医学检验科", "performer_doctor": "林平", "performer_dtime": "2024-03-11 00:00:00",
    "playing_device": "BS-2000M", "data_status": "1", "pdf": PDF_B64,
}  # fmt: skip
LAB_SUBITEM_EXAMPLES = [
    {
        "last_update_dtime": "2024-03-11 09:29:00", "serial_no": "46530132", "class_code": "AG",
        "class_name": "阴离子间隙", "class_local_name": "阴离子间隙", "result_type": "PQ", "result_type_descr": "数值型",
        "result_value": "11.25", "result_unit": "mmol/L", "norm_lower_limit": "", "norm_upper_limit": "",
        "norm_value_notes": "", "result_interpre": "N", "result_interpre_descr": "正常",
        "effective_dtime": "2024-03-11 09:28:01", "examine_way": "", "recognition": "0",
    },
    {
        "last_update_dtime": "2024-03-11 09:29:00", "serial_no": "46530131", "class_code": "250301002",
        "class_name": "白蛋白(ALB)", "class_local_name": "*白蛋白(溴甲酚氯)", "result_type": "PQ",
        "result_type_descr": "数值型", "result_value": "45.3", "result_unit": "g/L", "norm_lower_limit": "40.0000",
        "norm_upper_limit": "55.0000", "norm_value_notes": "", "result_interpre": "N", "result_interpre_descr": "正常",
        "effective_dtime": "2024-03-11 09:27:58", "examine_way": "", "recognition": "1",
    },
]  # fmt: skip
# The spec's example exam report (1.2.2.3), with class_code a Modality code per D4.
EXAMMASTER_EXAMPLE = {
    "last_update_dtime": "2024-05-11 08:59:33", "org_code": "457759922", "apply_form_no": "333493", "state": "4",
    "report_form_no": "71468573", "patient_id": "1658522", "event_type": "1", "event_no": "2022208962",
    "performer_dtime": "2024-05-11 00:00:00", "pacs_id": "0000544534",
    "study_instance_uid": "1.2.840.113619.2.437.3.279741441.35.1709683344.354", "id_no": VALID_ID_F,
    "id_type_code": "01", "card_no": "AD9329902", "checked_status": "", "class_code": "CT", "class_name": "CT",
    "retrieve_date": "2024-05-11", "report_title": "CT平扫+三维重建", "effective_dtime": "2024-05-11 08:59:33",
    "confidentiality": "", "name": "李四", "sex_code": "1", "sex_name": "男", "birth_date": "1990-03-07",
    "author_id": "2292", "author_dtime": "2024-05-11 08:58:45", "author_name": "张欣悦", "authenticator_id": "8287",
    "authenticator_dtime": "2024-05-11 08:58:48", "authenticator_name": "曹海念", "participant_dept_code": "1411",
    "participant_dept_name": "耳鼻喉门诊", "participant_dept_std_code": "A11", "participant_dept_std_name": "耳鼻咽喉科",
    "participant_id": "8401", "participant_dtime": "2024-05-11 08:17:22", "participant_name": "罗高青",
    "performer_dept_code": "3221", "performer_dept_name": "普通放射", "performer_dept_std_code": "A32",
    "performer_dept_std_name": "医学影像科", "performer_doctor": "陈星榕", "playing_device": "CT报告",
    "outpat_diag_name": "慢性鼻炎;鼻中隔偏曲", "patient_condition_desc": "无", "exam_purpose": "",
    "image_descr": "双上颌窦、筛窦、额窦窦腔粘膜增厚,腔内见软组织影充填。", "is_abnormal": "0",
    "conclusion": "鼻息肉,双侧上颌窦、筛窦、额窦慢性炎症。", "arrive_dtime": "2024-05-11 08:17:34",
    "authenticator_dept_std_code": "3221", "authenticator_dept_std_name": "普通放射",
    "authenticator_dept_code": "3221", "authenticator_dept_name": "普通放射", "data_status": "1",
    "pacs_url": "http://pacs.example/view?study=1", "pdf": PDF_B64,
}  # fmt: skip
EXAM_SUBITEM_EXAMPLE = {
    "last_update_dtime": "2024-05-11 08:59:33", "exam_site_code": "115", "body_part_name": "CT平扫+三维重建",
    "exam_item_code": "115", "exam_item_name": "CT平扫+三维重建", "recognition": "0",
    "effective_dtime": "2024-05-11 08:59:33",
}  # fmt: skip
ACCEPT_EXAMPLE = {
    "hr_org_code": "457759922", "hr_report_form_no": "14437173", "code": "250301002", "id_no": VALID_ID,
    "id_type_code": "01", "record_time": "2024-05-30 13:19:04", "type": "2", "dept_code": "ZSBY-10",
    "dept_name": "急诊外科", "dept_std_code": "A50.16", "dept_std_name": "急诊科专业", "doc_code": "9050",
    "doc_name": "郑伟军", "new_event_no": "5036612", "new_event_type": "1", "is_accept": "2", "reason": "1",
}  # fmt: skip


def filler(entity: str) -> dict[str, str | None]:
    """A valid value for every field of ``entity``, from its type and dictionary."""
    ent = spec.entity(entity)
    out: dict[str, str | None] = {}
    for f in ent.fields:
        dic = rules.dictionary_of(ent, f, spec.SpecOptions())
        if f.type == "pdf":
            v = PDF_B64
        elif f.type == "datetime":
            v = "2024-03-11 09:29:00"
        elif f.type == "date":
            v = "2024-03-11"
        elif dic is not None and dic.kind == "closed":
            v = sorted(dic.codes)[0]
        elif f.type in ("number",):
            v = "1"
        elif f.type == "uid":
            v = "1.2.840.10008.1.1"
        else:
            v = "x"
        out[f.name] = v
    return out


def lab_report(n: int, *, items: int = 2, **master: str | None) -> tuple[list[dict], list[dict]]:
    """Report number ``n``: the spec's example lab report with its own report_form_no."""
    m = {**filler("labmaster"), **LABMASTER_EXAMPLE, "report_form_no": f"R{n:04d}", **master}
    out = []
    for i in range(items):
        example = LAB_SUBITEM_EXAMPLES[i % len(LAB_SUBITEM_EXAMPLES)]
        link = {k: m[k] for k in ("org_code", "event_no", "report_form_no")}
        out.append({**filler("lab_subitem"), **example, **link, "serial_no": str(46530100 + i)})
    return [m], out


def exam_report(n: int, *, items: int = 1, **master: str | None) -> tuple[list[dict], list[dict]]:
    m = {**filler("exammaster"), **EXAMMASTER_EXAMPLE, "report_form_no": f"E{n:04d}", **master}
    link = {k: m[k] for k in ("org_code", "event_no", "report_form_no")}
    out = [
        {**filler("exam_subitem"), **EXAM_SUBITEM_EXAMPLE, **link, "exam_item_code": str(115 + i)}
        for i in range(items)
    ]
    return [m], out


def with_item(report: tuple[list[dict], list[dict]], index: int = 0, **changes: str | None):
    masters, items = report
    items = [dict(it) for it in items]
    items[index].update(changes)
    return masters, items


def frames(*reports: tuple[list[dict], list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    masters = [m for ms, _ in reports for m in ms]
    items = [i for _, its in reports for i in its]
    return pd.DataFrame(masters, dtype=object), pd.DataFrame(items, dtype=object)


def key_of(master: dict, entity: str = "labmaster") -> str:
    return store.record_key(spec.entity(entity), master)


def orphan_key(master: dict) -> str:
    """The key an orphan of ``master``'s batch is filed under (report_form_no prefixed with X)."""
    rfn = "X" + master["report_form_no"][1:]
    return json.dumps([master["org_code"], rfn, None, None, master["event_no"]], ensure_ascii=False)


def found(v: Verdicts) -> set[tuple[str, str, str, str]]:
    return set(v.failures[["entity", "field", "rule", "check"]].itertuples(index=False, name=None))


# --- one defect at a time --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[int], tuple[list[dict], list[dict]]]
    expect: frozenset[tuple[str, str, str, str]]  # (entity, field, rule, check), exactly
    message: str = ""  # a fragment of the first expected failure's message
    held: bool = True
    kind: str = "lab"
    options: spec.SpecOptions = field(default_factory=spec.SpecOptions)


def E(*items: tuple[str, str, str, str]) -> frozenset[tuple[str, str, str, str]]:
    return frozenset(items)


LM, LS, XM, XS = "labmaster", "lab_subitem", "exammaster", "exam_subitem"
LINK = "org_code,event_no,report_form_no"

CASES = [
    Case("clean-lab-report", lambda n: lab_report(n), E(), held=False),
    Case("clean-exam-report", lambda n: exam_report(n), E(), held=False, kind="exam"),
    Case("retrieve-date-as-datetime-is-fine-D1", lambda n: lab_report(n, retrieve_date="2024-03-11 09:29:00"), E(), held=False),
    Case("retrieve-date-as-date-is-fine", lambda n: lab_report(n, retrieve_date="2024-03-11"), E(), held=False),
    Case("emoji-4-byte-utf8-is-valid", lambda n: lab_report(n, report_title="血常规😀🧪"), E(), held=False),
    Case("42-chinese-chars-fit-128-bytes", lambda n: lab_report(n, class_name="血" * 42), E(), held=False),
    Case("32-emoji-fit-128-bytes", lambda n: lab_report(n, class_name="😀" * 32), E(), held=False),
    Case("id-not-checked-for-passport-03", lambda n: lab_report(n, id_type_code="03", id_no=PASSPORT), E(), held=False),
    Case("bad-check-digit-ignored-for-03", lambda n: lab_report(n, id_type_code="03", id_no=VALID_ID[:-1] + "7"), E(), held=False),
    Case("cd-result-need-not-be-numeric", lambda n: with_item(lab_report(n), result_type="CD", result_value="阳性"), E(), held=False),
    Case("non-numeric-limits-are-not-compared", lambda n: with_item(lab_report(n), 1, norm_lower_limit="<5", norm_upper_limit="1"), E(), held=False),
    Case("tab-lf-cr-are-xml-safe", lambda n: with_item(lab_report(n), norm_value_notes="a\tb\nc\r\nd"), E(), held=False),
    Case("effective-dtime-within-300s", lambda n: with_item(lab_report(n), effective_dtime="2024-03-11 09:24:00"), E(), held=False),
    # corrupt XML characters
    Case("xml-c0-control-in-master", lambda n: lab_report(n, report_title="血常\x01规"),
         E((LM, "report_title", "xml_chars", "bad_char")), "U+0001"),
    Case("xml-noncharacter-fffe-in-item", lambda n: with_item(lab_report(n), class_local_name="白蛋白\ufffe"),
         E((LS, "class_local_name", "xml_chars", "bad_char")), "U+FFFE"),
    Case("xml-lone-surrogate", lambda n: lab_report(n, author_name="黄\ud800胜"),
         E((LM, "author_name", "xml_chars", "bad_char")), "U+D800"),
    # dates
    Case("impossible-date-feb-30", lambda n: lab_report(n, authenticator_dtime="2024-02-30 10:00:00"),
         E((LM, "authenticator_dtime", "datetime", "calendar")), "'2024-02-30 10:00:00' 不是真实存在的日期或时间"),
    Case("impossible-time-25h", lambda n: lab_report(n, author_dtime="2024-03-11 25:00:00"),
         E((LM, "author_dtime", "datetime", "calendar")), "not a real calendar date"),
    Case("wrong-date-format-slashes", lambda n: lab_report(n, author_dtime="2024/03/01 10:00:00"),
         E((LM, "author_dtime", "datetime", "format")), "does not have the format YYYY-MM-DD HH:MM:SS"),
    Case("date-only-in-datetime-field", lambda n: lab_report(n, performer_dtime="2024-03-11"),
         E((LM, "performer_dtime", "datetime", "format")), "YYYY-MM-DD HH:MM:SS"),
    Case("trailing-newline-in-datetime", lambda n: lab_report(n, last_update_dtime="2024-03-11 09:29:00\n"),
         E((LM, "last_update_dtime", "datetime", "format")), "\\u000a"),
    Case("retrieve-date-impossible", lambda n: lab_report(n, retrieve_date="2023-02-29"),
         E((LM, "retrieve_date", "datetime", "calendar")), "2023-02-29"),
    Case("exam-retrieve-date-as-datetime-not-D1", lambda n: exam_report(n, retrieve_date="2024-05-11 08:00:00"),
         E((XM, "retrieve_date", "datetime", "format")), "YYYY-MM-DD", kind="exam"),
    # codes
    Case("unknown-sex-code", lambda n: lab_report(n, sex_code="F"),
         E((LM, "sex_code", "dictionary", "not_in")), "代码 'F' 不在字典 STD_SEX"),
    Case("unknown-event-type", lambda n: lab_report(n, event_type="7"),
         E((LM, "event_type", "dictionary", "not_in")), "STD_EVENT_TYPE"),
    Case("unknown-dept-std-code", lambda n: lab_report(n, performer_dept_std_code="4300"),
         E((LM, "performer_dept_std_code", "dictionary", "not_in")), "STD_DEPT"),
    Case("unknown-result-interpretation", lambda n: with_item(lab_report(n), result_interpre="XX"),
         E((LS, "result_interpre", "dictionary", "not_in")), "STD_OBSERVATION_INTERPRET"),
    Case("open-loinc-list-accepts-any-code", lambda n: with_item(lab_report(n), class_code="ANY-LOCAL-CODE"), E(), held=False),
    Case("exam-class-code-not-modality-D4", lambda n: exam_report(n, class_code="A01"),
         E((XM, "class_code", "dictionary", "not_in")), "Modality", kind="exam"),
    # lengths
    Case("oversize-50-chinese-chars-150-bytes", lambda n: lab_report(n, class_name="血" * 50),
         E((LM, "class_name", "length", "bytes")), "长 150 字节 (utf-8), 超过上限 128 字节"),
    Case("oversize-33-emoji-132-bytes", lambda n: lab_report(n, class_name="😀" * 33),
         E((LM, "class_name", "length", "bytes")), "132 bytes"),
    Case("oversize-id-type-code", lambda n: lab_report(n, id_type_code="011"),
         E((LM, "id_type_code", "length", "bytes"), (LM, "id_type_code", "dictionary", "not_in")), "3 bytes"),
    # NUMBER(n)
    Case("number-not-numeric", lambda n: with_item(lab_report(n), serial_no="12a"),
         E((LS, "serial_no", "number", "format")), "'12a' 不是整数"),
    Case("number-fullwidth-digits", lambda n: with_item(lab_report(n), serial_no="１２"),
         E((LS, "serial_no", "number", "format")), "not an integer"),
    Case("number-too-many-digits", lambda n: with_item(lab_report(n), serial_no="12345678901"),
         E((LS, "serial_no", "number", "digits")), "11 digits, more than NUMBER(10)"),
    Case("number-with-decimal-point", lambda n: with_item(lab_report(n), recognition="1.0"),
         E((LS, "recognition", "number", "format"), (LS, "recognition", "dictionary", "not_in")), "code '1.0' is not in"),
    # resident ID (01)
    Case("id-check-digit-wrong", lambda n: lab_report(n, id_no=VALID_ID[:-1] + "7"),
         E((LM, "id_no", "id_card", "check_digit")), "校验位错误"),
    Case("id-birth-date-impossible", lambda n: lab_report(n, id_no="110105198002300011"),
         E((LM, "id_no", "id_card", "birth_date")), "not a real date"),
    Case("id-wrong-format", lambda n: lab_report(n, id_no="11010519800101001"),
         E((LM, "id_no", "id_card", "format")), "18"),
    Case("id-15-digit-legacy-is-a-warning", lambda n: lab_report(n, id_no="110105800101001"),
         E((LM, "id_no", "id_card_legacy", "legacy15")), "15-digit", held=False),
    Case("id-sex-mismatch-is-a-warning", lambda n: lab_report(n, sex_code="2"),
         E((LM, "sex_code", "id_sex", "mismatch")), "odd male", held=False),
    Case("id-birth-date-mismatch-is-a-warning", lambda n: exam_report(n, birth_date="1990-03-08"),
         E((XM, "birth_date", "id_birth_date", "mismatch")), "出生日期", held=False, kind="exam"),
    # lab results
    Case("pq-result-not-numeric", lambda n: with_item(lab_report(n), result_value="阳性"),
         E((LS, "result_value", "pq_numeric", "not_numeric")), "result_type PQ needs a numeric value, got '阳性'"),
    Case("limits-inverted", lambda n: with_item(lab_report(n), 1, norm_lower_limit="55.0", norm_upper_limit="40.0"),
         E((LS, "norm_lower_limit", "limits_order", "inverted")), "参考值下限 '55.0' 大于上限 '40.0'"),
    # keys and links
    Case("duplicate-item-keys", lambda n: with_item(lab_report(n), 1, serial_no="46530100"),
         E((LS, "org_code,event_no,report_form_no,serial_no", "unique_key", "duplicate")), "same key"),
    Case("duplicate-masters", lambda n: (lab_report(n)[0] * 2, lab_report(n)[1]),
         E((LM, LINK, "unique_key", "duplicate")), "另有|其他行"),
    Case("orphan-sub-item", lambda n: (lab_report(n)[0], lab_report(n)[1] + with_item(lab_report(n), report_form_no=f"X{n:04d}")[1][:1]),
         E((LS, LINK, "orphan_item", "orphan")), "no labmaster in this batch"),
    Case("master-without-items", lambda n: lab_report(n, items=0),
         E((LM, "lab_subitem", "no_items", "no_items")), "no lab_subitem rows"),
    # PDFs
    Case("pdf-not-base64", lambda n: lab_report(n, pdf="not base64 at all!"),
         E((LM, "pdf", "pdf", "not_base64")), "not valid Base64"),
    Case("pdf-base64-of-not-a-pdf", lambda n: lab_report(n, pdf=base64.b64encode(b"<html>report</html>").decode()),
         E((LM, "pdf", "pdf", "not_pdf")), "%PDF-"),
    Case("pdf-empty", lambda n: lab_report(n, pdf=""), E((LM, "pdf", "pdf", "missing")), "PDF missing or empty"),
    Case("pdf-missing-is-pdf-not-not-null", lambda n: lab_report(n, pdf=None), E((LM, "pdf", "pdf", "missing")), "缺失"),
    Case("pdf-truncated", lambda n: lab_report(n, pdf=base64.b64encode(PDF[:-7]).decode()),
         E((LM, "pdf", "pdf", "no_eof")), "%%EOF"),
    Case("pdf-with-mime-line-breaks-is-fine", lambda n: lab_report(n, pdf=base64.encodebytes(PDF * 20).decode()), E(), held=False),
    Case("pdf-example-placeholder-from-spec", lambda n: lab_report(n, pdf="MzQxaGpzZGZzZGZzZGtmMTMxMjMxMjMxMzI="),
         E((LM, "pdf", "pdf", "not_pdf")), "not a PDF"),
    # required fields
    Case("required-field-missing", lambda n: lab_report(n, author_name=None),
         E((LM, "author_name", "not_null", "required")), "必填项为空 / required but empty"),
    Case("required-field-empty-string", lambda n: with_item(lab_report(n), result_interpre=""),
         E((LS, "result_interpre", "not_null", "required")), "required"),
    # times (warnings)
    Case("effective-dtime-drift-is-a-warning", lambda n: with_item(lab_report(n), effective_dtime="2024-03-11 10:30:00"),
         E((LS, "effective_dtime", "effective_dtime", "drift")), "3661 s away", held=False),
    Case("signed-before-ordered-is-a-warning", lambda n: lab_report(n, participant_dtime="2024-03-11 10:00:00"),
         E((LM, "authenticator_dtime", "dtime_order", "inverted")), "earlier than participant_dtime", held=False),
    # placeholders and invisible characters (issue #17)
    Case("placeholder-null-in-required", lambda n: lab_report(n, author_name="NULL"),
         E((LM, "author_name", "placeholder", "placeholder")), "'NULL' is a placeholder"),
    Case("placeholder-none-in-key", lambda n: lab_report(n, patient_id=" None "),
         E((LM, "patient_id", "placeholder", "placeholder")), "占位文字"),
    Case("placeholder-n-a-in-item", lambda n: with_item(lab_report(n), class_name="n/a"),
         E((LS, "class_name", "placeholder", "placeholder")), "'n/a'"),
    Case("placeholder-in-exam-key", lambda n: exam_report(n, event_no="(null)"),
         E((XM, "event_no", "placeholder", "placeholder"), (XS, "event_no", "placeholder", "placeholder")),
         "(null)", kind="exam"),  # the sub-item carries the key it links by
    Case("placeholder-text-in-optional-field-is-fine", lambda n: lab_report(n, apply_form_no="NULL"), E(), held=False),
    Case("na-is-a-code-not-a-placeholder", lambda n: with_item(lab_report(n), class_local_name="NA"), E(), held=False),
    Case("bom-in-key", lambda n: lab_report(n, patient_id="\ufeff1878"),
         E((LM, "patient_id", "invisible_chars", "invisible")), "character 1 is U+FEFF"),
    Case("zero-width-in-open-list-code", lambda n: with_item(lab_report(n), class_code="250301002\u200b"),
         E((LS, "class_code", "invisible_chars", "invisible")), "第 10 个字符 U+200B"),
    Case("bidi-override-in-closed-code", lambda n: lab_report(n, sex_code="\u202e1"),
         E((LM, "sex_code", "invisible_chars", "invisible"), (LM, "sex_code", "dictionary", "not_in")), "STD_SEX"),
    Case("bidi-marks-in-free-text-are-fine", lambda n: lab_report(n, report_title="\u202b常规报告\u202c\u200f"), E(), held=False),
    Case("zero-width-joiner-in-exam-key", lambda n: exam_report(n, report_form_no=f"E{n:04d}\u200d"),
         E((XM, "report_form_no", "invisible_chars", "invisible"), (XS, "report_form_no", "invisible_chars", "invisible")),
         "U+200D", kind="exam"),
    # UIDs
    Case("exam-study-uid-malformed-is-a-warning-D11", lambda n: exam_report(n, study_instance_uid="1.2.03.4"),
         E((XM, "study_instance_uid", "uid", "format")), "not a DICOM UID", held=False, kind="exam"),
]  # fmt: skip


def run_case(case: Case, engine: str = "pandas", n: int = 1) -> tuple[Verdicts, list[dict], list[dict]]:
    masters, items = case.build(n)
    m_df, i_df = frames((masters, items))
    master_entity = LM if case.kind == "lab" else XM
    if i_df.empty:
        i_df = pd.DataFrame(columns=spec.entity(rules.item_entity_of(master_entity)).names)
    v = validate_reports(
        m_df, i_df, master_entity=master_entity, options=case.options, engine=engine, rulebook=load_rulebook()
    )
    return v, masters, items


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_defect(case: Case):
    v, masters, _ = run_case(case)
    assert found(v) == set(case.expect), v.failures.to_string()
    key = key_of(masters[0], LM if case.kind == "lab" else XM)
    if case.expect:
        first = v.failures.iloc[0]
        assert any(part in first["message"] for part in case.message.split("|")), first["message"]
        if any(e[2] == "orphan_item" for e in case.expect):
            key = orphan_key(masters[0])
        assert set(v.failures["record_key"]) == {key}
        assert (key in v.held_keys) is case.held
        assert v.reason(key).count("\n- [") == len(v.failures)
    else:
        assert v.failures.empty and not v.held_keys
        assert v.reason(key) == ""
    expected_severity = "error" if case.held else "warning"
    assert set(v.failures["severity"]) <= {expected_severity, "warning"}


def test_orphan_is_filed_under_the_key_its_master_would_have():
    masters, items = lab_report(1)
    orphan = {**items[0], "report_form_no": "R-MISSING"}
    m_df, i_df = pd.DataFrame(masters), pd.DataFrame([*items, orphan])
    v = validate_reports(
        m_df, i_df, master_entity=LM, engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    expected = json.dumps(["457759922", "R-MISSING", None, None, "1878"], ensure_ascii=False)
    assert v.held_keys == {expected}
    assert v.item_record_keys.tolist() == [key_of(masters[0])] * 2 + [expected]
    assert v.item_held.tolist() == [False, False, True]
    assert v.master_held.tolist() == [False]
    assert len(v.passed(i_df, which="items")) == 2
    assert v.reason(expected).startswith("labmaster: 暂扣 held; 1 项错误")


def test_a_held_report_is_held_whole_with_its_items():
    bad = with_item(lab_report(1), 1, result_value="阳性")
    good = lab_report(2)
    m_df, i_df = frames(bad, good)
    v = validate_reports(
        m_df, i_df, master_entity=LM, engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    assert v.held_keys == {key_of(bad[0][0])}
    assert v.master_held.tolist() == [True, False]
    assert v.item_held.tolist() == [True, True, False, False]
    assert v.passed(m_df)["report_form_no"].tolist() == ["R0002"]
    assert v.held(i_df, which="items")["report_form_no"].tolist() == ["R0001", "R0001"]
    assert v.failures.loc[0, "row"] == 1  # position in the items frame given
    assert "lab_subitem[serial_no='46530101'].result_value (结果值) pq_numeric" in v.reason(key_of(bad[0][0]))
    with pytest.raises(ValidationError, match="not the items frame"):
        v.passed(i_df.iloc[:1], which="items")


def test_rows_are_positions_even_with_a_foreign_index():
    m_df, i_df = frames(lab_report(1, sex_code="F"), lab_report(2))
    m_df.index = [100, 7]
    v = validate_reports(
        m_df, i_df, master_entity=LM, engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    assert v.failures["row"].tolist() == [0]
    assert v.master_held.index.tolist() == [100, 7]


def test_every_broken_rule_is_in_the_reason():
    report = with_item(lab_report(1, sex_code="F", report_title="血\x02", pdf=""), 0, result_value="x")
    m_df, i_df = frames(report)
    v = validate_reports(
        m_df, i_df, master_entity=LM, engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    reason = v.reason(key_of(report[0][0]))
    for rule in ("dictionary", "xml_chars", "pdf", "pq_numeric"):
        assert f" {rule}: " in reason
    assert reason.startswith("labmaster: 暂扣 held; 4 项错误 error(s), 0 项警告 warning(s)")
    broken = v.rules_broken(key_of(report[0][0]))
    assert broken[0] == {
        "entity": LM, "item": "", "field": "report_title", "rule": "xml_chars", "check": "bad_char", "severity": "error",
    }  # fmt: skip
    item = next(b for b in broken if b["rule"] == "pq_numeric")
    assert item["entity"] == "lab_subitem" and "serial_no" in item["item"]  # by its key, not its position


# --- severities are data ---------------------------------------------------------------------


def test_flipping_a_rule_to_warning_releases_the_report():
    m_df, i_df = frames(lab_report(1, items=0))
    strict = validate_reports(
        m_df, i_df, master_entity=LM, engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    assert strict.held_keys == {key_of(m_df.iloc[0].to_dict())}
    lenient = rules.load_rulebook().with_severity("no_items", "warning")
    v = validate_reports(
        m_df, i_df, master_entity=LM, engine="pandas", rulebook=lenient, options=DEFAULT_OPTIONS
    )
    assert v.failures["severity"].tolist() == ["warning"]
    assert not v.held_keys and v.passed(m_df).shape[0] == 1


def test_severity_override_from_the_rules_document():
    doc = json.loads(rules.RULES_FILE.read_text(encoding="utf-8"))
    doc["overrides"].append({"rule": "dictionary", "entity": LM, "field": "sex_code", "severity": "warning"})
    rb = rules.rulebook_from_mapping(doc)
    m_df, i_df = frames(lab_report(1, sex_code="F", event_type="7"))
    v = validate_reports(m_df, i_df, master_entity=LM, engine="pandas", rulebook=rb, options=DEFAULT_OPTIONS)
    assert dict(zip(v.failures["field"], v.failures["severity"], strict=True)) == {
        "event_type": "error", "sex_code": "warning",
    }  # fmt: skip


def test_pdf_size_limit_comes_from_the_rules_document():
    doc = json.loads(rules.RULES_FILE.read_text(encoding="utf-8"))
    doc["params"]["pdf_max_bytes"] = 64
    rb = rules.rulebook_from_mapping(doc)
    big = base64.b64encode(PDF + b" " * 200).decode()
    m_df, i_df = frames(lab_report(1, pdf=big), lab_report(2))
    v = validate_reports(m_df, i_df, master_entity=LM, engine="pandas", rulebook=rb, options=DEFAULT_OPTIONS)
    assert found(v) == {(LM, "pdf", "pdf", "too_large")}
    assert (
        f"decoded PDF is {len(PDF) + 200} bytes, over the limit of 64 bytes" in v.failures.loc[0, "message"]
    )


@pytest.mark.parametrize("engine", ["pandas", "gx"])
def test_pdf_checked_at_extraction_is_read_from_its_outcome_column(engine):
    # Part L's contract: the extraction decodes and checks the PDF and passes on __pdf__pdf (and
    # pdf_size) instead of the Base64 text; the validator reads that outcome, never the text.
    reports = [lab_report(i) for i in range(1, 5)]
    m_df, i_df = frames(*reports)
    m_df = m_df.drop(columns=["pdf"])
    m_df["__pdf__pdf"] = ["ok", "too_large", "no_eof", "missing"]
    m_df["pdf_size"] = [900, 30_000_000, 800, None]
    v = validate_reports(
        m_df, i_df, master_entity=LM, engine=engine, options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    got = v.failures[["record_key", "check"]].itertuples(index=False, name=None)
    assert set(got) == {
        (key_of(reports[i][0][0]), c) for i, c in ((1, "too_large"), (2, "no_eof"), (3, "missing"))
    }
    assert "decoded PDF is 30000000 bytes" in v.reason(key_of(reports[1][0][0]))
    # the same rows with the Base64 text instead: the same verdicts where the outcomes agree
    m_b64, _ = frames(*reports)
    again = validate_reports(
        m_b64, i_df, master_entity=LM, engine=engine, options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    assert again.held_keys == frozenset()


def test_tolerance_and_char_semantics_come_from_spec_options():
    report = with_item(lab_report(1, class_name="血" * 50), effective_dtime="2024-03-11 09:38:59")
    m_df, i_df = frames(report)
    strict = validate_reports(
        m_df, i_df, master_entity=LM, engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    assert {f[2] for f in found(strict)} == {"length", "effective_dtime"}
    opts = spec.SpecOptions(length_semantics="char", effective_dtime_tolerance_s=600)
    assert (
        found(
            validate_reports(
                m_df, i_df, master_entity=LM, engine="pandas", options=opts, rulebook=load_rulebook()
            )
        )
        == set()
    )
    gbk = spec.SpecOptions(length_encoding="gbk")  # 2 bytes per Chinese character: 100 bytes fit
    assert {
        f[2]
        for f in found(
            validate_reports(
                m_df, i_df, master_entity=LM, engine="pandas", options=gbk, rulebook=load_rulebook()
            )
        )
    } == {"effective_dtime"}


def test_modality_can_move_to_class_name_D4():
    opts = spec.SpecOptions(exam_modality_field="class_name")
    m_df, i_df = frames(exam_report(1, class_code="A01", class_name="CT"), exam_report(2, class_name="平扫"))
    v = validate_reports(
        m_df, i_df, master_entity=XM, engine="pandas", options=opts, rulebook=load_rulebook()
    )
    assert found(v) == {(XM, "class_name", "dictionary", "not_in")}
    assert v.failures["row"].tolist() == [1]


# --- records ---------------------------------------------------------------------------------


def accept(**changes: str | None) -> dict:
    return {**filler("sehr_accept_record"), **ACCEPT_EXAMPLE, **changes}


RECORD_CASES = [
    ("accept-example-is-clean", [accept()], set(), False),
    ("reject-without-reason", [accept(reason=None)], {("reason", "not_null", "conditional")}, True),
    ("reject-with-unknown-reason-11", [accept(reason="11")], {("reason", "dictionary", "not_in")}, True),
    ("accept-without-reason-is-fine", [accept(is_accept="1", reason=None)], set(), False),
    ("accept-with-reason-is-a-warning", [accept(is_accept="1", reason="3")], {("reason", "accept_reason", "reason_given")}, False),
    ("duplicate-record-key", [accept(), accept(dept_name="x")], {("new_event_no,hr_org_code,hr_report_form_no,code,id_no", "unique_key", "duplicate")}, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "expect", "held"), [c[1:] for c in RECORD_CASES], ids=[c[0] for c in RECORD_CASES]
)
def test_accept_records(rows, expect, held):
    df = pd.DataFrame(rows)
    v = validate_records(
        df, entity="sehr_accept_record", engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    assert set(v.failures[["field", "rule", "check"]].itertuples(index=False, name=None)) == expect
    assert bool(v.held_keys) is held
    assert v.master_held.tolist() == [held] * len(rows)


def pacs_instance(**changes: str | None) -> dict:
    return {
        **filler("v_web_jcjg"),
        "STUDIUIID": "1.2.840.113619.2.437.3.279741441.35.1709683344.354",
        "SERIESIUID": "1.2.840.113619.2.437.3.279741441.35.1709683344.355",
        "INSTANCESOPIUID": "1.2.840.113619.2.437.3.279741441.35.1709683344.356.1",
        "PATIENTNAME": "王五",
        "PATIENTSEX": "1",
        "MODALITY": "CT",
        "FILESIZE": "524288",
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({}, set()),
        ({"SERIESIUID": "1.2.03.4"}, {("SERIESIUID", "uid", "format")}),
        ({"SERIESIUID": "1..2"}, {("SERIESIUID", "uid", "format")}),
        ({"SERIESIUID": "1.2.3a"}, {("SERIESIUID", "uid", "format")}),
        ({"SERIESIUID": "1.0.2"}, set()),
        ({"SERIESIUID": "1." + "2" * 63}, {("SERIESIUID", "uid", "too_long")}),
        ({"MODALITY": "XR"}, {("MODALITY", "dictionary", "not_in")}),
        ({"FILESIZE": "12.5"}, {("FILESIZE", "number", "format")}),
    ],
    ids=[
        "clean",
        "leading-zero",
        "empty-component",
        "letter",
        "zero-component-ok",
        "65-chars",
        "modality",
        "filesize",
    ],
)
def test_pacs_instances(changes, expect):
    v = validate_records(
        pd.DataFrame([pacs_instance(**changes)]),
        entity="v_web_jcjg",
        engine="pandas",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    assert set(v.failures[["field", "rule", "check"]].itertuples(index=False, name=None)) == expect


def test_wrong_entry_point_is_refused():
    with pytest.raises(ValidationError, match="validate_reports"):
        validate_records(
            pd.DataFrame([accept()]),
            entity="labmaster",
            engine="pandas",
            options=DEFAULT_OPTIONS,
            rulebook=load_rulebook(),
        )
    with pytest.raises(ValidationError, match="not a report master"):
        validate_reports(
            pd.DataFrame(),
            pd.DataFrame(),
            master_entity="sehr_accept_record",
            options=DEFAULT_OPTIONS,
            rulebook=load_rulebook(),
        )
    with pytest.raises(ValidationError, match="engine"):
        validate_records(
            pd.DataFrame([accept()]),
            entity="sehr_accept_record",
            engine="spark",
            options=DEFAULT_OPTIONS,
            rulebook=load_rulebook(),
        )


def test_object_columns_with_none_and_str_columns_with_nan_are_the_same():
    masters, items = lab_report(1, author_name=None, apply_form_no=None)
    as_object = pd.DataFrame(masters, dtype=object)
    as_str = pd.DataFrame(masters).astype("str")
    v1 = validate_reports(
        as_object,
        pd.DataFrame(items),
        master_entity=LM,
        engine="pandas",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    v2 = validate_reports(
        as_str,
        pd.DataFrame(items),
        master_entity=LM,
        engine="pandas",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    pd.testing.assert_frame_equal(v1.failures, v2.failures)
    assert found(v1) == {(LM, "author_name", "not_null", "required")}


# --- no patient identifier in clear ----------------------------------------------------------

SECRETS = {
    "name": "欧阳娜娜",
    "id_no": "11010519800101001X",
    "card_no": "K55297388",
    "birth_date": "1990-02-30",
}


def identifier_batch() -> tuple[pd.DataFrame, pd.DataFrame]:
    return frames(
        exam_report(1, name=SECRETS["name"] + "\x01" + "娜" * 50, id_no=SECRETS["id_no"],
                    card_no=SECRETS["card_no"] + "\x02", birth_date=SECRETS["birth_date"]),
        exam_report(2, birth_date="1990/03/07", name=None),
    )  # fmt: skip


def assert_no_secret(text: str) -> None:
    for v in (*SECRETS.values(), "1990/03/07", "欧阳", "娜娜", "110105198001010"):
        assert v not in text


def test_messages_and_reasons_carry_no_identifier_values():
    m_df, i_df = identifier_batch()
    v = validate_reports(
        m_df, i_df, master_entity=XM, engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    rules_hit = set(v.failures["rule"])
    assert {"xml_chars", "length", "id_card", "datetime", "not_null"} <= rules_hit
    assert_no_secret(v.failures.to_csv())
    for key in v.held_keys:
        assert_no_secret(v.reason(key))
    assert "'****/**/**' does not have the format YYYY-MM-DD" in v.failures.to_csv()


@pytest.mark.parametrize(
    ("field_name", "value", "masked"),
    [("name", "张三", "张*"), ("PATIENTNAME", "欧阳娜娜", "欧***"), ("id_no", "320102199003071239", "3201**********1239"),
     ("card_no", "K553", "****"), ("birth_date", "1990-02-30", "****-**-**")],
)  # fmt: skip
def test_mask(field_name, value, masked):
    assert mask(field_name, value) == masked


# --- Great Expectations: the same verdicts, and a result safe to keep --------------------------


@pytest.fixture(scope="module")
def every_defect() -> dict[str, tuple[pd.DataFrame, pd.DataFrame, dict[str, Case]]]:
    """One batch per report kind with every single-defect case as its own report(s)."""
    out = {}
    for kind in ("lab", "exam"):
        reports, by_key = [], {}
        for n, case in enumerate(CASES, start=1):
            if case.kind != kind or case.options != spec.SpecOptions():
                continue
            masters, items = case.build(n)
            reports.append((masters, items))
            by_key[key_of(masters[0], LM if kind == "lab" else XM)] = case
        out[kind] = (*frames(*reports), by_key)
    return out


@pytest.mark.parametrize("kind", ["lab", "exam"])
def test_gx_and_pandas_agree_on_every_defect(every_defect, kind):
    m_df, i_df, by_key = every_defect[kind]
    master_entity = LM if kind == "lab" else XM
    gx = validate_reports(
        m_df,
        i_df,
        master_entity=master_entity,
        engine="gx",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    pd_ = validate_reports(
        m_df,
        i_df,
        master_entity=master_entity,
        engine="pandas",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    pd.testing.assert_frame_equal(gx.failures, pd_.failures)
    assert gx.held_keys == pd_.held_keys
    # and each case found exactly its defects in the big batch too (orphans file under their own key)
    for key, case in by_key.items():
        got = gx.failures[gx.failures["record_key"] == key]
        expect = {e for e in case.expect if e[2] != "orphan_item"}
        assert set(got[["entity", "field", "rule", "check"]].itertuples(index=False, name=None)) == expect, (
            case.id
        )
    every_rule = set(gx.failures["rule"])
    assert every_rule >= {r for c in by_key.values() for (_, _, r, _) in c.expect}


def test_gx_and_pandas_agree_on_records():
    rows = pd.DataFrame([r for c in RECORD_CASES for r in c[1]])
    gx = validate_records(
        rows, entity="sehr_accept_record", engine="gx", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    pd_ = validate_records(
        rows, entity="sehr_accept_record", engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    pd.testing.assert_frame_equal(gx.failures, pd_.failures)
    pacs = pd.DataFrame([pacs_instance(), pacs_instance(SERIESIUID="1.02", INSTANCESOPIUID="9.9")])
    gx = validate_records(
        pacs, entity="v_web_jcjg", engine="gx", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    pd_ = validate_records(
        pacs, entity="v_web_jcjg", engine="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    pd.testing.assert_frame_equal(gx.failures, pd_.failures)


def test_gx_result_is_kept_with_rule_metadata_and_no_identifier_values():
    m_df, i_df = identifier_batch()
    v = validate_reports(
        m_df, i_df, master_entity=XM, engine="gx", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )
    result = v.gx_result
    assert set(v.gx_results) == {XM, XS}
    assert result is not None and not result.success
    plan = rules.plan(XM, options=DEFAULT_OPTIONS)
    assert len(result.results) == len(plan.checks)
    metas = [r.expectation_config.meta for r in result.results]
    assert all({"rule", "check", "entity", "field", "check_id", "severity"} <= set(m) for m in metas)
    assert {m["rule"] for m in metas} >= {
        "not_null",
        "length",
        "dictionary",
        "datetime",
        "id_card",
        "pdf",
        "uid",
    }
    types = {r.expectation_config.type for r in result.results}
    assert {
        "expect_column_values_to_not_be_null", "expect_column_values_to_be_in_set",
        "expect_column_values_to_match_regex", "expect_column_values_to_be_between",
        "expect_compound_columns_to_be_unique", "expect_column_pair_values_a_to_be_greater_than_b",
    } <= types  # fmt: skip
    failed = {r.expectation_config.meta["check_id"]: r.result for r in result.results if not r.success}
    assert failed["exammaster.id_no.id_card"]["unexpected_index_list"] == [{"__row": [0]}]
    assert_no_secret(json.dumps(result.to_json_dict(), ensure_ascii=False, default=str))


def test_gx_suite_is_built_once_per_entity():
    from hurren.validation import gx_suite

    rb = rules.load_rulebook()
    assert gx_suite(rules.plan(LM, options=DEFAULT_OPTIONS), rb) is gx_suite(
        rules.plan(LM, options=DEFAULT_OPTIONS), rb
    )
    flipped = rb.with_severity("no_items", "warning")
    suite, _ = gx_suite(rules.plan(LM, options=DEFAULT_OPTIONS), flipped)
    severities = {e.meta["check_id"]: e.severity.value for e in suite.expectations}
    assert severities["labmaster.lab_subitem.no_items"] == "warning"
    assert severities["labmaster.sex_code.dictionary.not_in"] == "critical"


@pytest.mark.parametrize(
    "pattern",
    [rules.INTEGER_RE, rules.DATETIME_RE, r"\A[0-9]+$", r"\Aab\s", r"\w+\Z", r"(?i)\Anull\Z", r"(?=1)1"],
)
def test_search_on_arrow_is_python_re_search(pattern):
    # RE2 where it gives Python's answer (\Z as \z), Python's re where it would not ($, \s, \w,
    # lookarounds): the pandas engine and GX (pandas' str.contains) read the same regexes alike.
    import re

    import pyarrow as pa

    from hurren.validation.derived import TEXT, search

    values = ["12", "12\n", "ab\x0b", "ab ", "é1", "NULL", "Null\n", "", None, "1x", "x1", "１２"]
    got = search(pa.array(values, type=TEXT), pattern).tolist()
    assert got == [v is not None and re.search(pattern, v) is not None for v in values]
