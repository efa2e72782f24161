"""hurren.incremental without a server: the cursor and its windows (overlap, the source's clock and
the open-ended future range, backfills from Airflow's interval, fixed-offset zones), the watermark
(it moves only with a committed transaction, never back) and whole runs of a synthetic SQLite
hospital into a SQLite store (the run log; a backfill and the future range leave the watermark
alone; the overlap re-read counts as unchanged)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import Engine

from hurren import incremental, load, pipeline, sources, store
from hurren.extract import ExtractSettingsError
from hurren.incremental import (
    CursorState,
    SourceClock,
    Window,
    apply_overlap,
    backfill_window,
    capped,
    future_range,
    window,
)
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic

T0 = datetime(2024, 3, 11, 12, 0, 0)
DAY = date(2024, 3, 11)


def source(dialect: str = "sqlite", **extra: object) -> sources.Source:
    body = {"id": "t", "org_code": "270258069", "org_name": "T", "conn_id": "c", "dialect": dialect, **extra}
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("t")


# -- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "overlap", "initial", "expected"),
    [
        pytest.param(
            T0, timedelta(minutes=10), datetime(2024, 1, 1), T0 - timedelta(minutes=10), id="overlap"
        ),
        pytest.param(T0, timedelta(0), datetime(2024, 1, 1), T0, id="no-overlap"),
        pytest.param(
            T0, timedelta(days=1), T0 - timedelta(hours=1), T0 - timedelta(hours=1), id="never-before-initial"
        ),
        pytest.param(T0, timedelta(minutes=10), T0, T0, id="at-initial"),
        pytest.param(T0, timedelta(minutes=10), None, T0 - timedelta(minutes=10), id="no-initial"),
    ],
)
def test_apply_overlap(
    last: datetime, overlap: timedelta, initial: datetime | None, expected: datetime
) -> None:
    assert apply_overlap(last, overlap, initial) == expected


def test_a_negative_overlap_fails_early_saying_what_to_do() -> None:
    with pytest.raises(ExtractSettingsError, match="use 0 for no overlap"):
        apply_overlap(T0, timedelta(minutes=-1), None)


def test_a_new_cursor_starts_at_its_initial_value() -> None:
    w = window(
        CursorState(initial_value=datetime(2024, 1, 1)),
        until=T0,
        overlap=timedelta(minutes=10),
        tz="Asia/Shanghai",
    )
    assert w == Window(datetime(2024, 1, 1), T0)


def test_a_cursor_window_starts_an_overlap_before_its_last_value() -> None:
    state = CursorState(initial_value=datetime(2024, 1, 1), last_value=T0)
    w = window(state, until=T0 + timedelta(hours=1), overlap=timedelta(minutes=10), tz="Asia/Shanghai")
    assert w == Window(T0 - timedelta(minutes=10), T0 + timedelta(hours=1))
    assert not w.empty


def test_an_aware_end_is_converted_to_source_time_to_the_second() -> None:
    # Airflow's data interval is UTC; the sources write naive Beijing time (UTC+8)
    until = datetime(2024, 3, 11, 4, 0, 0, 999_999, tzinfo=UTC)
    w = window(
        CursorState(initial_value=datetime(2024, 1, 1)), until=until, overlap=timedelta(0), tz="Asia/Shanghai"
    )
    assert w.until == datetime(2024, 3, 11, 12, 0, 0)
    assert incremental.to_source_time(T0, "Asia/Shanghai") == T0  # naive: already source time


def test_a_window_ending_before_the_cursor_is_empty() -> None:
    state = CursorState(initial_value=datetime(2024, 1, 1), last_value=T0)
    assert window(state, until=T0 - timedelta(hours=1), overlap=timedelta(0), tz="Asia/Shanghai").empty


def test_next_window_uses_the_sources_overlap_and_zone() -> None:
    s = source(overlap_minutes=15, timezone="Asia/Urumqi")  # UTC+6
    state = CursorState(initial_value=datetime(2024, 1, 1), last_value=T0)
    w = incremental.next_window(s, state, datetime(2024, 3, 11, 8, 0, tzinfo=UTC))
    assert w == Window(T0 - timedelta(minutes=15), datetime(2024, 3, 11, 14, 0))


def test_backfill_window() -> None:
    w = backfill_window(datetime(2024, 2, 1), datetime(2024, 2, 2), tz="Asia/Shanghai")
    assert (w.since, w.until) == (datetime(2024, 2, 1), datetime(2024, 2, 2))
    with pytest.raises(ExtractSettingsError, match="empty"):
        backfill_window(datetime(2024, 2, 2), datetime(2024, 2, 1), tz="Asia/Shanghai")


def test_read_cursor_from_the_store() -> None:
    engine = create_engine("sqlite://")
    store.create_all(engine)
    s = source()
    with engine.begin() as conn:
        assert incremental.read_cursor(conn, s, "lab") == CursorState(initial_value=s.initial_value)
        conn.execute(
            insert(store.watermark).values(
                source="t", stream="lab", initial_value=datetime(2023, 1, 1), last_value=T0
            )
        )
        assert incremental.read_cursor(conn, s, "lab") == CursorState(datetime(2023, 1, 1), T0)
        assert incremental.read_cursor(conn, s, "exam").last_value is None


# -- fixed-offset zones: Airflow's UTC interval is the same span of source time all year ----------


@pytest.mark.parametrize(("zone", "offset"), [("Asia/Shanghai", 8), ("Asia/Urumqi", 6)])
@pytest.mark.parametrize(
    "day",
    # the days Europe and the US change their clocks, and ordinary days around them
    [date(2024, 3, 10), date(2024, 3, 11), date(2024, 3, 31), date(2024, 10, 27), date(2024, 11, 3), DAY],
)
def test_a_days_interval_is_exactly_that_local_day_in_a_zone_without_dst(
    zone: str, offset: int, day: date
) -> None:
    midnight = datetime.combine(day, datetime.min.time())
    start = (midnight - timedelta(hours=offset)).replace(tzinfo=UTC)  # a daily cron at local midnight
    end = start + timedelta(days=1)
    w = backfill_window(start, end, tz=zone)
    assert w == Window(midnight, midnight + timedelta(days=1))
    assert start.astimezone(ZoneInfo(zone)).utcoffset() == timedelta(hours=offset)  # no DST there
    state = CursorState(initial_value=datetime(2024, 1, 1), last_value=midnight)
    assert window(state, until=end, overlap=timedelta(0), tz=zone) == w  # a scheduled run: the same end


def test_consecutive_backfill_intervals_tile_without_gap_or_overlap() -> None:
    starts = [datetime(2024, 3, 30, 16, tzinfo=UTC) + timedelta(hours=h) for h in range(0, 49)]
    windows = [backfill_window(a, b, tz="Asia/Shanghai") for a, b in zip(starts, starts[1:], strict=False)]
    assert all(w.until == n.since for w, n in zip(windows, windows[1:], strict=False))
    assert windows[-1].until - windows[0].since == timedelta(hours=48)


# -- the source's clock: the window's cap and the open-ended future range ------------------------


def test_the_clock_of_a_source_is_its_local_now_plus_its_tolerance() -> None:
    s = source(future_tolerance_minutes=30)  # Asia/Shanghai by default
    clock = SourceClock.of(s, datetime(2024, 3, 11, 4, 0, 0, 5, tzinfo=UTC))
    assert (clock.now, clock.future_from) == (T0, T0 + timedelta(minutes=30))


def test_a_window_is_capped_at_the_sources_clock_never_before_its_start() -> None:
    clock = SourceClock(T0, timedelta(minutes=60))
    assert capped(Window(T0 - timedelta(hours=1), T0), clock) == Window(T0 - timedelta(hours=1), T0)
    assert capped(Window(T0, T0 + timedelta(days=2)), clock) == Window(T0, T0 + timedelta(hours=1))
    late = Window(T0 + timedelta(hours=3), T0 + timedelta(hours=4))  # a watermark ahead of the clock
    assert capped(late, clock) == Window(late.since, late.since) and capped(late, clock).empty


def test_the_future_range_has_no_end() -> None:
    far = future_range(SourceClock(T0, timedelta(minutes=60)))
    assert far == Window(T0 + timedelta(hours=1), None)
    assert not far.empty and capped(far, SourceClock(T0, timedelta(0))) == far


# -- the Airflow interval of a task's run (airflow_window) ----------------------------------------
# with the run types the task SDK hands a task: a backfill reads its data interval (before, the SDK's
# ``DagRunType.BACKFILL`` printed as "DagRunType.BACKFILL" and was taken for a scheduled run, so
# ``airflow backfill create`` read from the watermark instead: tests/stack/test_scheduler.py)

START, END = datetime(2024, 3, 10, 16, tzinfo=UTC), datetime(2024, 3, 11, 16, tzinfo=UTC)


def _ctx(run_type: DagRunType, **params: str) -> dict[str, Any]:
    run = SimpleNamespace(run_type=run_type, run_after=datetime(2026, 1, 1, tzinfo=UTC))
    return {"params": params, "dag_run": run, "data_interval_start": START, "data_interval_end": END}


def test_a_backfill_run_reads_its_data_interval_as_the_local_days_window() -> None:
    since, until = incremental.airflow_window(_ctx(DagRunType.BACKFILL))
    assert (since, until) == (START, END) and since is not None
    assert backfill_window(since, until, tz="Asia/Shanghai") == Window(
        datetime(2024, 3, 11), datetime(2024, 3, 12)
    )


@pytest.mark.parametrize("run_type", [DagRunType.SCHEDULED, DagRunType.MANUAL, DagRunType.ASSET_TRIGGERED])
def test_other_runs_read_from_the_watermark_to_the_interval_end(run_type: DagRunType) -> None:
    assert incremental.airflow_window(_ctx(run_type)) == (None, END)


def test_params_since_until_win() -> None:
    since, until = incremental.airflow_window(
        _ctx(DagRunType.MANUAL, since="2024-02-01 00:00:00", until="2024-02-02 00:00:00")
    )
    assert (since, until) == (datetime(2024, 2, 1), datetime(2024, 2, 2))


# -- the watermark --------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/store.db")
    store.create_all(engine)
    yield engine
    engine.dispose()


def _advance(conn: Any, value: datetime) -> datetime:
    return incremental.advance_watermark(
        conn, source="t", stream="lab", last_value=value, initial_value=datetime(2024, 1, 1), run_id="r"
    )


def _last_value(db: Engine, s: sources.Source, stream: str = "lab") -> datetime | None:
    with db.connect() as conn:
        return incremental.read_cursor(conn, s, stream).last_value


def test_the_watermark_moves_only_when_its_transaction_commits_and_never_back(db: Engine) -> None:
    s = source()
    with db.connect() as conn, conn.begin() as tx:  # a batch whose transaction does not commit
        assert _advance(conn, T0) == T0
        tx.rollback()
    assert _last_value(db, s) is None
    with db.begin() as conn:
        _advance(conn, T0)
    assert _last_value(db, s) == T0
    with db.begin() as conn:
        assert _advance(conn, T0 - timedelta(hours=1)) == T0  # an older batch: never back
    assert _last_value(db, s) == T0
    with pytest.raises(RuntimeError), db.begin() as conn:
        _advance(conn, T0 + timedelta(hours=1))
        raise RuntimeError("the batch failed after its watermark UPDATE")
    assert _last_value(db, s) == T0


# -- whole runs: a synthetic SQLite hospital into a SQLite store ----------------------------------

STREAM = "accept"  # records: no PDFs, so no S3 is needed


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, sources.Source, list[datetime]]:
    path = Path(tmp_path_factory.mktemp("hospital")) / "h.db"
    h = synthetic.make_hospitals(2, seed=5)
    synthetic.generate_hospital_day(
        f"sqlite:///{path}", org=h[0], day=DAY, lab_reports=20, exam_reports=5, seed=5, peers=h, pdf_kb=1,
        accept_records=60,
    )  # fmt: skip
    engine = create_engine(f"sqlite:///{path}")
    body = {"id": "t", "org_code": h[0].org_code, "org_name": "T", "conn_id": "c", "dialect": "sqlite",
            "chunk_size": 10, "overlap_minutes": 30, "initial_value": "2024-03-10"}  # fmt: skip
    s = sources.parse_sources(json.dumps({"hospitals": [body]})).get("t")
    with engine.connect() as conn:
        times = sorted(
            datetime.strptime(v, "%Y-%m-%d %H:%M:%S")
            for v in conn.exec_driver_sql("SELECT record_time FROM sehr_accept_record").scalars()
        )
    return engine, s, times


def _run(hospital: tuple[Engine, sources.Source, list[datetime]], db: Engine, run_id: str, **kw: Any) -> Any:
    engine, s, _ = hospital
    kw.setdefault("until", datetime(2024, 3, 12))
    kw.setdefault("now", datetime(2024, 3, 12, 1))
    return pipeline.run_stream(source=s, stream=STREAM, source_engine=engine, store_engine=db, pdfs=None,
                               run_id=run_id, dag_id="t", validator="pandas", options=DEFAULT_OPTIONS,
                               rulebook=load_rulebook(), **kw)  # fmt: skip


def _etl_run(db: Engine, run_id: str) -> Any:
    with db.connect() as conn:
        return conn.execute(select(store.run).where(store.run.c.run_id == run_id)).one()


def balanced(c: load.LoadCounts) -> bool:
    return c.extracted == c.loaded + c.unchanged + c.stale + c.quarantined


def test_a_scheduled_run_logs_itself_and_moves_the_watermark_to_its_last_row(
    hospital: Any, db: Engine
) -> None:
    _, s, times = hospital
    summary = _run(hospital, db, "first")
    assert summary.mode == "incremental" and summary.batches == 6 and summary.future_rows == 0
    assert (
        summary.counts.extracted == len(times) == 60
        and balanced(summary.counts)
        and summary.counts.loaded > 0
    )
    assert _last_value(db, s, STREAM) == times[-1]
    row = _etl_run(db, "first")
    assert (row.status, row.extracted, row.loaded) == ("success", 60, summary.counts.loaded)
    assert (row.interval_start, row.interval_end) == (datetime(2024, 3, 10), datetime(2024, 3, 12))
    assert json.loads(row.details)["batches"] == 6


def test_the_overlap_is_read_again_and_counts_as_unchanged(hospital: Any, db: Engine) -> None:
    _, s, times = hospital
    _run(hospital, db, "first")
    again = _run(hospital, db, "second", until=datetime(2024, 3, 12, 6))
    overlap = [t for t in times if t >= times[-1] - timedelta(minutes=30)]
    assert again.counts.extracted == len(overlap) > 0 and again.counts.loaded == 0 and balanced(again.counts)
    assert again.counts.unchanged + again.counts.quarantined == len(overlap)
    assert _etl_run(db, "second").interval_start == times[-1] - timedelta(minutes=30)
    assert _last_value(db, s, STREAM) == times[-1]


def test_a_backfill_reads_exactly_its_window_and_leaves_the_watermark_alone(
    hospital: Any, db: Engine
) -> None:
    _, s, times = hospital
    since, until = times[10], times[40]
    summary = _run(hospital, db, "backfill", until=until, backfill_since=since)
    assert summary.mode == "backfill" and summary.future_rows == 0
    assert summary.counts.extracted == sum(since <= t < until for t in times) and balanced(summary.counts)
    assert _last_value(db, s, STREAM) is None
    _run(hospital, db, "first")
    before = _last_value(db, s, STREAM)
    _run(hospital, db, "backfill-2", until=until, backfill_since=since)
    assert _last_value(db, s, STREAM) == before == times[-1]


def test_rows_beyond_the_sources_clock_are_quarantined_and_never_move_the_watermark(
    hospital: Any, db: Engine
) -> None:
    _, s, times = hospital
    now = times[30] - timedelta(minutes=s.future_tolerance_minutes)  # the source's clock is behind its rows
    summary = _run(hospital, db, "clock", now=now)
    beyond = sum(t >= times[30] for t in times)
    assert summary.future_rows == beyond > 0 and summary.errors_by_rule["future_dtime"] == beyond
    assert summary.counts.extracted == len(times) and balanced(summary.counts)
    assert summary.as_dict()["window"] == [str(datetime(2024, 3, 10)), str(times[30])]
    assert _last_value(db, s, STREAM) == max(t for t in times if t < times[30])
    with db.connect() as conn:
        held = conn.execute(
            select(store.quarantine.c.rules).where(store.quarantine.c.entity == "sehr_accept_record")
        )
        assert sum("future_dtime" in r for r in held.scalars()) == beyond


def test_a_failed_run_is_logged_failed_and_keeps_the_watermark_of_its_committed_batches(
    hospital: Any, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, s, times = hospital
    real, calls = load.stage_records, {"n": 0}

    def fail_third(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] != 3:
            return real(*args, **kwargs)

        def died() -> Any:  # the store's part, in its thread, while batch 4 is read
            raise RuntimeError("the worker died in batch 3")

        return died

    monkeypatch.setattr(load, "stage_records", fail_third)
    with pytest.raises(RuntimeError, match="batch 3"):
        _run(hospital, db, "broken")
    row = _etl_run(db, "broken")
    assert (row.status, row.extracted) == ("failed", 20)  # two committed batches of 10
    assert json.loads(row.details)["batches"] == 3
    assert _last_value(db, s, STREAM) == times[19]
    monkeypatch.setattr(load, "stage_records", real)
    retry = _run(hospital, db, "broken")  # the task's retry: the same run, a second try
    row = _etl_run(db, "broken")
    assert row.status == "success" and [t["status"] for t in json.loads(row.details)["tries"]] == [
        "failed",
        "success",
    ]
    assert _last_value(db, s, STREAM) == times[-1] and retry.counts.extracted == 60 - 20 + len(
        [t for t in times[:20] if t >= times[19] - timedelta(minutes=30)]
    )
