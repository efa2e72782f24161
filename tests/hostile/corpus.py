"""The hostile-input corpus: kinds of bad (or valid-but-odd) source data, one defect each.

Every kind starts from the spec's example lab report (1.2.2.1) or exam report (1.2.2.3), completed
from the field tables (the builders of ``tests/unit/test_validation.py``), and breaks ONE thing.
``rule`` is the rule id the report must be quarantined for; ``None`` means the report must LOAD,
with the odd value stored unchanged. ``tiny_pdf_limit``: validate with a rule book whose
``pdf_max_bytes`` is 64 (the real limit, 20 MiB, would make the test slow). ``prior``: a version of
the same report loaded first (a newer or an equally old one); ``stale``: the report must then be
counted stale (an older change time than the stored version: not stored, not queued).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tests.unit.test_validation import PDF, VALID_ID, exam_report, lab_report, with_item

Report = tuple[list[dict], list[dict]]

# A GB 11643 ID whose check character is X (used in lower case below, too).
ID_X = "11010519800101018X"
LEGACY_15 = "110105800101001"
# a change time two days ahead of the hospital's clock (Beijing), and the 9999 placeholder
TOMORROW = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Kind:
    id: str
    build: Callable[[int], Report]
    rule: str | None  # the quarantine rule id, or None: must load
    proves: str
    report: str = "lab"  # lab | exam
    tiny_pdf_limit: bool = False
    bug: str | None = None  # a known library bug: the test is xfail(strict) with this reason
    stored: tuple[str, str] | None = None  # (field, value) that must be stored and pushed unchanged
    prior: Callable[[int], Report] | None = None  # a version of the same report loaded first
    stale: bool = False  # counted stale: the prior version stays


def _orphan(n: int) -> Report:
    masters, items = lab_report(n)
    stray = dict(items[0], report_form_no=f"X{n:04d}")
    return masters, [*items, stray]


def _dup_master(n: int) -> Report:
    masters, items = lab_report(n)
    return [masters[0], dict(masters[0])], items


KINDS: list[Kind] = [
    # --- dates and times -------------------------------------------------------------------------
    Kind("impossible-date-feb-30", lambda n: lab_report(n, authenticator_dtime="2024-02-30 10:00:00"), "datetime",
         "a date that does not exist is refused, not rolled over to March"),
    Kind("non-leap-feb-29", lambda n: lab_report(n, retrieve_date="2023-02-29"), "datetime",
         "2023 is not a leap year"),
    Kind("leap-feb-29-is-valid", lambda n: lab_report(n, retrieve_date="2024-02-29"), None,
         "2024-02-29 is real and loads", stored=("retrieve_date", "2024-02-29")),
    Kind("time-24-00-00", lambda n: lab_report(n, author_dtime="2024-03-11 24:00:00"), "datetime",
         "ISO's end-of-day 24:00:00 is not a valid clock time for the store"),
    Kind("time-25h", lambda n: lab_report(n, author_dtime="2024-03-11 25:00:00"), "datetime",
         "hours past 23 are refused"),
    Kind("date-with-slashes", lambda n: lab_report(n, author_dtime="2024/03/01 10:00:00"), "datetime",
         "the format is YYYY-MM-DD HH:MM:SS, nothing else"),
    Kind("date-only-in-datetime-field", lambda n: lab_report(n, performer_dtime="2024-03-11"), "datetime",
         "a DATETIME field needs the time part"),
    Kind("datetime-with-trailing-newline", lambda n: lab_report(n, author_dtime="2024-03-11 09:29:00\n"), "datetime",
         "no trimming of invisible junk in dates"),
    Kind("datetime-with-leading-space", lambda n: lab_report(n, author_dtime=" 2024-03-11 09:29:00"), "datetime",
         "leading spaces in a date are a format error"),
    Kind("exam-retrieve-date-as-datetime", lambda n: exam_report(n, retrieve_date="2024-05-11 08:00:00"), "datetime",
         "exam retrieve_date is a DATE (D1 applies to lab only)", report="exam"),
    # --- codes -----------------------------------------------------------------------------------
    Kind("unknown-sex-code", lambda n: lab_report(n, sex_code="F"), "dictionary", "closed dictionaries are closed"),
    Kind("unknown-event-type", lambda n: lab_report(n, event_type="7"), "dictionary", "STD_EVENT_TYPE"),
    Kind("unknown-dept-std-code", lambda n: lab_report(n, performer_dept_std_code="4300"), "dictionary",
         "a local code where the standard one belongs"),
    Kind("unknown-item-interpretation", lambda n: with_item(lab_report(n), result_interpre="XX"), "dictionary",
         "a sub-item's bad code holds the whole report"),
    Kind("exam-class-not-modality", lambda n: exam_report(n, class_code="A01"), "dictionary",
         "exam class_code is a DICOM Modality (D4)", report="exam"),
    # --- sizes -----------------------------------------------------------------------------------
    Kind("oversize-bytes-50-hanzi", lambda n: lab_report(n, class_name="血" * 50), "length",
         "50 characters but 150 UTF-8 bytes > 128: the limit is in bytes"),
    Kind("oversize-chars-129-ascii", lambda n: lab_report(n, class_name="a" * 129), "length",
         "one character too many"),
    Kind("oversize-33-emoji", lambda n: lab_report(n, class_name="😀" * 33), "length", "4-byte characters count 4"),
    Kind("fits-32-emoji-128-bytes", lambda n: lab_report(n, class_name="😀" * 32), None,
         "exactly at the byte limit loads", stored=("class_name", "😀" * 32)),
    # --- characters ------------------------------------------------------------------------------
    Kind("control-char-soh", lambda n: lab_report(n, report_title="血常\x01规"), "xml_chars",
         "C0 controls cannot be sent in XML 1.0"),
    Kind("control-char-nul", lambda n: lab_report(n, report_title="血常\x00规"), "xml_chars", "NUL is refused"),
    Kind("control-char-esc", lambda n: with_item(lab_report(n), class_local_name="白蛋白\x1b[31m"), "xml_chars",
         "terminal escapes in a sub-item"),
    Kind("noncharacter-fffe", lambda n: with_item(lab_report(n), class_local_name="白蛋白\ufffe"), "xml_chars",
         "U+FFFE is not an XML character"),
    Kind("lone-surrogate", lambda n: lab_report(n, author_name="黄\ud800胜"), "xml_chars",
         "a half of a UTF-16 pair (bad GBK/UTF-16 decoding, surrogateescape) is refused, and the report "
         "still reaches the quarantine (it once failed the whole batch in load.content_hash)"),
    Kind("emoji-4-byte-utf8", lambda n: lab_report(n, report_title="血常规😀🧪"), None,
         "4-byte UTF-8 is valid and must load", stored=("report_title", "血常规😀🧪")),
    Kind("mojibake-latin1-of-utf8", lambda n: lab_report(n, report_title="Ã¥Â¼Â\xa0常规"), None,
         "mojibake is valid Unicode: it cannot be told from text, so it loads unchanged (documented limit)",
         stored=("report_title", "Ã¥Â¼Â\xa0常规")),
    Kind("replacement-char-fffd", lambda n: lab_report(n, report_title="血\ufffd\ufffd规"), None,
         "U+FFFD (lossy GBK decode upstream) is a valid XML char: loads unchanged (documented limit)",
         stored=("report_title", "血\ufffd\ufffd规")),
    Kind("tab-lf-cr-are-fine", lambda n: with_item(lab_report(n), norm_value_notes="a\tb\nc\r\nd"), None,
         "whitespace controls allowed by XML load"),
    Kind("sql-injection-text", lambda n: lab_report(n, report_title="'; DROP TABLE labmaster;--"), None,
         "SQL-looking text is data: bound parameters, loads unchanged",
         stored=("report_title", "'; DROP TABLE labmaster;--")),
    Kind("xml-markup-text", lambda n: lab_report(n, report_title="<item/>&amp;\"'"), None,
         "XML-looking text is escaped by the builder and round-trips", stored=("report_title", "<item/>&amp;\"'")),
    Kind("cdata-end-text", lambda n: lab_report(n, report_title="]]><![CDATA[x"), None,
         "']]>' round-trips", stored=("report_title", "]]><![CDATA[x")),
    Kind("leading-trailing-spaces-text", lambda n: lab_report(n, report_title="  常规报告  "), None,
         "spaces in free text are kept as sent", stored=("report_title", "  常规报告  ")),
    # --- numbers ---------------------------------------------------------------------------------
    Kind("number-not-numeric", lambda n: with_item(lab_report(n), serial_no="12a"), "number", "NUMBER needs digits"),
    Kind("number-fullwidth-digits", lambda n: with_item(lab_report(n), serial_no="１２"), "number",
         "full-width digits are not ASCII digits"),
    Kind("number-too-many-digits", lambda n: with_item(lab_report(n), serial_no="12345678901"), "number",
         "NUMBER(10) holds 10 digits"),
    Kind("number-negative", lambda n: with_item(lab_report(n), serial_no="-5"), "number",
         "a serial number cannot be negative"),
    Kind("number-with-spaces", lambda n: with_item(lab_report(n), serial_no=" 12 "), "number",
         "spaces around digits are refused, not trimmed"),
    Kind("pq-result-not-numeric", lambda n: with_item(lab_report(n), result_value="阳性"), "pq_numeric",
         "a PQ result must be a number"),
    Kind("pq-negative-result-is-fine", lambda n: with_item(lab_report(n), result_value="-0.5"), None,
         "negative physical quantities (e.g. base excess) load"),
    Kind("limits-inverted", lambda n: with_item(lab_report(n), 1, norm_lower_limit="55.0", norm_upper_limit="40.0"),
         "limits_order", "lower limit above upper"),
    # --- identity documents ----------------------------------------------------------------------
    Kind("id-check-digit-wrong", lambda n: lab_report(n, id_no=VALID_ID[:-1] + "7"), "id_card", "GB 11643 check"),
    Kind("id-birth-date-impossible", lambda n: lab_report(n, id_no="110105198002300011"), "id_card",
         "birth date inside the ID must exist"),
    Kind("id-17-digits", lambda n: lab_report(n, id_no=VALID_ID[:-1]), "id_card", "wrong length"),
    Kind("id-15-digit-legacy", lambda n: lab_report(n, id_no=LEGACY_15), None,
         "old 15-digit IDs are a warning only: load", stored=("id_no", LEGACY_15)),
    Kind("id-lowercase-x", lambda n: lab_report(n, id_no=ID_X.lower()), "id_card",
         "GB 11643 writes the check character as capital X; lower-case x is held, not silently upper-cased"),
    Kind("id-uppercase-x", lambda n: lab_report(n, id_no=ID_X), None, "upper-case X check character"),
    # --- keys and links --------------------------------------------------------------------------
    Kind("null-primary-key", lambda n: lab_report(n, event_no=None), "not_null",
         "a NULL key column is refused (and the items are orphaned with it)"),
    Kind("duplicate-master-same-chunk", _dup_master, "unique_key", "two versions of a key in one chunk: held"),
    Kind("duplicate-item-key", lambda n: with_item(lab_report(n), 1, serial_no="46530100"), "unique_key",
         "two sub-items with one key"),
    Kind("orphan-sub-item", _orphan, "orphan_item", "a sub-item whose master is not in the batch is filed alone"),
    Kind("master-without-items", lambda n: lab_report(n, items=0), "no_items", "a report with no results"),
    Kind("required-field-missing", lambda n: lab_report(n, author_name=None), "not_null", "required field NULL"),
    Kind("required-field-empty", lambda n: with_item(lab_report(n), result_interpre=""), "not_null",
         "an empty string is as good as NULL"),
    # --- PDFs ------------------------------------------------------------------------------------
    Kind("pdf-not-base64", lambda n: lab_report(n, pdf="not base64 at all!"), "pdf", "Base64 must decode"),
    Kind("pdf-base64-of-html", lambda n: lab_report(n, pdf=base64.b64encode(b"<html>x</html>").decode()), "pdf",
         "Base64 that is not a PDF"),
    Kind("pdf-truncated", lambda n: lab_report(n, pdf=base64.b64encode(PDF[:-7]).decode()), "pdf", "no %%EOF"),
    Kind("pdf-empty", lambda n: lab_report(n, pdf=""), "pdf", "no PDF at all"),
    Kind("pdf-oversize", lambda n: lab_report(n), "pdf", "bigger than params.pdf_max_bytes (64 here)",
         tiny_pdf_limit=True),
    # --- UIDs ------------------------------------------------------------------------------------
    Kind("exam-uid-malformed-is-warning", lambda n: exam_report(n, study_instance_uid="1.2.03.4"), None,
         "a bad DICOM UID is a warning (D11): loads", report="exam"),
    # --- object keys (issue #17): every value a valid report may carry makes a key S3 takes -----
    Kind("report-form-no-dot-dot", lambda n: lab_report(n, report_form_no=".."), None,
         "'..' is a path segment S3 clients refuse: the key's segment becomes '..~<hash>', the report loads",
         stored=("report_form_no", "..")),
    Kind("report-form-no-dot", lambda n: lab_report(n, report_form_no="."), None,
         "'.' likewise", stored=("report_form_no", ".")),
    Kind("report-form-no-percent-2e", lambda n: lab_report(n, report_form_no="%2e%2E"), None,
         "an encoded dot is not decoded into one: '%252e%252E'", stored=("report_form_no", "%2e%2E")),
    Kind("report-form-no-slashes-and-dots", lambda n: lab_report(n, report_form_no="a/../b"), None,
         "slashes are encoded: one segment, no path", stored=("report_form_no", "a/../b")),
    Kind("report-form-no-42-hanzi", lambda n: lab_report(n, report_form_no="检" * 42), None,
         "126 bytes fit VARCHAR2(128) but 378 encoded bytes are more than MinIO takes in a segment: "
         "a readable prefix and a hash", stored=("report_form_no", "检" * 42)),
    # --- change times (issue #17) ------------------------------------------------------------
    Kind("older-version-after-newer", lambda n: lab_report(n), None,
         "a version older than the stored one (a later chunk, a backfill, a source holding two) is stale: "
         "not stored, not queued, the newer one stays",
         prior=lambda n: lab_report(n, last_update_dtime="2024-03-11 10:00:00", report_title="复核报告"), stale=True),
    Kind("same-change-time-other-content", lambda n: lab_report(n, report_title="更正报告"), None,
         "the same change time with other content is a correction within the second: it loads",
         prior=lambda n: lab_report(n, report_title="初版报告"), stored=("report_title", "更正报告")),
    Kind("change-time-9999", lambda n: lab_report(n, last_update_dtime="9999-12-31 23:59:59"), "future_dtime",
         "a change time far in the future (a placeholder or a wrong clock) is held, never stored"),
    Kind("change-time-two-days-ahead", lambda n: lab_report(n, last_update_dtime=TOMORROW), "future_dtime",
         "beyond the hospital's now + 60 min: the source's clock is wrong"),
    # --- placeholders (issue #17) ------------------------------------------------------------
    Kind("placeholder-null-in-required", lambda n: lab_report(n, author_name="NULL"), "placeholder",
         "'NULL' in a required field is no author"),
    Kind("placeholder-none-in-key", lambda n: lab_report(n, patient_id="None"), "placeholder",
         "Python's None as text in a key column"),
    Kind("placeholder-spaced-lower-case", lambda n: lab_report(n, author_name=" null "), "placeholder",
         "any case, surrounding spaces"),
    Kind("placeholder-n-a-in-item", lambda n: with_item(lab_report(n), class_name="N/A"), "placeholder",
         "a sub-item's required name holds the whole report"),
    Kind("placeholder-in-optional-field-loads", lambda n: lab_report(n, apply_form_no="NULL"), None,
         "an optional field may hold the text (it may be real; the rule is for required fields and keys)",
         stored=("apply_form_no", "NULL")),
    # --- invisible characters (issue #17) ----------------------------------------------------
    Kind("bom-in-key", lambda n: lab_report(n, patient_id="\ufeff1878"), "invisible_chars",
         "'\\ufeff1878' and '1878' must not become two reports"),
    Kind("zero-width-space-in-report-form-no", lambda n: lab_report(n, report_form_no=f"R{n}\u200b"), "invisible_chars",
         "a zero-width space in the report number"),
    Kind("bidi-override-in-key", lambda n: lab_report(n, event_no="\u202e1878"), "invisible_chars",
         "a right-to-left override in a key"),
    Kind("zero-width-in-open-list-code", lambda n: with_item(lab_report(n), class_code="\u200d250301002"),
         "invisible_chars", "open lists (LOINC 3.7) accept any code, but not an invisible character in it"),
    Kind("bidi-marks-in-free-text-load", lambda n: lab_report(n, report_title="\u202b常规报告\u202c\u200f"), None,
         "free text may carry bidi controls and joiners (Uyghur text needs them): it loads unchanged",
         stored=("report_title", "\u202b常规报告\u202c\u200f")),
]  # fmt: skip

# Identifiers that must never appear in a quarantine reason or rules text.
IDENTIFIER_FIELDS = ("name", "id_no", "card_no", "birth_date")
