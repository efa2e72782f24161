"""Sample records shaped like the spec's examples, with made-up people: for tests, the benchmark
and a payload file to start an integration from::

    python -m hurren_testkit.samples lab > lab.xml
    python -m hurren.platform send ArchiveAutoReport lab.xml

Values follow the spec's examples, corrected where our decisions say so: ``retrieve_date`` a
date (D1), exam ``class_code`` a Modality code (D4), standard department codes from STD_DEPT
(D10). The identity number is synthetic (it passes no checksum on purpose: never a real person).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from hurren.platform import xml as payloads
from hurren.platform.xml import BEIJING
from hurren.spec import DEFAULT_OPTIONS

__all__ = [
    "accept_records",
    "daily_counts",
    "exam_report",
    "lab_report",
    "payload",
    "pdf_bytes",
    "quote_records",
]

SAMPLE_ID_NO = "650000190001010000"


def _now() -> datetime:
    return datetime.now(BEIJING).replace(tzinfo=None, microsecond=0)


def pdf_bytes(size: int = 1024) -> bytes:
    """A PDF-looking byte string of about ``size`` bytes (starts with %PDF-, which is all the spec checks)."""
    head = b"%PDF-1.4\n% hurren sample\n"
    tail = b"\n%%EOF\n"
    body = bytes((i * 7919) % 251 for i in range(max(0, size - len(head) - len(tail))))
    return head + body + tail


def lab_report(
    *,
    report_form_no: str = "14437173",
    org_code: str = "457759922",
    event_no: str = "1878",
    patient_id: str = "1878",
    id_no: str = SAMPLE_ID_NO,
    when: datetime | None = None,
    items: int = 2,
    pdf_size: int = 1024,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A lab report (labmaster, lab_subitems) as in §1.2.2.1; ``when`` is the authentication time."""
    at = when or _now()
    master: dict[str, Any] = {
        "last_update_dtime": at,
        "org_code": org_code,
        "apply_form_no": None,
        "report_form_no": report_form_no,
        "patient_id": patient_id,
        "event_type": 1,
        "event_no": event_no,
        "id_no": id_no,
        "id_type_code": "01",
        "card_no": "K55297388",
        "retrieve_date": at.date(),
        "class_code": "A01",
        "class_name": "生化",
        "class_local_name": "生化",
        "report_title": "常规报告",
        "effective_dtime": at - timedelta(hours=1),
        "name": "样例患者",
        "sex_code": "1",
        "sex_name": "男性",
        "author_id": "8262",
        "author_dtime": at,
        "author_name": "黄胜",
        "authenticator_id": "8262",
        "authenticator_dtime": at,
        "authenticator_name": "黄胜",
        "participant_id": "8106",
        "participant_dtime": at - timedelta(hours=2),
        "participant_name": "白萍",
        "participant_dept_code": "1511",
        "participant_dept_name": "保健科门诊",
        "participant_dept_std_code": "A01",
        "participant_dept_std_name": "预防保健科",
        "order_id": report_form_no,
        "order_priority": None,
        "order_priority_name": None,
        "specimen_id": "33",
        "specimen_class_code": None,
        "specimen_determiner_code": None,
        "specimen_determiner_name": None,
        "performer_dept_code": "4300",
        "performer_dept_name": "检验科",
        "performer_dept_std_code": "A30",
        "performer_dept_std_name": "医学检验科",
        "performer_doctor": "林平",
        "performer_dtime": at - timedelta(hours=1),
        "playing_device": "BS-2000M",
        "data_status": 1,
        "pdf": pdf_bytes(pdf_size),
    }
    analytes = [
        ("250301002", "白蛋白(ALB)", "*白蛋白(溴甲酚氯)", "45.3", "g/L", "40.0000", "55.0000", 1),
        ("AG", "阴离子间隙", "阴离子间隙", "11.25", "mmol/L", None, None, 0),
        ("250306005", "乳酸脱氢酶(LDH)", "乳酸脱氢酶(比色法)", "198", "U/L", "120.0000", "250.0000", 1),
    ]
    rows = []
    for n in range(items):
        code, name, local, value, unit, lo, hi, rec = analytes[n % len(analytes)]
        rows.append(
            {
                "last_update_dtime": at,
                "org_code": org_code,
                "event_no": event_no,
                "report_form_no": report_form_no,
                "serial_no": 46530131 + n,
                "class_code": code if n < len(analytes) else f"{code}.{n}",
                "class_name": name,
                "class_local_name": local,
                "result_type": "PQ",
                "result_type_descr": "数值型",
                "result_value": value,
                "result_unit": unit,
                "norm_lower_limit": lo,
                "norm_upper_limit": hi,
                "norm_value_notes": None,
                "result_interpre": "N",
                "result_interpre_descr": "正常",
                "effective_dtime": at,
                "examine_way": None,
                "recognition": rec,
            }
        )
    return master, rows


