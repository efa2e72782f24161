"""What a real MySQL-family hospital database does to its data, through the real pipeline.

A synthetic hospital in MariaDB, then made the way such databases are: a GBK table and a GBK
column beside utf8mb4 ones holding 4-byte characters, zero dates (``0000-00-00`` in a DATE
column, ``0000-00-00 00:00:00`` in a nullable DATETIME column, stored under a ``sql_mode`` that
allows them), DATETIME cursors read by a session in another time zone, PDFs as LONGTEXT Base64 and
as LONGBLOB raw bytes. ``pipeline.run_stream`` takes lab and exam into a fresh store and S3.

Every text arrives as written; each zero date is quarantined (rule ``datetime``, the field named
in the reason), not turned into None and loaded; the other reports load with their PDFs intact;
extracted = loaded + unchanged + quarantined.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import date, datetime

import pytest
from sqlalchemy import create_engine, event, select, text

from hurren import load, pipeline, sources, store
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
FOUR_BYTE = "𪚥"  # U+2A6A5: CJK extension B, 4 bytes in UTF-8, not in GBK


@pytest.fixture(scope="module")
def hospital(make_mariadb_database: Callable[..., str]):
    hospitals = synthetic.make_hospitals(1, seed=808)
    h = hospitals[0]
    url = make_mariadb_database("hostile_mysql_src")
    synthetic.generate_hospital_day(
        url, org=h, day=DAY, lab_reports=12, exam_reports=6, seed=808, peers=hospitals, pdf_kb=1, lab_items=2,
    )  # fmt: skip
    engine = create_engine(url)
    with engine.begin() as conn:
        labs = (
            conn.execute(text("SELECT report_form_no FROM labmaster ORDER BY report_form_no")).scalars().all()
        )
        exams = conn.execute(text("SELECT report_form_no, pdf FROM exammaster ORDER BY report_form_no")).all()
        # what an old MySQL site runs with: zero dates allowed
        conn.execute(text("SET SESSION sql_mode = ''"))
        conn.execute(text("ALTER TABLE labmaster MODIFY retrieve_date DATE, MODIFY effective_dtime DATETIME"))
        conn.execute(text("ALTER TABLE labmaster MODIFY report_title LONGTEXT CHARACTER SET gbk"))
        conn.execute(text("ALTER TABLE exam_subitem CONVERT TO CHARACTER SET gbk"))
        conn.execute(text("ALTER TABLE exammaster MODIFY pdf LONGBLOB"))
        # raw bytes, as a RIS may keep them
        conn.execute(text("UPDATE exammaster SET pdf = FROM_BASE64(pdf)"))
        conn.execute(text("UPDATE labmaster SET report_title = '血常规（五分类）复核' WHERE report_form_no = :r"),
                     {"r": labs[0]})  # fmt: skip
        conn.execute(text("UPDATE labmaster SET name = CONCAT(name, :c) WHERE report_form_no = :r"),
                     {"c": FOUR_BYTE, "r": labs[1]})  # fmt: skip
        conn.execute(text("UPDATE labmaster SET retrieve_date = '0000-00-00' WHERE report_form_no = :r"),
                     {"r": labs[2]})  # fmt: skip
        conn.execute(text("UPDATE labmaster SET effective_dtime = '0000-00-00 00:00:00' WHERE report_form_no = :r"),
                     {"r": labs[3]})  # fmt: skip
        stored = {
            r.report_form_no: (r.retrieve_date, r.effective_dtime)
            for r in conn.execute(text(
                "SELECT report_form_no, CAST(retrieve_date AS CHAR) AS retrieve_date,"
                " CAST(effective_dtime AS CHAR) AS effective_dtime FROM labmaster"))
        }  # fmt: skip
    # really zero dates in the source
    assert stored[labs[2]][0] == "0000-00-00" and stored[labs[3]][1] == "0000-00-00 00:00:00"
    body = {"id": "mysql_site", "org_code": h.org_code, "org_name": h.name, "conn_id": "c", "dialect": "mysql",
            "chunk_size": 5}  # fmt: skip
    source = sources.parse_sources(json.dumps({"hospitals": [body]})).get("mysql_site")
    yield {"source": source, "engine": engine, "labs": labs, "exam_pdfs": dict(exams)}
    engine.dispose()


@pytest.fixture(scope="module")
def loaded(hospital, make_database, s3):
    """Lab and exam through the pipeline, read by a session whose time zone is not the source's."""
    store_engine = create_engine(make_database("hostile_mysql_store"))
    store.create_all(store_engine)
    source_engine = create_engine(hospital["engine"].url)
    set_zone = "SET time_zone = '-05:00'"  # DATETIME has no zone: nothing may shift
    event.listen(source_engine, "connect", lambda dbapi, _: dbapi.cursor().execute(set_zone))
    summaries = {}
    for stream in ("lab", "exam"):
        summaries[stream] = pipeline.run_stream(
            source=hospital["source"], stream=stream, source_engine=source_engine, store_engine=store_engine,
            pdfs=load.Pdfs(s3.client, s3.bucket_reports), run_id="mysql", dag_id="hostile",
            until=datetime(2024, 3, 12), backfill_since=datetime(2024, 3, 11), validator="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
        ).counts  # fmt: skip
    source_engine.dispose()
    yield summaries, store_engine
    store_engine.dispose()


