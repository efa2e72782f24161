"""Daily counts (§1.2.2.5) from a store on SQLite: which reports count, merge, D8, re-runs, push,
reconciliation. No server needed; the end-to-end test runs the same over PostgreSQL and the simulator."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, insert, select

from hurren import daily_counts as dc
from hurren import spec, store
from hurren.spec import DEFAULT_OPTIONS
from tests.unit.test_push import RowsPlatform

ORG = "457759922"
DAY = date(2024, 5, 29)


@pytest.fixture
def engine(tmp_path):
    e = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_reconciliation(e)
    yield e
    e.dispose()


_n = iter(range(1, 10**6))


def _report(entity, *, dept="1190000", name="内镜中心", std="A03", std_name="内科", auth="2024-05-29 10:00:00",
            org=ORG, data_status=1, state="3", checked="1"):  # fmt: skip
    n = next(_n)
    row = {
        "org_code": org,
        "report_form_no": f"F{n}",
        "patient_id": f"P{n}",
        "event_type": 1,
        "event_no": f"E{n}",
        "authenticator_dtime": datetime.fromisoformat(auth),
        "participant_dept_code": dept,
        "participant_dept_name": name,
        "participant_dept_std_code": std,
        "participant_dept_std_name": std_name,
        "data_status": data_status,
        "etl_content_hash": f"h{n}",
        "pdf_object_key": f"reports/{n}.pdf",  # the PDF columns are NOT NULL (pdf is required)
        "pdf_sha256": "0" * 64,
        "pdf_size": 1,
    }
    if entity == "exammaster":
        row |= {"state": state, "checked_status": checked}
    return row


def _add(engine, entity, rows):
    with engine.begin() as conn:
        conn.execute(insert(store.SPEC_TABLES[entity]), rows)


# --- which day -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "day"),
    [
        pytest.param(datetime(2024, 5, 30, 3, 0, tzinfo=ZoneInfo("Asia/Shanghai")), DAY, id="03:00-beijing"),
        pytest.param(datetime(2024, 5, 29, 19, 0, tzinfo=UTC), DAY, id="same-instant-in-utc"),
        pytest.param(datetime(2024, 5, 29, 15, 59, tzinfo=UTC), date(2024, 5, 28), id="23:59-beijing"),
        pytest.param(datetime(2024, 5, 30, 0, 0), DAY, id="naive-is-beijing"),
    ],
)
def test_report_day_is_the_previous_beijing_day(at, day):
    assert dc.report_day(at) == day


def test_days_to_count_ends_with_the_day_oldest_first():
    assert dc.days_to_count(DAY, 3) == [date(2024, 5, 27), date(2024, 5, 28), DAY]
    with pytest.raises(dc.DailyCountError):
        dc.days_to_count(DAY, 0)


# --- merge and D8 ----------------------------------------------------------------------------


def test_merge_gives_one_row_per_department_with_its_most_common_names():
    t1, t2 = datetime(2024, 5, 29, 9), datetime(2024, 5, 29, 10)
    lab = [("A", "检验科", "A30", "医学检验科", 5, t1), ("A", "检验科(旧)", "A30", "医学检验科", 1, t2)]
    exam = [("A", "检验科", "A30", "医学检验科", 2, t1), ("B", "超声室", "A32.05", "超声诊断专业", 74, t2)]
    merged = dc.merge(lab, exam)
    assert merged == [
        dc.DeptCount("A", "检验科", "A30", "医学检验科", lab=6, exam=2),
        dc.DeptCount("B", "超声室", "A32.05", "超声诊断专业", lab=0, exam=74),
    ]


def test_merge_breaks_a_tie_by_the_latest_report():
    early, late = datetime(2024, 5, 29, 9), datetime(2024, 5, 29, 17)
    merged = dc.merge([("A", "old", "A30", "x", 1, early), ("A", "new", "A30", "x", 1, late)], [])
    assert merged[0].dept_name == "new"


def test_d8_clamps_by_default_and_reports_the_overflow():
    rows, overflow = dc.to_rows([dc.DeptCount("A", "a", "A30", "x", lab=12_345, exam=3)], org_code=ORG, day=DAY,
                                computed_at=datetime(2024, 5, 30, 3), options=DEFAULT_OPTIONS)  # fmt: skip
    assert (rows[0]["lab_num"], rows[0]["exam_num"]) == (9999, 3)
    assert overflow == {"A": ("lab_num",)}


def test_d8_error_mode_refuses_to_send_a_wrong_number():
    options = spec.SpecOptions(daily_count_overflow="error")
    with pytest.raises(dc.DailyCountOverflow, match="NUMBER"):
        dc.to_rows([dc.DeptCount("A", "a", "A30", "x", exam=10_000)], org_code=ORG, day=DAY,
                   computed_at=datetime(2024, 5, 30, 3), options=options)  # fmt: skip


def test_row_hash_ignores_the_computation_time():
    rows1, _ = dc.to_rows(
        [dc.DeptCount("A", "a", "A30", "x", 1, 2)],
        org_code=ORG,
        day=DAY,
        computed_at=datetime(2024, 5, 30, 3),
        options=DEFAULT_OPTIONS,
    )
    rows2, _ = dc.to_rows(
        [dc.DeptCount("A", "a", "A30", "x", 1, 2)],
        org_code=ORG,
        day=DAY,
        computed_at=datetime(2024, 6, 1, 3),
        options=DEFAULT_OPTIONS,
    )
    rows3, _ = dc.to_rows(
        [dc.DeptCount("A", "a", "A30", "x", 1, 3)],
        org_code=ORG,
        day=DAY,
        computed_at=datetime(2024, 5, 30, 3),
        options=DEFAULT_OPTIONS,
    )
    assert dc.row_hash(rows1[0]) == dc.row_hash(rows2[0]) != dc.row_hash(rows3[0])


# --- from the store --------------------------------------------------------------------------


def test_only_audited_valid_reports_of_the_day_count(engine):
    _add(engine, "labmaster", [
        _report("labmaster", auth="2024-05-29 00:00:00"),  # first second of the day: in
        _report("labmaster", auth="2024-05-29 23:59:59"),
        _report("labmaster", auth="2024-05-30 00:00:00"),  # next day
        _report("labmaster", auth="2024-05-28 23:59:59"),  # day before
        _report("labmaster", data_status=0),  # void (D15)
        _report("labmaster", org="999999999"),  # another hospital
        _report("labmaster", dept="1180000", name="超声室", std="A32.05", std_name="超声诊断专业"),
    ])  # fmt: skip
    _add(engine, "exammaster", [
        _report("exammaster", state="3"),
        _report("exammaster", state="4"),
        _report("exammaster", state="2"),  # 书写完成: not audited
        _report("exammaster", state="3", checked="0"),  # 是否审核 = 否
        _report("exammaster", state="3", checked=None),
        _report("exammaster", dept="1180000", name="超声室", std="A32.05", std_name="超声诊断专业"),
    ])  # fmt: skip
    with engine.connect() as conn:
        counts = dc.count_reports(conn, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    assert [(c.dept_code, c.lab, c.exam) for c in counts] == [("1180000", 1, 1), ("1190000", 2, 3)]


def _stored(engine, table=None):
    t = table if table is not None else store.SPEC_TABLES["lab_exam_report"]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()]


def test_a_rerun_replaces_the_day_and_never_double_counts(engine):
    _add(engine, "labmaster", [_report("labmaster") for _ in range(3)])
    first = dc.compute_day(
        engine,
        org_code=ORG,
        day=DAY,
        run_id="r1",
        now=datetime(2024, 5, 30, 3, 0, 7),
        options=DEFAULT_OPTIONS,
    )
    assert first.changed and [(r["dept_code"], r["lab_num"], r["exam_num"]) for r in first.rows] == [
        ("1190000", 3, 0)
    ]
    again = dc.compute_day(
        engine, org_code=ORG, day=DAY, run_id="r2", now=datetime(2024, 5, 30, 4), options=DEFAULT_OPTIONS
    )
    assert not again.changed
    assert _stored(engine) == [
        {**r, "etl_loaded_at": _stored(engine)[0]["etl_loaded_at"]} for r in first.rows
    ]
    assert again.rows[0]["last_update_dtime"] == datetime(2024, 5, 30, 3, 0, 7)  # untouched: not re-sent

    _add(engine, "labmaster", [_report("labmaster")])  # a late report of the day
    later = dc.compute_day(
        engine, org_code=ORG, day=DAY, run_id="r3", now=datetime(2024, 5, 31, 3), options=DEFAULT_OPTIONS
    )
    assert later.changed
    stored = _stored(engine)
    assert [(r["dept_code"], r["lab_num"], r["last_update_dtime"]) for r in stored] == [
        ("1190000", 4, datetime(2024, 5, 31, 3))
    ]


def test_a_department_that_disappears_is_sent_as_zero(engine):
    rows = [_report("labmaster"), _report("labmaster", dept="X1", name="X", std="A03", std_name="内科")]
    _add(engine, "labmaster", rows)
    dc.compute_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    with engine.begin() as conn:  # the X1 report turns out to belong to another department
        t = store.SPEC_TABLES["labmaster"]
        conn.execute(
            t.update().where(t.c.participant_dept_code == "X1").values(participant_dept_code="1190000")
        )
    result = dc.compute_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    assert [(r["dept_code"], r["lab_num"]) for r in result.rows] == [("1190000", 2), ("X1", 0)]


def test_overflow_is_clamped_and_recorded_for_the_reconciliation(engine):
    _add(engine, "labmaster", [_report("labmaster") for _ in range(5)])
    options = spec.SpecOptions(daily_count_max=3)
    result = dc.compute_day(engine, org_code=ORG, day=DAY, options=options)
    assert result.rows[0]["lab_num"] == 3 and result.overflow == {"1190000": ("lab_num",)}
    recon = _stored(engine, store.daily_count_recon)
    assert (recon[0]["lab_counted"], recon[0]["lab_num"], recon[0]["overflow"]) == (5, 3, "lab_num")
    with pytest.raises(dc.DailyCountOverflow):
        dc.compute_day(
            engine,
            org_code=ORG,
            day=DAY,
            options=spec.SpecOptions(daily_count_max=3, daily_count_overflow="error"),
        )


# --- push through the outbox, and reconciliation -------------------------------------------------


def _push(engine, platform):
    from hurren.push.options import PushOptions
    from hurren.push.runner import Pusher

    options = PushOptions(entities=("lab_exam_report",), backoff_base_s=0.01, max_wait_s=1, max_run_s=10)
    return Pusher(
        engine=engine,
        client=platform,
        objects=None,
        bucket="b",
        options=options,
        spec_options=DEFAULT_OPTIONS,
    ).run()


def _queued(engine):
    with engine.connect() as conn:
        return conn.execute(select(store.outbox.c.record_key, store.outbox.c.status)
                            .where(store.outbox.c.entity == "lab_exam_report").order_by(store.outbox.c.id)).all()  # fmt: skip


def test_changed_rows_are_queued_once_sent_in_one_call_and_reconciled_from_the_outbox(engine):
    _add(
        engine, "labmaster", [_report("labmaster"), _report("labmaster", dept="2", name="检验科", std="A01")]
    )
    dc.compute_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    dc.compute_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)  # unchanged: nothing queued again
    assert [status for _, status in _queued(engine)] == ["queued", "queued"]
    assert dc.reconcile_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)["push_status"] == {
        "queued": 2
    }
    platform = RowsPlatform(field="dept_code")
    _push(engine, platform)
    assert [(m, sorted(r["dept_code"] for r in rows)) for m, rows, _ in platform.calls] == [
        ("ArchiveAutoReport", ["1190000", "2"])]  # fmt: skip
    assert set(platform.calls[0][1][0]) == set(spec.entity("lab_exam_report").names)
    summary = dc.reconcile_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    assert summary["push_status"] == {"acked": 2} and "not_sent" not in summary["issues"]
    recon = _stored(engine, store.daily_count_recon)
    assert {(r["push_status"], r["push_answer"]) for r in recon} == {("acked", "ok")}
    _add(engine, "labmaster", [_report("labmaster", dept="2", name="检验科", std="A01")])  # a late report
    dc.compute_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    assert [status for _, status in _queued(engine)] == [
        "acked",
        "acked",
        "queued",
    ]  # only the changed department
    _push(engine, platform)
    assert [r["lab_num"] for r in platform.calls[-1][1]] == ["2"]
    assert dc.reconcile_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)["push_status"] == {
        "acked": 2
    }


def test_a_refused_row_is_rejected_in_the_outbox_and_reported_by_the_reconciliation(engine):
    _add(
        engine, "labmaster", [_report("labmaster"), _report("labmaster", dept="2", name="检验科", std="A01")]
    )
    dc.compute_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    result = _push(engine, RowsPlatform({"1190000"}, field="dept_code"))
    assert result.total().acked == 1 and result.total().rejected == 1
    summary = dc.reconcile_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    assert summary["push_status"] == {"acked": 1, "rejected": 1} and summary["issues"] == {"push_error": 1}
    refused = next(r for r in _stored(engine, store.daily_count_recon) if r["dept_code"] == "1190000")
    assert refused["push_answer"] == "error:dept_code 1190000 不存在" and refused["issues"] == "push_error"


def test_reconciliation_compares_counts_with_the_reports_the_platform_acknowledged(engine):
    reports = [_report("labmaster") for _ in range(3)]
    _add(engine, "labmaster", reports)
    dc.compute_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    _push(engine, RowsPlatform(field="dept_code"))
    assert (
        dc.reconcile_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)["lab_acked"] is None
    )  # no report pushed yet: unknown
    ent = spec.entity("labmaster")
    with engine.begin() as conn:
        conn.execute(insert(store.outbox), [
            {"entity": "labmaster", "org_code": ORG, "record_key": store.record_key(ent, r), "content_hash": "h",
             "action": "register", "status": status}
            for r, status in zip(reports, ("acked", "acked", "queued"), strict=True)
        ])  # fmt: skip
    summary = dc.reconcile_day(engine, org_code=ORG, day=DAY, options=DEFAULT_OPTIONS)
    assert (summary["lab_counted"], summary["lab_acked"], summary["exam_acked"]) == (3, 2, None)
    assert summary["issues"] == {"lab_not_acked": 1}
    recon = _stored(engine, store.daily_count_recon)[0]
    assert (recon["lab_acked"], recon["issues"]) == (2, "lab_not_acked")
    json.dumps(summary)  # XCom-safe


# --- the DAG ---------------------------------------------------------------------------------


def test_the_dag_runs_at_three_in_the_morning_beijing_time_per_hospital():
    import pendulum
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    from tests.fixtures.airflow import load_dagbag

    dag = load_dagbag().dags["daily_counts"]
    t = dag.timetable
    assert (t.expression, str(t.timezone)) == ("0 3 * * *", "Asia/Shanghai")
    core = CronTriggerTimetable(t.expression, timezone=str(t.timezone))
    info = core.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(
            earliest=pendulum.datetime(2024, 5, 29, 12, tz="UTC"), latest=None, catchup=True
        ),
    )
    assert info.run_after == pendulum.datetime(2024, 5, 29, 19, tz="UTC")  # 2024-05-30 03:00 in Beijing
    assert dc.report_day(info.run_after) == DAY
    groups = {task.task_id.split(".")[0] for task in dag.tasks if "." in task.task_id}
    assert groups and all(
        {f"{g}.count", f"{g}.push", f"{g}.reconcile"} <= {task.task_id for task in dag.tasks} for g in groups
    )
