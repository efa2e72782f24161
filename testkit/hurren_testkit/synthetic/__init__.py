"""A seeded, deterministic synthetic hospital: the source databases the pipeline extracts from.

It builds, in PostgreSQL, MySQL/MariaDB or SQLite, the standard source views of the spec for N hospitals and a
chosen day: lab and exam reports with sub-items and real small PDFs (1.2.2.1, 1.2.2.3), the PACS
views (2.3), and accept/quote records (1.3.2.5, 1.3.2.6) that refer to the *other* hospitals'
reports. Optionally a reproducible fraction of the units carries exactly one labelled defect of
a kind validation must catch (:data:`DEFECT_KINDS`). It drives the demo, the tests and the
benchmarks::

    from hurren import synthetic
    hospitals = synthetic.make_hospitals(2, seed=7)
    synthetic.generate_region("sqlite:///out/h_{org}.db", hospitals=hospitals, day="2026-11-24",
                              lab_reports=2000, exam_reports=500, seed=7, defect_rate=0.05)

or ``python -m hurren_testkit.synthetic --url URL --hospitals 2 --day 2026-11-24 --lab 2000 --exam 500
--defect-rate 0.05 --seed 7`` (``--help`` for the rest, ``--list-kinds`` for the defect table).

Schema choices (``hurren_testkit.synthetic.schema``)
--------------------------------------------
- One table per source entity, named as the entity (``labmaster``, ``lab_subitem``, ``exammaster``,
  ``exam_subitem``, ``sehr_accept_record``, ``sehr_quote_record``, ``v_web_jcjg``, ``v_web_jctj``),
  columns named exactly as the spec's fields (``include/spec/*.tsv``: lower case for reports and
  records, UPPER case for the PACS views -- quote them in SQL).
- Every column is unbounded TEXT, nullable, so that defective values (too long, NULL, a bad date)
  can be stored at all; dates are rendered ``YYYY-MM-DD HH:MM:SS`` (``YYYY-MM-DD`` for date
  fields), Beijing time, naive. The exception is each table's *watermark*, a real
  TIMESTAMP column, NOT NULL and indexed, so incremental extraction can use an index:
  ``last_update_dtime`` (reports and sub-items), ``CREATEDTIME`` (v_web_jcjg), ``MODIFYTIME``
  (v_web_jctj) and ``record_time`` (the records: the spec gives them no other time). SQLite stores
  those as ``YYYY-MM-DD HH:MM:SS`` text (no microseconds), so text comparisons with the spec's
  format work there too. On MySQL/MariaDB text is ``LONGTEXT`` (``TEXT`` stops at 64 KB), tables are
  ``utf8mb4`` with ``utf8mb4_bin`` (4-byte characters kept, keys compared byte by byte as on
  PostgreSQL), indexes take a 64-character prefix of a text column, and watermarks are
  ``DATETIME`` (no time zone).
- No primary keys or unique constraints (a duplicate-key defect must be storable); plain indexes on
  the master key (``org_code, report_form_no``), the sub-item link (``org_code, event_no,
  report_form_no``) and the PACS study UID.
- ``pdf`` holds the Base64 text of a real PDF 1.4 (as the spec's XML carries it), ~2 KB by default,
  padded with incompressible bytes to ``pdf_kb`` KB on request.
- ``hurren_defect_labels``: one row per injected defect (see :class:`~hurren_testkit.synthetic.defects.Label`):
  ``entity`` (the table of the defective row), the report key (``org_code, report_form_no,
  event_no, patient_id, event_type``, as stored, defect included), ``item_key`` (``serial_no`` /
  ``exam_item_code`` / the PACS row's UID / the record's ``code``), ``kind``, ``field``,
  ``expected_rule``, ``row_key`` (JSON of the entity's key columns) and ``detail``.
- A source database is one hospital's. Several hospitals may share one (``org_code`` tells
  reports and PACS rows apart) but the accept/quote records have no column for the hospital that
  wrote them, so give each hospital its own database (``{org}`` in the URL) when records matter.

Content
-------
Patients with zh-CN names (Han and Uyghur; ~2 % with a 4-byte UTF-8 character, which is valid
text, not a defect), 18-character ID numbers whose birth date, sex digit and GB 11643-1999 check
character are consistent with ``birth_date``/``sex_code`` (~2 % passports, id_type_code 03);
STD_DEPT codes with their dictionary names; lab panels of LOINC-coded analytes with units,
reference limits and N/H/L consistent with them, urinalysis and serology as CD text results;
exam reports with a Modality ``class_code``, 1-3 sub-items, findings text, and a PACS study
whose ``STUDIUIID`` equals ``study_instance_uid`` (``2.25.<uuid-int>`` DICOM UIDs, <= 64 chars).
Sub-item ``effective_dtime`` is 0-90 s before the master's ``authenticator_dtime`` (D9: within
300 s); all times of a day's reports fall within that day.

Determinism: every report, patient, record and defect is drawn from its own
``random.Random(f"{seed}|{org}|{day}|...|{index}")`` stream, never the global one, never the
clock: the same seed and parameters give byte-identical rows, whatever the chunk size, and a run
with defects differs from the clean run only in the rows and fields its labels name.
"""

from __future__ import annotations

from .defects import DEFECT_KINDS, Label
from .generate import (
    Changes,
    Manifest,
    ReportKey,
    decode_pdf,
    drop_database,
    ensure_database,
    generate_changes,
    generate_hospital_day,
    generate_region,
)
from .pdf import build_pdf, pdf_problems
from .people import Hospital, Patient, id_check_digit, is_valid_id_no, make_hospitals, make_id_no
from .schema import (
    LABEL_TABLE,
    SOURCE_ENTITIES,
    WATERMARKS,
    create_source_schema,
    drop_source_schema,
    source_metadata,
)

__all__ = [
    "DEFECT_KINDS",
    "LABEL_TABLE",
    "SOURCE_ENTITIES",
    "WATERMARKS",
    "Changes",
    "Hospital",
    "Label",
    "Manifest",
    "Patient",
    "ReportKey",
    "build_pdf",
    "create_source_schema",
    "decode_pdf",
    "drop_database",
    "drop_source_schema",
    "ensure_database",
    "generate_changes",
    "generate_hospital_day",
    "generate_region",
    "id_check_digit",
    "is_valid_id_no",
    "make_hospitals",
    "make_id_no",
    "pdf_problems",
    "source_metadata",
]