def exam_report(
    *,
    report_form_no: str = "71468573",
    org_code: str = "457759922",
    event_no: str = "2022208962",
    patient_id: str = "1658522",
    id_no: str = SAMPLE_ID_NO,
    when: datetime | None = None,
    items: int = 1,
    pdf_size: int = 1024,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An exam report (exammaster, exam_subitems) as in §1.2.2.3."""
    at = when or _now()
    master: dict[str, Any] = {
        "last_update_dtime": at,
        "org_code": org_code,
        "apply_form_no": "333493",
        "state": "4",
        "report_form_no": report_form_no,
        "patient_id": patient_id,
        "event_type": 1,
        "event_no": event_no,
        "performer_dtime": at - timedelta(hours=1),
        "pacs_id": "0000544534",
        "study_instance_uid": "1.2.840.113619.2.437.3.279741441.35.1709683344.354",
        "id_no": id_no,
        "id_type_code": "01",
        "card_no": "AD9329902",
        "checked_status": "1",
        "class_code": "CT",
        "class_name": "CT",
        "retrieve_date": at.date(),
        "report_title": "CT平扫+三维重建",
        "effective_dtime": at,
        "confidentiality": None,
        "name": "样例患者",
        "sex_code": "1",
        "sex_name": "男",
        "birth_date": datetime(1967, 2, 1).date(),
        "author_id": "2292",
        "author_dtime": at,
        "author_name": "张欣悦",
        "authenticator_id": "8287",
        "authenticator_dtime": at,
        "authenticator_name": "曹海念",
        "authenticator_dept_code": "3221",
        "authenticator_dept_name": "普通放射",
        "authenticator_dept_std_code": "A32",
        "authenticator_dept_std_name": "医学影像科",
        "participant_dept_code": "1411",
        "participant_dept_name": "耳鼻喉门诊",
        "participant_dept_std_code": "A03",
        "participant_dept_std_name": "内科",
        "participant_id": "8401",
        "participant_dtime": at - timedelta(hours=2),
        "participant_name": "罗高青",
        "order_id": None,
        "order_priority": None,
        "order_priority_name": None,
        "performer_dept_code": "3221",
        "performer_dept_name": "普通放射",
        "performer_dept_std_code": "A32",
        "performer_dept_std_name": "医学影像科",
        "performer_doctor": "陈星榕",
        "playing_device": "CT报告",
        "outpat_diag_name": "慢性鼻炎;鼻中隔偏曲",
        "patient_condition_desc": "无",
        "exam_purpose": None,
        "image_descr": "双上颌窦、筛窦、额窦窦腔粘膜增厚,腔内见软组织影充填。",
        "is_abnormal": "0",
        "conclusion": "鼻息肉,双侧上颌窦、筛窦、额窦慢性炎症。",
        "arrive_dtime": at - timedelta(hours=1, minutes=30),
        "data_status": 1,
        "pacs_url": "http://pacs.example.invalid/view?study=354",
        "pdf": pdf_bytes(pdf_size),
    }
    rows = [
        {
            "last_update_dtime": at,
            "org_code": org_code,
            "event_no": event_no,
            "report_form_no": report_form_no,
            "exam_site_code": str(115 + n),
            "body_part_name": "CT平扫+三维重建",
            "exam_item_code": str(115 + n),
            "exam_item_name": "CT平扫+三维重建",
            "effective_dtime": at,
            "recognition": 1,
        }
        for n in range(items)
    ]
    return master, rows


def daily_counts(*, org_code: str = "457759922", day: datetime | None = None) -> list[dict[str, Any]]:
    """Two lab_exam_report rows as in §1.2.2.5."""
    at = day or _now()
    common = {"last_update_dtime": at, "org_code": org_code, "date_t": (at - timedelta(days=1)).date()}
    return [
        {
            **common,
            "dept_code": "1190000",
            "dept_name": "内镜中心",
            "dept_std_code": "A03",
            "dept_std_name": "内科",
            "lab_num": 0,
            "exam_num": 74,
        },
        {
            **common,
            "dept_code": "1180000",
            "dept_name": "超声室",
            "dept_std_code": "A32.05",
            "dept_std_name": "超声诊断专业",
            "lab_num": 0,
            "exam_num": 490,
        },
    ]


def _record(
    report_form_no: str, code: str, type_: str, id_no: str, new_event_no: str, at: datetime
) -> dict[str, Any]:
    return {
        "new_event_no": new_event_no,
        "new_event_type": "1",
        "hr_org_code": "457759922",
        "hr_report_form_no": report_form_no,
        "code": code,
        "id_no": id_no,
        "id_type_code": "01",
        "record_time": at,
        "type": type_,
        "dept_code": "ZSBY-10",
        "dept_name": "急诊外科",
        "dept_std_code": "A50.16",
        "dept_std_name": "急诊科专业",
        "doc_code": "9050",
        "doc_name": "郑伟军",
    }


def accept_records(
    *,
    report_form_no: str = "14437173",
    codes: tuple[str, ...] = ("250301002",),
    type_: str = "2",
    is_accept: str = "1",
    id_no: str = SAMPLE_ID_NO,
    new_event_no: str = "5036612",
) -> list[dict[str, Any]]:
    """sehr_accept_record rows (§1.4.2.3); ``type_`` 1 exam, 2 lab; a refusal carries reason 1."""
    at = _now()
    return [
        {
            **_record(report_form_no, c, type_, id_no, new_event_no, at),
            "is_accept": is_accept,
            "reason": "1" if is_accept == "2" else None,
        }
        for c in codes
    ]


def quote_records(
    *,
    report_form_no: str = "14437173",
    codes: tuple[str, ...] = ("250301002",),
    type_: str = "2",
    id_no: str = SAMPLE_ID_NO,
    new_event_no: str = "5036612",
) -> list[dict[str, Any]]:
    """sehr_quote_record rows (§1.4.2.6)."""
    at = _now()
    return [_record(report_form_no, c, type_, id_no, new_event_no, at) for c in codes]


KINDS = ("lab", "exam", "counts", "accept", "quote", "void-lab", "void-exam")


def payload(kind: str, *, pdf_size: int = 1024) -> bytes:
    """A spec-shaped payload of ``kind`` (one of :data:`KINDS`), built as the pipeline builds it
    under the spec's defaults (the spec's own examples), whatever a site's profile."""
    o = DEFAULT_OPTIONS
    if kind in ("lab", "exam"):
        master, items = (lab_report if kind == "lab" else exam_report)(pdf_size=pdf_size)
        return payloads.build_report(kind, master, items, options=o)
    if kind == "counts":
        return payloads.build_daily_counts(daily_counts(), options=o)
    if kind == "accept":
        return payloads.build_records("sehr_accept_record", accept_records(), options=o)
    if kind == "quote":
        return payloads.build_records("sehr_quote_record", quote_records(), options=o)
    report_kind = kind.split("-", 1)[1]
    master, _ = (lab_report if report_kind == "lab" else exam_report)()
    return payloads.build_void_filter(report_kind, master, options=o)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hurren_testkit.samples", description="print a spec-shaped sample payload"
    )
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--pdf-size", type=int, default=1024)
    args = p.parse_args(argv)
    sys.stdout.write(payload(args.kind, pdf_size=args.pdf_size).decode("utf-8") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
