"""Extraction without a server: chunk planning, canonical values, and reading a synthetic SQLite
hospital end to end (the cursor and its windows: test_incremental.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from hurren import extract, sources, spec
from hurren.extract import Chunk, ExtractSettingsError, canonical, canonical_frame, plan_chunks
from hurren_testkit import synthetic

T0 = datetime(2024, 3, 11, 12, 0, 0)
DAY = date(2024, 3, 11)


# -- chunk planning -----------------------------------------------------------------------------


def groups(*counts: int) -> list[tuple[datetime, str, int]]:
    return [(T0 + timedelta(seconds=i), f"R{i:04d}", n) for i, n in enumerate(counts)]


def test_chunks_are_exactly_chunk_size_when_groups_are_single() -> None:
    chunks = list(plan_chunks(groups(*[1] * 500), 50))
    assert len(chunks) == 10
    assert all(c.planned == 50 for c in chunks)
    assert chunks[0].first_form_no == "R0000" and chunks[0].last_form_no == "R0049"
    assert chunks[1].first_form_no == "R0050"


def test_a_group_is_never_split_and_a_big_one_stands_alone() -> None:
    chunks = list(plan_chunks(groups(2, 2, 7, 1, 1, 1), 4))
    assert [c.planned for c in chunks] == [4, 7, 3]
    assert (chunks[1].first_form_no, chunks[1].last_form_no) == ("R0002", "R0002")


def test_a_group_that_would_overflow_starts_the_next_chunk() -> None:
    assert [c.planned for c in plan_chunks(groups(3, 2, 3), 4)] == [3, 2, 3]


def test_no_rows_no_chunks_and_a_bad_size_fails() -> None:
    assert list(plan_chunks([], 10)) == []
    with pytest.raises(ExtractSettingsError, match="at least 1"):
        list(plan_chunks(groups(1), 0))


def test_chunk_bounds_bind_as_the_source_returned_them() -> None:
    c = Chunk(T0, "A", T0, "B", 2)
    assert c.params("postgresql")["first_dtime"] == T0
    assert c.params("sqlite")["first_dtime"] == "2024-03-11 12:00:00"
    assert (
        Chunk("2024-03-11 12:00:00", "A", "x", "B", 2).params("sqlite")["first_dtime"]
        == "2024-03-11 12:00:00"
    )


# -- canonical values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param(" 1411 ", " 1411 ", id="string-unchanged"),
        pytest.param("", "", id="empty-string-unchanged"),
        pytest.param(datetime(2024, 3, 11, 9, 29, 0, 123456), "2024-03-11 09:29:00", id="datetime"),
        pytest.param(pd.Timestamp("2024-03-11 09:29:00"), "2024-03-11 09:29:00", id="timestamp"),
        pytest.param(date(2024, 3, 11), "2024-03-11", id="date"),
        pytest.param(7, "7", id="int"),
        pytest.param(np.int64(12), "12", id="numpy-int"),
        pytest.param(Decimal("5"), "5", id="decimal-int"),
        pytest.param(Decimal("5.0"), "5", id="decimal-point-zero"),
        pytest.param(Decimal("1E+2"), "100", id="decimal-exponent"),
        pytest.param(Decimal("12.50"), "12.5", id="decimal-fraction"),
        pytest.param(3.0, "3", id="float-whole"),
        pytest.param(0.1, "0.1", id="float-fraction"),
        pytest.param(float("nan"), None, id="nan"),
        pytest.param(np.float64("nan"), None, id="numpy-nan"),
        pytest.param(pd.NA, None, id="pd-na"),
        pytest.param(pd.NaT, None, id="nat"),
        pytest.param(b"%PDF-1.4", "JVBERi0xLjQ=", id="blob-to-base64"),
        pytest.param(True, "1", id="bool"),
    ],
)
def test_canonical(value: object, expected: str | None) -> None:
    assert canonical(value) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.none() | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        max_size=30,
    )
    | st.lists(st.none() | st.integers(-(2**70), 2**70), max_size=30)
    | st.lists(st.none() | st.datetimes(timezones=st.just(UTC)), min_size=1, max_size=5)
)
def test_a_column_of_datetimes_or_whole_numbers_is_what_canonical_gives_each_value(values: list[Any]) -> None:
    """Whole columns of datetimes (by Arrow) and of ints take a fast path: the same text as per value."""
    assert canonical_frame([(v,) for v in values], ["c"])["c"].tolist() == [canonical(v) for v in values]


def test_canonical_frame_is_object_strings_and_none() -> None:
    rows = [(1, None, datetime(2024, 1, 1)), (2, "x", None)]
    frame = canonical_frame(rows, ["a", "b", "c"])
    assert list(frame.columns) == ["a", "b", "c"]
    assert all(frame[c].dtype == object for c in frame.columns)
    assert frame.to_dict("records") == [
        {"a": "1", "b": None, "c": "2024-01-01 00:00:00"},
        {"a": "2", "b": "x", "c": None},
    ]
    assert frame["b"].iloc[0] is None  # not NaN: psycopg would store NaN as the text 'nan'
    assert list(canonical_frame([], ["a", "b"]).columns) == ["a", "b"]
    with pytest.raises(extract.ColumnsError, match="expected 2"):
        canonical_frame([(1, 2, 3)], ["a", "b"])


# -- sources ------------------------------------------------------------------------------------------


def source(dialect: str = "sqlite", **extra: object) -> sources.Source:
    body = {"id": "t", "org_code": "270258069", "org_name": "T", "conn_id": "c", "dialect": dialect, **extra}
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("t")


# -- reading a synthetic SQLite hospital ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hospital_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, synthetic.Hospital]:
    path = Path(tmp_path_factory.mktemp("hospital")) / "h.db"
    h = synthetic.make_hospitals(2, seed=3)
    synthetic.generate_hospital_day(
        f"sqlite:///{path}", org=h[0], day=DAY, lab_reports=120, exam_reports=30, seed=3, peers=h, pdf_kb=1
    )
    return create_engine(f"sqlite:///{path}"), h[0]


def sqlite_source(org_code: str) -> sources.Source:
    body = {
        "id": "demo",
        "org_code": org_code,
        "org_name": "T",
        "conn_id": "c",
        "dialect": "sqlite",
        "chunk_size": 25,
    }
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("demo")


def day_window() -> tuple[datetime, datetime]:
    return datetime(2024, 3, 11), datetime(2024, 3, 12)


def test_read_reports_gives_every_master_once_with_exactly_its_items(
    hospital_db: tuple[Engine, synthetic.Hospital],
) -> None:
    engine, h = hospital_db
    s = sqlite_source(h.org_code)
    with extract.source_snapshot(engine, s) as conn:
        batches = list(extract.read_reports(conn, s, "lab", *day_window()))
        total_items = conn.exec_driver_sql("SELECT COUNT(*) FROM lab_subitem").scalar_one()
    assert [len(b.masters) for b in batches] == [25, 25, 25, 25, 20]
    assert [b.index for b in batches] == list(range(5)) and {b.chunks for b in batches} == {5}
    keys = [
        k
        for b in batches
        for k in zip(b.masters.org_code, b.masters.event_no, b.masters.report_form_no, strict=True)
    ]
    assert len(keys) == len(set(keys)) == 120
    assert sum(len(b.items) for b in batches) == total_items
    for b in batches:
        own = set(zip(b.masters.org_code, b.masters.event_no, b.masters.report_form_no, strict=True))
        assert set(zip(b.items.org_code, b.items.event_no, b.items.report_form_no, strict=True)) <= own
        assert list(b.masters.columns) == list(spec.entity("labmaster").names)
        assert b.max_cursor == max(
            datetime.strptime(v, spec.DATETIME_FORMAT) for v in b.masters.last_update_dtime
        )
    cursors = [b.max_cursor for b in batches]
    assert cursors == sorted(cursors)  # oldest first: a watermark per batch never passes a row


def test_read_reports_respects_the_half_open_window(hospital_db: tuple[Engine, synthetic.Hospital]) -> None:
    engine, h = hospital_db
    s = sqlite_source(h.org_code)
    with engine.connect() as conn:
        stamps = sorted(conn.exec_driver_sql("SELECT last_update_dtime FROM labmaster").scalars())
        cut = datetime.strptime(stamps[60], spec.DATETIME_FORMAT)
        first = [
            len(b.masters) for b in extract.read_reports(conn, s, "lab", datetime(2024, 3, 11), cut, 1000)
        ]
        second = [
            len(b.masters) for b in extract.read_reports(conn, s, "lab", cut, datetime(2024, 3, 12), 1000)
        ]
        assert list(extract.read_reports(conn, s, "lab", cut, cut)) == []
    assert sum(first) + sum(second) == 120
    assert sum(first) == sum(1 for x in stamps if x < stamps[60])


def test_read_records_streams_every_row(hospital_db: tuple[Engine, synthetic.Hospital]) -> None:
    engine, h = hospital_db
    s = sqlite_source(h.org_code)
    with engine.connect() as conn:
        for stream, table in (
            ("pacs_instance", "v_web_jcjg"),
            ("pacs_study", "v_web_jctj"),
            ("accept", "sehr_accept_record"),
            ("quote", "sehr_quote_record"),
        ):
            expected = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one()
            batches = list(extract.read_records(conn, s, stream, *day_window(), chunk_size=7))
            assert sum(len(b.records) for b in batches) == expected > 0, stream
            assert all(len(b.records) <= 7 for b in batches)
            assert list(batches[0].records.columns) == list(spec.entity(table).names)
            cursors = [b.max_cursor for b in batches]
            assert cursors == sorted(cursors)


def test_a_stream_the_source_does_not_extract_is_refused(
    hospital_db: tuple[Engine, synthetic.Hospital],
) -> None:
    engine, h = hospital_db
    body = {
        "id": "t",
        "org_code": h.org_code,
        "org_name": "T",
        "conn_id": "c",
        "dialect": "sqlite",
        "streams": ["lab"],
    }
    s = sources.parse_sources(json.dumps({"hospitals": [body]})).get("t")
    with engine.connect() as conn:
        with pytest.raises(ExtractSettingsError, match="add it to the hospital's streams"):
            next(extract.read_reports(conn, s, "exam", *day_window()))
        with pytest.raises(ExtractSettingsError, match="not one of"):
            next(extract.read_records(conn, s, "lab", *day_window()))
        with pytest.raises(ExtractSettingsError, match="naive source local time"):
            next(
                extract.read_reports(conn, s, "lab", datetime(2024, 3, 11, tzinfo=UTC), datetime(2024, 3, 12))
            )
