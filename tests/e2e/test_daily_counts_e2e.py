"""Daily counts (§1.2.2.5) from the store to the platform, through real DAG runs over PostgreSQL,
S3 and the simulator (SOAP over HTTP).

Two synthetic hospitals with defective reports (held in quarantine, so not counted); their lab and
exam reports go through ``lab_reports__*`` / ``exam_reports__*``, then ``daily_counts`` runs at
03:00 Beijing time. What must hold: the counts the simulator received equal an independent SQL
count over the hospitals' own databases (valid, audited reports of the day by ordering
department); a re-run sends nothing and changes nothing; a late report of the day makes the next
run replace the day's counts (never add to them); the reconciliation matches the counts with the
reports the platform acknowledged once the reports are pushed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text

from hurren import dagfactory, store
from hurren_testkit import synthetic

pytestmark = pytest.mark.services

BEIJING = ZoneInfo("Asia/Shanghai")
DAY = date(2024, 3, 11)
REPORTS_UNTIL = datetime(2024, 3, 12, tzinfo=BEIJING)
COUNT_AT = datetime(2024, 3, 12, 3, 0, tzinfo=BEIJING)  # the 03:00 run that counts DAY


@pytest.fixture(scope="module")
def region(make_region, monkeypatch_module, s3, sim):
    return make_region(
        monkeypatch_module, "dc", seed=41, day=DAY, n=2, bucket=s3.bucket_reports, sim=sim,
        generate={"lab_reports": 60, "exam_reports": 30, "lab_items": 3, "exam_items": (1, 1), "pacs_instances": 1,
                  "defect_rate": 0.15, "pdf_kb": 1, "accept_records": 0, "quote_records": 0},
        source={"chunk_size": 200, "streams": ["lab", "exam"]},
    )  # fmt: skip


def _count(run_dag, region, *, at=COUNT_AT, conf=None):
    """One ``daily_counts`` run; its tasks' results by task id (``<hospital>.count`` ...), read at
    once (a later run with the same logical date replaces this one's)."""
    result = run_dag(
        dagfactory.daily_counts_dag(list(region.sources), doc_md="e2e"), logical_date=at, conf=conf
    )
    assert result.state == "success", result.summary()
    return dict(result.return_values)


@pytest.fixture(scope="module")
def first_run(region, run_dag, sim):
    sim.platform.reset()
    region.run_reports(run_dag, REPORTS_UNTIL)
    return _count(run_dag, region)


def independent_counts(url, day):
    """From the hospital's own database: valid reports (no defect label on the report or its
    sub-items; a PACS defect does not make its exam report invalid), not void, audited on ``day``,
    exams in state 3/4 and not marked unaudited, by ordering department."""
    engine = create_engine(url)
    out = defaultdict(lambda: [0, 0])
    with engine.connect() as conn:
        for i, table in enumerate(("labmaster", "exammaster")):
            extra = "and m.state in ('3', '4') and coalesce(m.checked_status, '1') <> '0'" if i else ""
            rows = conn.execute(text(f"""
                select m.participant_dept_code as dept, count(*) as n from {table} m
                where m.authenticator_dtime >= :d0 and m.authenticator_dtime < :d1 and m.data_status = '1' {extra}
                  and not exists (select 1 from {synthetic.LABEL_TABLE} l
                                  where l.org_code = m.org_code and l.report_form_no = m.report_form_no
                                    and l.entity in ('{table}', '{table.replace("master", "_subitem")}'))
                group by m.participant_dept_code"""), {"d0": f"{day} 00:00:00", "d1": f"{day + timedelta(days=1)} 00:00:00"})  # fmt: skip
            for r in rows:
                out[r.dept][i] += r.n
    engine.dispose()
    return {k: tuple(v) for k, v in out.items()}


def received(sim, org_code, day):
    out = {}
    for rec, _org, _name in sim.platform.store.records(
        "lab_exam_report", org_code=org_code, date_t=day.isoformat()
    ):
        out[rec["dept_code"]] = (int(rec["lab_num"]), int(rec["exam_num"]))
    return out


def test_the_counts_the_platform_received_equal_an_independent_count_of_the_source(region, first_run, sim):
    total = 0
    for source in region.sources:
        expected = independent_counts(region.urls[source.id], DAY)
        assert received(sim, source.org_code, DAY) == expected
        total += sum(a + b for a, b in expected.values())
        groups = first_run[f"{source.id}.count"]
        assert [g["day"] for g in groups] == ["2024-03-09", "2024-03-10", "2024-03-11"]
        assert groups[-1]["lab"] + groups[-1]["exam"] == sum(a + b for a, b in expected.values())
        pushed = first_run[f"{source.id}.push"]["total"]
        assert (pushed["acked"], pushed["sent"]) == (len(expected), len(expected))  # one row per department
    assert 120 < total < 180  # defective reports were held: fewer than the 180 generated


def test_every_row_went_out_with_its_department_names(region, first_run, sim):
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        stored = [dict(r) for r in conn.execute(select(store.SPEC_TABLES["lab_exam_report"])).mappings()]
    engine.dispose()
    on_platform = {
        (r["org_code"], r["dept_code"]): r for r, _, _ in sim.platform.store.records("lab_exam_report")
    }
    assert len(stored) == len(on_platform) > 4
    for s in stored:
        p = on_platform[s["org_code"], s["dept_code"]]
        assert (p["dept_name"], p["dept_std_code"], p["dept_std_name"]) == (
            s["dept_name"],
            s["dept_std_code"],
            s["dept_std_name"],
        )
        assert p["date_t"] == "2024-03-11" and p["last_update_dtime"].startswith("20")


def test_a_rerun_sends_nothing_and_changes_nothing(region, first_run, run_dag, sim):
    before = sorted(
        json.dumps(r, sort_keys=True) for r, _, _ in sim.platform.store.records("lab_exam_report")
    )
    calls = sim.platform.stats.as_dict()
    again = _count(run_dag, region)
    for source in region.sources:
        assert again[f"{source.id}.push"]["total"]["sent"] == 0
        assert not again[f"{source.id}.count"][-1]["changed"]
    assert (
        sorted(json.dumps(r, sort_keys=True) for r, _, _ in sim.platform.store.records("lab_exam_report"))
        == before
    )
    assert sim.platform.stats.as_dict() == calls


def test_reconciliation_against_the_reports_the_platform_acknowledged(region, first_run, run_dag):
    from hurren.push.options import PushOptions
    from hurren.push.tasks import run_push

    before = first_run[f"{region.sources.enabled[0].id}.reconcile"][-1]
    assert before["push_status"] == {"acked": before["departments"]}
    assert before["lab_acked"] == 0 and "lab_not_acked" in before["issues"]  # reports queued, not pushed yet
    run_push(options=PushOptions(max_wait_s=0, max_run_s=120), run_id="e2e")
    again = _count(run_dag, region)
    for source in region.sources:
        day = again[f"{source.id}.reconcile"][-1]
        assert (day["lab_acked"], day["exam_acked"]) == (day["lab_counted"], day["exam_counted"])
        assert day["issues"] == {}
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(store.daily_count_recon).where(store.daily_count_recon.c.date_t == DAY)
        ).all()
    engine.dispose()
    assert rows and all(r.issues == "" and r.lab_acked == r.lab_counted for r in rows)


