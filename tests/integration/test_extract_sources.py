"""Extraction from a synthetic hospital on each source database that runs here, PostgreSQL and
MariaDB: every query returns what a Python reading of the tables says, chunking, windows with
overlap, late commits, snapshots."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hurren import extract, incremental, sources, spec
from hurren.incremental import CursorState
from hurren_testkit import synthetic
from tests import sql_reference
from tests.fixtures.services import SOURCE_DIALECTS, make_source_database

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
WINDOW = (datetime(2024, 3, 11), datetime(2024, 3, 12))
HOSPITALS = synthetic.make_hospitals(2, seed=11)


def make_source(dialect: str, org_code: str, **extra: object) -> sources.Source:
    body = {"id": "src", "org_code": org_code, "org_name": "T", "conn_id": "c", "dialect": dialect, **extra}
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("src")


@pytest.fixture(scope="module", params=SOURCE_DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def make_db(request: pytest.FixtureRequest, dialect: str) -> Callable[..., str]:
    return make_source_database(request, dialect)


@pytest.fixture(scope="module")
def hospital(make_db: Callable[..., str]) -> Engine:
    url = make_db("hurren_hospital")
    synthetic.generate_hospital_day(
        url, org=HOSPITALS[0], day=DAY, lab_reports=500, exam_reports=60, seed=11, peers=HOSPITALS, pdf_kb=1
    )
    engine = create_engine(url)
    yield engine
    engine.dispose()


def src(engine: Engine, **extra: object) -> sources.Source:
    return make_source(engine.dialect.name, HOSPITALS[0].org_code, **extra)


@pytest.mark.parametrize(
    "window",
    [(datetime(2024, 3, 11), datetime(2024, 3, 12)), (datetime(2024, 3, 11, 9), datetime(2024, 3, 11, 15))],
    ids=["day", "hours"],
)
def test_every_query_returns_what_the_tables_say(make_db: Callable[..., str], dialect: str, window) -> None:  # noqa: ANN001
    """Defects included: NULL keys, duplicates, orphan sub-items, odd text."""
    url = make_db("hurren_sqlref")
    synthetic.generate_hospital_day(
        url, org=HOSPITALS[1], day=DAY, lab_reports=60, exam_reports=30, seed=7, peers=HOSPITALS, pdf_kb=1,
        lab_items=3, defect_rate=0.3,
    )  # fmt: skip
    engine = create_engine(url)
    with engine.connect() as conn:
        compared = sql_reference.check_every_query(
            conn, make_source(dialect, HOSPITALS[1].org_code), window, 9
        )
    engine.dispose()
    assert compared > 150


def keys(frame) -> list[tuple[str, str, str]]:  # noqa: ANN001
    return list(zip(frame.org_code, frame.event_no, frame.report_form_no, strict=True))


def test_500_reports_in_chunks_of_50_are_10_batches_each_item_with_its_master(hospital: Engine) -> None:
    s = src(hospital)
    with extract.source_snapshot(hospital, s) as conn:
        batches = list(extract.read_reports(conn, s, "lab", *WINDOW, chunk_size=50))
        n_items = conn.execute(text("SELECT COUNT(*) FROM lab_subitem")).scalar_one()
    assert len(batches) == 10
    assert all(len(b.masters) == 50 for b in batches)
    seen = [k for b in batches for k in keys(b.masters)]
    assert len(seen) == len(set(seen)) == 500
    assert sum(len(b.items) for b in batches) == n_items
    for b in batches:
        assert set(keys(b.items)) == set(keys(b.masters))  # every master has items, all its own
    cursors = [b.max_cursor for b in batches]
    assert cursors == sorted(cursors)


def test_values_arrive_as_canonical_strings(hospital: Engine) -> None:
    s = src(hospital)
    with hospital.connect() as conn:
        batch = next(extract.read_reports(conn, s, "exam", *WINDOW, chunk_size=5))
        stored = conn.execute(
            text("SELECT last_update_dtime, report_title FROM exammaster WHERE report_form_no = :r"),
            {"r": batch.masters.report_form_no.iloc[0]},
        ).one()
    row = batch.masters.iloc[0]
    assert row.last_update_dtime == stored[0].strftime(spec.DATETIME_FORMAT)  # a timestamp column
    assert row.report_title == stored[1]  # text as stored, untouched
    assert all(v is None or isinstance(v, str) for v in batch.masters.to_numpy().ravel())


@pytest.mark.parametrize(
    ("stream", "table"),
    [
        ("pacs_instance", "v_web_jcjg"),
        ("pacs_study", "v_web_jctj"),
        ("accept", "sehr_accept_record"),
        ("quote", "sehr_quote_record"),
    ],
)
def test_records_stream_in_bounded_batches(hospital: Engine, stream: str, table: str) -> None:
    s = src(hospital)
    with extract.source_snapshot(hospital, s) as conn:
        expected = conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
        batches = list(extract.read_records(conn, s, stream, *WINDOW, chunk_size=16))
    assert expected > 0
    assert sum(len(b.records) for b in batches) == expected
    assert all(len(b.records) <= 16 for b in batches)
    assert list(batches[0].records.columns) == list(spec.entity(table).names)


def test_the_window_starts_an_overlap_before_the_watermark(hospital: Engine) -> None:
    s = src(hospital, overlap_minutes=30)
    with hospital.connect() as conn:
        stamps = sorted(conn.execute(text("SELECT last_update_dtime FROM labmaster")).scalars())
        watermark = stamps[300]
        w = incremental.window(
            CursorState(initial_value=datetime(2024, 1, 1), last_value=watermark),
            until=WINDOW[1],
            overlap=timedelta(minutes=s.overlap_minutes),
            tz=s.timezone,
        )
        assert w.since == watermark - timedelta(minutes=30)
        got = sum(len(b.masters) for b in extract.read_reports(conn, s, "lab", w.since, w.until, 40))
    assert got == sum(1 for t in stamps if w.since <= t < w.until)
    assert got > 200  # the overlap re-reads the rows just below the watermark


def test_late_commits_and_changes_are_in_the_next_window(make_db: Callable[..., str], dialect: str) -> None:
    url = make_db("hurren_hospital")
    org = HOSPITALS[1]
    synthetic.generate_hospital_day(url, org=org, day=DAY, lab_reports=120, exam_reports=0, seed=12, pdf_kb=1)
    s = make_source(dialect, org.org_code)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            first = list(extract.read_reports(conn, s, "lab", *WINDOW, chunk_size=50))
        state = CursorState(initial_value=datetime(2024, 1, 1), last_value=max(b.max_cursor for b in first))
        changes = synthetic.generate_changes(
            url, org=org, since=state.last_value, count_new=5, count_updated=4, count_voided=2, seed=12
        )
        # a late commit: stamped 5 minutes before the watermark, written after the first read
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE labmaster SET last_update_dtime = :t WHERE report_form_no = :r"),
                {"t": state.last_value - timedelta(minutes=5), "r": first[0].masters.report_form_no.iloc[0]},
            )
        w = incremental.window(
            state, until=datetime(2024, 3, 13), overlap=timedelta(minutes=10), tz=s.timezone
        )
        with extract.source_snapshot(engine, s) as conn:
            second = list(extract.read_reports(conn, s, "lab", w.since, w.until, 50))
    finally:
        engine.dispose()
    got = {r for b in second for r in b.masters.report_form_no}
    changed = {k.report_form_no for k in (*changes.new, *changes.updated, *changes.voided)}
    assert changed <= got
    assert first[0].masters.report_form_no.iloc[0] in got  # the late commit, within the overlap
    voided = {k.report_form_no for k in changes.voided}
    assert all(
        row.data_status == "0"
        for b in second
        for row in b.masters.itertuples()
        if row.report_form_no in voided
    )


def test_a_snapshot_keeps_later_chunks_as_they_were_when_the_read_began(hospital: Engine) -> None:
    s = src(hospital)
    with extract.source_snapshot(hospital, s) as conn:
        batches = extract.read_reports(conn, s, "exam", *WINDOW, chunk_size=20)
        first = next(batches)
        # another session moves every master of the day out of the window while we read
        days = {"postgresql": "interval '2 days'", "mysql": "INTERVAL 2 DAY"}[s.dialect]
        with hospital.begin() as other:
            other.execute(text(f"UPDATE exammaster SET last_update_dtime = last_update_dtime + {days}"))
        try:
            rest = list(batches)
        finally:
            with hospital.begin() as other:
                other.execute(text(f"UPDATE exammaster SET last_update_dtime = last_update_dtime - {days}"))
    assert len(first.masters) + sum(len(b.masters) for b in rest) == 60
    assert all(set(keys(b.items)) == set(keys(b.masters)) for b in rest)