def test_counts_add_up_and_every_report_is_read_whatever_the_session_time_zone(loaded) -> None:
    counts, _ = loaded
    assert counts["lab"].extracted == 12 and counts["exam"].extracted == 6  # DATETIME cursors: no zone shift
    for c in counts.values():
        assert c.extracted == c.loaded + c.unchanged + c.quarantined, c
    assert (counts["lab"].quarantined, counts["exam"].quarantined) == (2, 0)


def test_each_zero_date_is_quarantined_with_its_field_in_the_reason(hospital, loaded) -> None:
    _, store_engine = loaded
    labs = hospital["labs"]
    with store_engine.connect() as conn:
        held = {
            json.loads(r.record_key)[1]: (r.reason, {x["rule"] for x in json.loads(r.rules)})
            for r in conn.execute(select(store.quarantine))
        }
        in_store = set(conn.execute(select(store.SPEC_TABLES["labmaster"].c.report_form_no)).scalars())
    assert set(held) == {labs[2], labs[3]}
    for form_no, field in ((labs[2], "retrieve_date"), (labs[3], "effective_dtime")):
        reason, rules = held[form_no]
        assert "datetime" in rules and field in reason and "0000-00-00" in reason, reason
        assert form_no not in in_store  # not loaded with the date turned into None


def test_gbk_and_four_byte_text_arrive_as_written(hospital, loaded) -> None:
    _, store_engine = loaded
    labs = hospital["labs"]
    with hospital["engine"].connect() as conn:
        items = {tuple(r[:2]): r[2] for r in conn.execute(
            text("SELECT report_form_no, exam_item_code, body_part_name FROM exam_subitem"))}  # fmt: skip
        charset = conn.execute(text(
            "SELECT character_set_name FROM information_schema.columns WHERE table_schema = DATABASE()"
            " AND table_name = 'exam_subitem' AND column_name = 'body_part_name'")).scalar_one()  # fmt: skip
    assert charset == "gbk" and any(any(ord(c) > 0x7F for c in v or "") for v in items.values())
    lab, item = store.SPEC_TABLES["labmaster"], store.SPEC_TABLES["exam_subitem"]
    with store_engine.connect() as conn:
        title = conn.execute(select(lab.c.report_title).where(lab.c.report_form_no == labs[0])).scalar_one()
        name = conn.execute(select(lab.c.name).where(lab.c.report_form_no == labs[1])).scalar_one()
        stored = {(r.report_form_no, r.exam_item_code): r.body_part_name for r in conn.execute(select(item))}
    assert title == "血常规（五分类）复核"
    assert name.endswith(FOUR_BYTE)
    assert stored == items


def test_longblob_and_longtext_pdfs_load_intact(hospital, loaded, s3) -> None:
    _, store_engine = loaded
    with hospital["engine"].connect() as conn:
        lab_pdfs = dict(conn.execute(text("SELECT report_form_no, pdf FROM labmaster")).all())  # Base64 text
        raw = dict(conn.execute(text("SELECT report_form_no, pdf FROM exammaster")).all())  # bytes
    assert all(isinstance(v, bytes) and v.startswith(b"%PDF") for v in raw.values())
    expected = {k: hashlib.sha256(base64.b64decode(v)).hexdigest() for k, v in lab_pdfs.items()}
    expected |= {k: hashlib.sha256(v).hexdigest() for k, v in raw.items()}
    assert {k: base64.b64decode(v) for k, v in hospital["exam_pdfs"].items()} == raw  # FROM_BASE64 kept them
    with store_engine.connect() as conn:
        for entity in ("labmaster", "exammaster"):
            t = store.SPEC_TABLES[entity]
            for r in conn.execute(select(t.c.report_form_no, t.c.pdf_sha256, t.c.pdf_object_key)):
                assert r.pdf_sha256 == expected[r.report_form_no], (entity, r.report_form_no)
                body = s3.client.get_object(s3.bucket_reports, r.pdf_object_key)
                assert hashlib.sha256(body.read()).hexdigest() == r.pdf_sha256
                body.close()
                body.release_conn()