def test_a_late_report_replaces_the_days_counts_never_adds(region, first_run, run_dag, sim):
    source = region.sources.enabled[1]
    h = region.hospitals[1]
    changes = synthetic.generate_changes(region.urls[source.id], org=h, since=datetime(2024, 3, 11, 12, 0),
                                         count_new=3, seed=9, report="lab", window_s=600, lab_items=3)  # fmt: skip
    assert len(changes.new) == 3
    backfill = {"since": "2024-03-11 12:00:00", "until": "2024-03-11 12:30:00"}  # behind the watermark
    lab = run_dag(
        dagfactory.report_dag(source, "lab", doc_md="e2e"), logical_date=REPORTS_UNTIL, conf=backfill
    )
    assert lab.state == "success" and lab.xcom("extract_validate_load")["loaded"] == 3
    before = received(sim, source.org_code, DAY)
    later = _count(run_dag, region, at=COUNT_AT + timedelta(days=1))  # the next night recounts DAY
    assert 1 <= later[f"{source.id}.push"]["total"]["acked"] <= 3  # the departments whose counts changed
    after = received(sim, source.org_code, DAY)
    assert after == independent_counts(region.urls[source.id], DAY)
    assert sum(a for a, _ in after.values()) == sum(a for a, _ in before.values()) + 3
    other = region.sources.enabled[0]
    assert later[f"{other.id}.push"]["total"]["sent"] == 0


def test_backfill_of_any_day(region, first_run, run_dag, sim):
    result = _count(
        run_dag, region, at=COUNT_AT + timedelta(days=5), conf={"date": "2024-03-11", "recount_days": 1}
    )
    for source in region.sources:
        assert [g["day"] for g in result[f"{source.id}.count"]] == ["2024-03-11"]
        assert result[f"{source.id}.push"]["total"]["sent"] == 0  # acknowledged before: not sent again
        assert received(sim, source.org_code, DAY) == independent_counts(region.urls[source.id], DAY)
