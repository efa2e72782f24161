"""The real scheduler (``scripts/airflow up``: api-server, scheduler, dag-processor, triggerer,
LocalExecutor, metadata in PostgreSQL), not ``dag.test()``, on two synthetic hospitals.

- ``sa`` (lab and exam, every minute, a pool of 1 slot): its runs update the reports Assets, and
  ``push_reports`` is triggered by them and gets every loaded report acknowledged by the platform
  simulator; its two extraction tasks never run at the same time, although the second was ready
  while the first ran (the pool held it).
- ``sb`` (lab, daily): its database refuses connections during the first try (an injected fault:
  ``ALLOW_CONNECTIONS false``); the task fails with ``SourceReadError``, is retried by the
  scheduler, and the run's counts balance. Then ``airflow backfill create`` over one past day
  reads exactly that day and leaves the watermark as it was.

A cluster policy in the stack's home shortens the retry delay to 15 s (the DAGs say 2 minutes);
everything else is the product's. About 4-6 minutes on 2 cores.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text

from hurren import store
from hurren.settings import settings
from hurren_testkit import synthetic
from tests.e2e.conftest import sim  # noqa: F401 (fixture)
from tests.fixtures.stack import AirflowStack, running, wait_for

pytestmark = pytest.mark.services

BEIJING = ZoneInfo("Asia/Shanghai")
DAYS = (date(2024, 3, 10), date(2024, 3, 11), date(2024, 3, 12))
BACKFILL_DAY = DAYS[1]
LAB_A, LAB_B = "lab_reports__sa", "lab_reports__sb"
EXAM_A = "exam_reports__sa"
EVL = "extract_validate_load"
TIMEOUT = 480  # seconds for anything the scheduler does, on a busy machine


def _generate(i, hospital, url):
    """sa: one day of lab and exam reports; sb: lab reports on each of DAYS."""
    if i == 0:
        synthetic.generate_hospital_day(url, org=hospital, day=DAYS[1], lab_reports=60, exam_reports=30, seed=31,
                                        lab_items=6, pdf_kb=1, defect_rate=0.1)  # fmt: skip
        return
    for k, day in enumerate(DAYS):
        synthetic.generate_hospital_day(url, org=hospital, day=day, lab_reports=20, exam_reports=0, seed=32 + k,
                                        lab_items=4, pdf_kb=1, reset=k == 0)  # fmt: skip


@pytest.fixture(scope="module")
def region(make_region, monkeypatch_module, s3, sim):  # noqa: F811
    return make_region(
        monkeypatch_module, "sched", seed=31, ids=("sa", "sb"), generate=_generate, bucket=s3.bucket_reports, sim=sim,
        source=[{"streams": ["lab", "exam"], "schedule": "* * * * *", "chunk_size": 20,
                 "pool": {"name": "hurren_src_sa", "slots": 1}},
                {"streams": ["lab"], "schedule": "0 0 * * *", "pool": {"name": "hurren_src_sb", "slots": 2}}],
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(region, make_database, tmp_path_factory):
    s = AirflowStack(tmp_path_factory.mktemp("stack"), make_database("airflow_sched"), retry_delay_s=15)
    with running(s):
        s.wait_parsed(LAB_A, EXAM_A, LAB_B, "push_reports")
        yield s


def _allow_connections(url: str, allow: bool) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(settings().database_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}'))
    admin.dispose()


def _succeeded(stack: AirflowStack, dag_id: str, run_type: str = "scheduled") -> list:
    return [r for r in stack.dag_runs(dag_id) if r.run_type == run_type and r.state == "success"]


def _etl_run(store_url: str, run_id: str, source: str, stream: str):
    engine = create_engine(store_url)
    with engine.connect() as conn:
        r = store.run
        row = conn.execute(
            select(r).where(r.c.run_id == run_id, r.c.source == source, r.c.stream == stream)
        ).one()
    engine.dispose()
    return row


def _unchanged(etl_run) -> int:
    return json.loads(etl_run.details)["unchanged"]


def _watermark(store_url: str, source: str, stream: str):
    engine = create_engine(store_url)
    with engine.connect() as conn:
        wm = store.watermark
        row = conn.execute(select(wm).where(wm.c.source == source, wm.c.stream == stream)).one()
    engine.dispose()
    return tuple(row)


@pytest.fixture(scope="module")
def scheduled(stack, region):
    """Both hospitals unpaused with sb's database unreachable; sb's first try fails, then its
    database comes back; every first scheduled run succeeds; push_reports has pushed it all."""
    _allow_connections(region.urls["sb"], False)
    try:
        stack.unpause("push_reports", LAB_A, EXAM_A, LAB_B)

        def first_try_failed():
            return any(
                t.try_number == 1 and t.state == "failed" for t in stack.task_instances(LAB_B, EVL)
            ) or any(t.state == "up_for_retry" for t in stack.task_instances(LAB_B, EVL))

        wait_for(first_try_failed, timeout=TIMEOUT, what=f"{LAB_B}'s first try to fail", diagnose=stack.logs)
    finally:
        _allow_connections(region.urls["sb"], True)
    for dag_id in (LAB_A, EXAM_A, LAB_B):
        wait_for(lambda d=dag_id: _succeeded(stack, d), timeout=TIMEOUT, what=f"a successful scheduled run of {dag_id}",
                 diagnose=lambda d=dag_id: f"{stack.dag_runs(d)}\n{stack.task_instances(d)}\n{stack.logs()}")  # fmt: skip
    stack.pause(
        LAB_A, EXAM_A
    )  # no more runs every minute; sb's next is tomorrow (a backfill needs it unpaused)

    engine = create_engine(region.store_url)

    def all_acked() -> bool:
        with engine.connect() as conn:
            states = conn.execute(select(store.outbox.c.status)).scalars().all()
        return bool(states) and set(states) == {"acked"}

    wait_for(all_acked, timeout=TIMEOUT, what="push_reports to get every queued report acknowledged", every=3,
             diagnose=lambda: f"{stack.dag_runs('push_reports')}\n{stack.logs()}")  # fmt: skip
    engine.dispose()
    return stack


def test_a_hospital_run_updates_the_asset_and_triggers_push_reports(scheduled, region, sim):  # noqa: F811
    stack = scheduled
    lab_run = _succeeded(stack, LAB_A)[0]
    events = stack.rows(
        "SELECT a.uri, e.source_dag_id, e.source_run_id FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE e.source_dag_id = :dag_id", dag_id=LAB_A)  # fmt: skip
    assert ("hurren://store/lab_reports", LAB_A, lab_run.run_id) in [tuple(e) for e in events]

    triggered = [r for r in stack.dag_runs("push_reports") if r.run_type == "asset_triggered"]
    states = {r.state for r in triggered}  # later asset events may have queued another run meanwhile
    assert "success" in states and "failed" not in states, stack.dag_runs("push_reports")

    def consumers() -> set[str]:
        return {c.source_dag_id for c in stack.rows(
            "SELECT e.source_dag_id FROM dagrun_asset_event x JOIN asset_event e ON e.id = x.event_id "
            "JOIN dag_run r ON r.id = x.dag_run_id WHERE r.dag_id = 'push_reports' AND r.run_type = 'asset_triggered'")}  # fmt: skip

    # an earlier run may have pushed everything before the run that consumes sa's events was queued
    wait_for(lambda: {LAB_A, EXAM_A} <= consumers(), timeout=TIMEOUT, what="push_reports runs consuming sa's events",
             diagnose=lambda: f"{consumers()}\n{stack.dag_runs('push_reports')}")  # fmt: skip

    # what the store loaded is what the platform acknowledged, report for report
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        loaded = {e: conn.execute(select(store.SPEC_TABLES[e].c.report_form_no)).scalars().all()
                  for e in ("labmaster", "exammaster")}  # fmt: skip
        outbox = conn.execute(select(store.outbox.c.status, store.outbox.c.entity)).all()
    engine.dispose()
    assert loaded["labmaster"] and loaded["exammaster"]
    platform = sim.platform.store
    for entity, kind in (("labmaster", "lab"), ("exammaster", "exam")):
        on_platform = {r["key"]["report_form_no"] for r in platform.report_keys(kind)}
        assert on_platform == set(loaded[entity]), entity
    assert {s for s, _ in outbox} == {"acked"}


def test_the_pool_caps_a_hospitals_concurrent_extraction(scheduled):
    stack = scheduled
    pool = stack.rows("SELECT slots FROM slot_pool WHERE pool = 'hurren_src_sa'")
    assert [p.slots for p in pool] == [1]
    tis = [t for d in (LAB_A, EXAM_A) for t in stack.task_instances(d, EVL) if t.start_date and t.end_date]
    assert {t.pool for t in tis} == {"hurren_src_sa"} and {t.dag_id for t in tis} == {LAB_A, EXAM_A}
    tis.sort(key=lambda t: t.start_date)
    for first, second in pairwise(tis):
        assert first.end_date <= second.start_date, f"{first} overlaps {second}"


def test_a_task_that_fails_once_is_retried_and_its_counts_balance(scheduled, region):
    stack = scheduled
    run = _succeeded(stack, LAB_B)[0]
    tries = [t for t in stack.task_instances(LAB_B, EVL) if t.run_id == run.run_id]
    assert [(t.try_number, t.state) for t in tries] == [(1, "failed"), (2, "success")]
    log = (
        stack.home / "logs" / f"dag_id={LAB_B}" / f"run_id={run.run_id}" / f"task_id={EVL}" / "attempt=1.log"
    )
    assert "SourceReadError" in log.read_text() and "not currently accepting connections" in log.read_text()

    etl = _etl_run(region.store_url, run.run_id, "sb", "lab")
    assert etl.status == "success"
    assert (
        etl.extracted == 3 * 20
        and etl.extracted == etl.loaded + _unchanged(etl) + etl.stale + etl.quarantined
    )
    tries = json.loads(etl.details)["tries"]  # the run's row keeps each try: the failed one read nothing
    assert [(t["status"], t.get("extracted", 0)) for t in tries] == [("failed", 0), ("success", 3 * 20)], (
        tries
    )


def test_backfill_reads_exactly_its_window_and_leaves_the_watermark(scheduled, region):
    stack = scheduled
    before = _watermark(region.store_url, "sb", "lab")
    start = datetime.combine(BACKFILL_DAY, datetime.min.time(), BEIJING)
    stack.cli(
        "backfill",
        "create",
        "--dag-id",
        LAB_B,
        "--from-date",
        start.isoformat(),
        "--to-date",
        start.isoformat(),
    )
    [run] = wait_for(lambda: _succeeded(stack, LAB_B, "backfill"), timeout=TIMEOUT, what="the backfill run",
                     diagnose=lambda: f"{stack.dag_runs(LAB_B)}\n{stack.logs()}")  # fmt: skip
    assert (run.data_interval_start, run.data_interval_end) == (start, start + timedelta(days=1))

    source = create_engine(region.urls["sb"])
    with source.connect() as conn:
        in_window = conn.execute(
            text("SELECT count(*) FROM labmaster WHERE last_update_dtime >= :a AND last_update_dtime < :b"),
            {"a": start.replace(tzinfo=None), "b": (start + timedelta(days=1)).replace(tzinfo=None)},
        ).scalar_one()
        total = conn.execute(text("SELECT count(*) FROM labmaster")).scalar_one()
    source.dispose()
    assert 0 < in_window < total

    etl = _etl_run(region.store_url, run.run_id, "sb", "lab")
    assert etl.status == "success" and etl.extracted == in_window
    assert _unchanged(etl) == in_window  # loaded by the scheduled run already
    assert (etl.interval_start, etl.interval_end) == (
        start.replace(tzinfo=None),
        (start + timedelta(days=1)).replace(tzinfo=None),
    )
    assert _watermark(region.store_url, "sb", "lab") == before
