"""The synthetic hospital on PostgreSQL (COPY) and MariaDB (multi-row INSERT): each writes exactly what the SQLite path writes,
watermarks are real timestamps, and later changes land after the watermark."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine

from hurren_testkit import synthetic
from hurren_testkit.synthetic import LABEL_TABLE, SOURCE_ENTITIES, WATERMARKS

pytestmark = pytest.mark.services

DAY = date(2026, 11, 24)
PARAMS = dict(
    day=DAY, lab_reports=80, exam_reports=30, lab_items=15, pacs_instances=4, seed=23, defect_rate=0.4
)


def table_rows(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    """All rows of ``table``, in a canonical order (PostgreSQL does not promise insertion order)."""
    t = synthetic.source_metadata().tables[table]
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(select(t))]
    return sorted(found, key=lambda r: tuple((v is None, str(v)) for v in r))


@pytest.fixture(scope="module")
def pg_and_sqlite(make_database: Callable[..., str], tmp_path_factory: pytest.TempPathFactory):
    hospitals = synthetic.make_hospitals(2, seed=23)
    pg = create_engine(make_database("hospital_test"))
    lite = create_engine(f"sqlite:///{tmp_path_factory.mktemp('lite') / 'h.db'}")
    manifests = [
        synthetic.generate_hospital_day(e, org=hospitals[0], peers=hospitals, **PARAMS) for e in (pg, lite)
    ]
    yield hospitals[0], pg, lite, manifests
    pg.dispose()
    lite.dispose()


def test_copy_writes_what_executemany_writes(pg_and_sqlite) -> None:
    _, pg, lite, (m_pg, m_lite) = pg_and_sqlite
    assert m_pg.rows == m_lite.rows and m_pg.defects == m_lite.defects and m_pg.labels > 20
    for table in (*SOURCE_ENTITIES, LABEL_TABLE):
        assert table_rows(pg, table) == table_rows(lite, table), table
    # what most needs escaping made it through COPY: control characters and 4-byte UTF-8
    with pg.connect() as conn:
        names = (
            conn.execute(text("SELECT name FROM labmaster UNION ALL SELECT name FROM exammaster"))
            .scalars()
            .all()
        )
        fields = (
            conn.execute(text(f"SELECT field FROM {LABEL_TABLE} WHERE kind = 'lab_xml_chars'"))
            .scalars()
            .all()
        )
        assert fields
        bad = conn.execute(
            text(f"SELECT count(*) FROM labmaster WHERE \"{fields[0]}\" ~ '[\\x01-\\x08\\x0b\\x1b]'")
        ).scalar_one()
    assert any(ord(c) > 0xFFFF for n in names if n for c in n)
    assert bad >= 1


def test_columns_are_text_except_the_indexed_watermarks(pg_and_sqlite) -> None:
    _, pg, _, _ = pg_and_sqlite
    with pg.connect() as conn:
        types = conn.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
            )
        ).all()
        indexed = conn.execute(
            text("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'")
        ).all()
    by_table: dict[str, dict[str, str]] = {}
    for t, c, dt in types:
        by_table.setdefault(t, {})[c] = dt
    for name in SOURCE_ENTITIES:
        wm = WATERMARKS[name]
        assert by_table[name].pop(wm) == "timestamp without time zone"
        assert set(by_table[name].values()) == {"text"}
        assert any(t == name and f"({wm.lower()})" in d.lower().replace('"', "") for t, d in indexed), name


def test_changes_on_postgresql(pg_and_sqlite) -> None:
    org, pg, _, _ = pg_and_sqlite
    with pg.connect() as conn:
        since = conn.execute(text("SELECT max(last_update_dtime) FROM exammaster")).scalar_one()
        before = conn.execute(text("SELECT count(*) FROM exammaster")).scalar_one()
    assert isinstance(since, datetime)
    ch = synthetic.generate_changes(
        pg, org=org, since=since, count_new=2, count_updated=2, count_voided=1, seed=3, report="exam"
    )
    with pg.connect() as conn:
        changed = set(
            conn.execute(
                text("SELECT report_form_no FROM exammaster WHERE last_update_dtime > :since"),
                {"since": since},
            ).scalars()
        )
        voided = set(
            conn.execute(text("SELECT report_form_no FROM exammaster WHERE data_status = '0'")).scalars()
        )
        after = conn.execute(text("SELECT count(*) FROM exammaster")).scalar_one()
        new_studies = conn.execute(
            text('SELECT count(*) FROM v_web_jctj WHERE "MODIFYTIME" > :since'), {"since": since}
        ).scalar_one()
    assert changed == {k.report_form_no for k in ch.new + ch.updated + ch.voided}
    assert voided == {k.report_form_no for k in ch.voided}
    assert after == before + 2 and new_studies == 2


def test_generate_region_makes_a_database_per_hospital(
    make_database: Callable[..., str], tmp_path: Path
) -> None:
    url = make_database("hospital_test")
    base = url.rsplit("/", 1)[0]
    hospitals = synthetic.make_hospitals(2, seed=5)
    # {org} in the URL: one database per hospital, created by generate_region itself
    names = [f"{url.rsplit('/', 1)[1]}_{h.org_code}" for h in hospitals]
    out = synthetic.generate_region(
        f"{url}_{{org}}", hospitals=hospitals, day=DAY, lab_reports=10, exam_reports=4, seed=5
    )
    try:
        for h, name in zip(hospitals, names, strict=True):
            engine = create_engine(f"{base}/{name}")
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM labmaster")).scalar_one() == 10
                refs = set(conn.execute(text("SELECT hr_org_code FROM sehr_accept_record")).scalars())
            engine.dispose()
            assert out[h.org_code].rows["labmaster"] == 10 and refs and h.org_code not in refs
    finally:
        admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        for name in names:  # retried while an autovacuum worker holds the fresh database
            synthetic.drop_database(admin, name)
        admin.dispose()


def test_mariadb_bulk_insert_writes_what_sqlite_writes(make_mariadb_database, pg_and_sqlite) -> None:
    """No COPY on MySQL: pymysql's multi-row INSERTs, into utf8mb4 LONGTEXT and DATETIME columns."""
    org, _, lite, (_, m_lite) = pg_and_sqlite
    my = create_engine(make_mariadb_database("hospital_test"))
    hospitals = synthetic.make_hospitals(2, seed=23)
    m_my = synthetic.generate_hospital_day(my, org=org, peers=hospitals, **PARAMS)
    assert m_my.rows == m_lite.rows and m_my.defects == m_lite.defects
    for table in (*SOURCE_ENTITIES, LABEL_TABLE):
        assert table_rows(my, table) == table_rows(lite, table), table
    with my.connect() as conn:
        names = (
            conn.execute(text("SELECT name FROM labmaster UNION ALL SELECT name FROM exammaster"))
            .scalars()
            .all()
        )
        types = dict(conn.execute(text(
            "SELECT column_name, column_type FROM information_schema.columns"
            " WHERE table_schema = DATABASE() AND table_name = 'labmaster'")).all())  # fmt: skip
        charset = conn.execute(text(
            "SELECT table_collation FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name = 'labmaster'")).scalar_one()  # fmt: skip
    assert any(ord(c) > 0xFFFF for n in names if n for c in n)  # 4-byte UTF-8 stored and read back
    assert types.pop("last_update_dtime") == "datetime" and set(types.values()) == {"longtext"}
    assert charset == "utf8mb4_bin"
    my.dispose()
