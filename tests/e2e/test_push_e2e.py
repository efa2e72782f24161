"""Synthetic hospitals → store → region platform (our simulator), through the real push DAG.

Two hospitals in PostgreSQL (some reports defective), loaded into a fresh store by the pipeline
(pandas validator: the extraction DAGs are tested in test_reports_to_store.py), then the
``push_reports`` DAG runs with ``dag.test()`` against an in-process simulator reached through the
Airflow connection ``hurren_platform``. What must hold: the simulator's reports equal the valid
source reports field by field, PDFs by SHA-256; after the hospitals revise, void and re-key some
reports, the next push re-submits the revisions, voids the voided (keeping who quoted them) and
voids the old key of a re-keyed report; every version is acknowledged exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine

from hurren import extract, incremental, load, pipeline, spec, store
from hurren.platform import Credential, PlatformClient
from hurren.rules import load_rulebook
from hurren.settings import settings
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import samples, synthetic
from hurren_testkit.simulator import Simulator, SimulatorConfig, Visitor
from tests.fixtures.regions import Region

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
UNTIL = datetime(2024, 3, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
KINDS = {"lab": ("labmaster", "lab_subitem"), "exam": ("exammaster", "exam_subitem")}
PLATFORM_ORG = "650100000"  # the municipal platform's own credential


@pytest.fixture(scope="module")
def sim():
    from hurren import crypto

    visitor = Visitor(
        org_code=PLATFORM_ORG, code="e2e-visitor", key="e2e-key", org_name="乌鲁木齐市全民健康信息平台"
    )
    config = SimulatorConfig(port=0, private_key=crypto.generate_keypair()[0], visitors=(visitor,))
    with Simulator(config=config) as s:
        yield s


@pytest.fixture(scope="module")
def region(make_region, monkeypatch_module, s3, sim):
    region = make_region(
        monkeypatch_module, "push", seed=2301, day=DAY, n=2, bucket=s3.bucket_reports,
        generate={"lab_reports": 40, "exam_reports": 16, "defect_rate": 0.1, "pdf_kb": 3, "lab_items": 5},
        source={"chunk_size": 200},
    )  # fmt: skip
    monkeypatch_module.setenv("AIRFLOW_CONN_HURREN_PLATFORM", json.dumps({
        "conn_type": "http", "host": sim.url, "login": "e2e-visitor", "password": "e2e-key",
        "extra": {"org_code": PLATFORM_ORG, "org_name": "乌鲁木齐市全民健康信息平台", "public_key": "simulator",
                  "timeout": 10, "key_max_uses": 25},
    }))  # fmt: skip
    settings.cache_clear()
    return region


@pytest.fixture(scope="module")
def engine(region):
    """The store's engine, its schema created."""
    engine = create_engine(region.store_url)
    store.create_all(engine)
    yield engine
    engine.dispose()


def _load_all(region: Region, engine: Engine, s3: Any, until: datetime, run_id: str) -> None:
    for source in region.sources:
        src = create_engine(region.urls[source.id])
        for stream in KINDS:
            summary = pipeline.run_stream(
                source=source, stream=stream, source_engine=src, store_engine=engine,
                pdfs=load.Pdfs(client=s3.client, bucket=s3.bucket_reports), run_id=run_id, dag_id="e2e",
                until=until, validator="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
            )  # fmt: skip
            assert summary.counts.loaded > 0
        src.dispose()


@pytest.fixture(scope="module")
def first_push(region, engine, s3, sim, run_dag):
    _load_all(region, engine, s3, UNTIL, "load-1")
    sim.platform.reset(data=False, faults=False)  # count this run's connections and keys alone
    result = run_dag("push_reports", logical_date=UNTIL, timeout=180)
    assert result.state == "success", result.summary()
    return {**result.xcom("push"), "received": sim.platform.received()}


def _source_reports(region: Region) -> dict[tuple[str, str], dict[tuple[str, ...], Any]]:
    """Valid (unlabelled) source reports: {(kind, source id): {key: (master, items)}}."""
    out: dict[tuple[str, str], dict[tuple[str, ...], Any]] = {}
    for sid, url in region.urls.items():
        engine = create_engine(url)
        with engine.connect() as conn:
            labelled = {(r.org_code, r.report_form_no) for r in conn.execute(text(  # defects of the reports
                f"select org_code, report_form_no from {synthetic.LABEL_TABLE} where entity in "
                "('labmaster', 'lab_subitem', 'exammaster', 'exam_subitem')"))}  # fmt: skip
            for kind, (master, item) in KINDS.items():
                ent, ient = spec.entity(master), spec.entity(item)
                items: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for r in conn.execute(text(f"select * from {item}")).mappings():
                    items.setdefault((r["org_code"], r["event_no"], r["report_form_no"]), []).append(dict(r))
                out[kind, sid] = {
                    tuple(extract.canonical(r[k]) for k in ent.key): (dict(r), items.get(
                        (r["org_code"], r["event_no"], r["report_form_no"]), []))
                    for r in conn.execute(text(f"select * from {master}")).mappings()
                    if (r["org_code"], r["report_form_no"]) not in labelled
                }  # fmt: skip
                assert ient.key  # sub-items compared by their key below
        engine.dispose()
    return out


def _same(f: spec.Field, platform_value: str | None, source_value: Any) -> bool:
    want = extract.canonical(source_value) or ""
    if f.type == "date":  # D1: the date of a source datetime
        want = want[:10]
    return (platform_value or "") == want


def _assert_platform_holds(sim: Simulator, kind: str, key: tuple[str, ...], master: dict[str, Any],
                           items: list[dict[str, Any]]) -> None:  # fmt: skip
    got = sim.platform.store.report(kind, key)
    assert got is not None and got.voided_at is None, (kind, key[1])
    ent, ient = (spec.entity(n) for n in KINDS[kind])
    for f in ent.fields:
        if f.type == "pdf":
            continue
        assert _same(f, got.master.get(f.name), master[f.name]), (kind, key[1], f.name)
    [stored] = [r for r in sim.platform.store.report_keys(kind) if tuple(r["key"].values()) == key]
    assert stored["pdf_sha256"] == hashlib.sha256(base64.b64decode(master["pdf"])).hexdigest()
    by_key = {tuple(str(i.get(k)) for k in ient.key): i for i in got.items}
    assert len(by_key) == len(items), (kind, key[1])
    for item in items:
        mine = by_key[tuple(extract.canonical(item[k]) for k in ient.key)]
        for f in ient.fields:
            assert _same(f, mine.get(f.name), item[f.name]), (kind, key[1], f.name)


def test_the_platform_holds_every_valid_report_field_by_field_with_its_pdf(region, sim, first_push):
    expected = _source_reports(region)
    for (kind, _sid), reports in expected.items():
        assert reports
        for key, (master, items) in reports.items():
            _assert_platform_holds(sim, kind, key, master, items)
    counts = sim.platform.store.counts()
    for kind in KINDS:
        assert counts[f"{kind}master"] == sum(len(r) for (k, _), r in expected.items() if k == kind)
    assert counts["voided"] == 0


def test_counts_per_report_type_and_hospital_are_returned(region, first_push):
    assert set(first_push["by_org"]) == {h.org_code for h in region.hospitals}
    assert set(first_push["by_entity"]) == {"labmaster", "exammaster"}
    total = first_push["total"]
    assert total["sent"] == total["acked"] > 0 and total["rejected"] == total["dead"] == 0
    for entity, by_org in first_push["outbox"].items():
        assert {s for states in by_org.values() for s in states} == {"acked"}, by_org
        assert sum(states["acked"] for states in by_org.values()) == first_push["by_entity"][entity]["acked"]
    assert sum(t["acked"] for t in first_push["by_org"].values()) == total["acked"]


def test_one_run_wraps_one_session_key_over_kept_alive_connections(first_push):
    """The key ring wraps one SM4 key (SM2) per window (key_max_uses 25 here), not one per call; the
    keep-alive pool opens at most one connection per worker (plus the public-key look-up), not one per call."""
    received, sent = first_push["received"], first_push["total"]["sent"]
    assert received["calls"]["ArchiveAutoReport"] == sent > 3 * 25
    assert received["session_keys"] == -(-sent // 25)  # one strKey per 25 calls
    assert received["connections"] <= 4 + 1  # concurrency 4


def _rekey(url: str, kind: str, org_code: str, *, loaded_before: datetime, at: datetime,
           untouched: set[str]) -> tuple[str, str]:  # fmt: skip
    """Give one loaded, unchanged report a new patient_id at the source (a key change):
    (report_form_no, new patient_id)."""
    master, item = KINDS[kind]
    engine = create_engine(url)
    with engine.begin() as conn:
        labelled = {r for (r,) in conn.execute(text(f"select report_form_no from {synthetic.LABEL_TABLE}"))}
        row = next(r for r in conn.execute(text(
            f"select report_form_no from {master} where data_status = '1' and org_code = :o "
            "and last_update_dtime <= :t order by report_form_no"), {"o": org_code, "t": loaded_before})
            if r.report_form_no not in labelled | untouched)  # fmt: skip
        new_pid = "RK" + row.report_form_no[-6:]
        conn.execute(text(f"update {master} set patient_id = :p, last_update_dtime = :t where report_form_no = :f"),
                     {"p": new_pid, "t": at, "f": row.report_form_no})  # fmt: skip
        conn.execute(text(f"update {item} set last_update_dtime = :t where report_form_no = :f"),
                     {"t": at, "f": row.report_form_no})  # fmt: skip
    engine.dispose()
    return row.report_form_no, new_pid


@pytest.fixture(scope="module")
def second_push(region, engine, s3, sim, first_push, run_dag):
    """Revisions, voids (one quoted by another hospital first), new reports and a key change."""
    changes: dict[str, Any] = {"updated": [], "voided": [], "new": [], "rekeyed": []}
    for i, source in enumerate(region.sources):
        h = region.hospitals[i]
        for kind in KINDS:
            with engine.connect() as conn:
                since = incremental.read_cursor(conn, source, kind).last_value
            ch = synthetic.generate_changes(
                region.urls[source.id], org=h, since=since, count_new=2, count_updated=2, count_voided=2,
                seed=7 + i, report=kind, window_s=600, pdf_kb=3, lab_items=5,
            )  # fmt: skip
            for name in ("updated", "voided", "new"):
                changes[name] += [(kind, tuple(map(str, k))) for k in getattr(ch, name)]
            if i == 0 and kind == "lab":
                touched = {k[1] for _, k in changes["updated"] + changes["voided"]}
                form, pid = _rekey(region.urls[source.id], kind, h.org_code, loaded_before=since,
                                   at=ch.last_change + timedelta(seconds=30), untouched=touched)  # fmt: skip
                changes["rekeyed"].append((kind, h.org_code, form, pid))
    kind, quoted_key = changes["voided"][0]
    report = sim.platform.store.report(kind, quoted_key)
    [quote] = samples.quote_records(report_form_no=quoted_key[1], id_no=report.master["id_no"],
                                    type_="2" if kind == "lab" else "1")  # fmt: skip
    quote |= {"hr_org_code": quoted_key[0], "dept_name": "心内科", "doc_name": "王医生"}
    other = Credential(org_code=PLATFORM_ORG, org_name="", visitor_code="e2e-visitor", visitor_key="e2e-key")
    with PlatformClient(
        endpoint=sim.url, credential=other, public_key=sim.public_key, spec_options=DEFAULT_OPTIONS
    ) as client:
        client.submit_quote([quote])
    _load_all(region, engine, s3, UNTIL + timedelta(days=1), "load-2")
    result = run_dag("push_reports", logical_date=UNTIL + timedelta(days=1), timeout=180)
    assert result.state == "success", result.summary()
    return changes, result.xcom("push"), quoted_key


def test_revisions_are_resubmitted_and_voids_arrive_as_voids(region, sim, second_push):
    changes, result, quoted_key = second_push
    expected = {
        key: mr for (kind, _), reports in _source_reports(region).items() for key, mr in reports.items()
    }
    for kind, key in changes["updated"] + changes["new"]:
        master, items = expected[key]
        _assert_platform_holds(sim, kind, key, master, items)
    for kind, key in changes["voided"]:
        assert sim.platform.store.report(kind, key).voided_at is not None, key
    assert [q["report_form_no"] for q in result["quoted_voids"]] == [quoted_key[1]]
    assert "王医生" in result["quoted_voids"][0]["answer"]
    by = result["total"]
    assert by["acked"] == len(changes["updated"]) + len(changes["new"]) + len(changes["voided"]) + 2
    assert by["rejected"] == by["dead"] == by["retried"] == 0


def test_a_changed_key_is_voided_under_the_old_key_and_registered_under_the_new(region, sim, second_push):
    changes, _, _ = second_push
    [(kind, org, form, new_pid)] = changes["rekeyed"]
    on_platform = [r for r in sim.platform.store.report_keys(kind)
                   if (r["key"]["org_code"], r["key"]["report_form_no"]) == (org, form)]  # fmt: skip
    assert sorted((r["key"]["patient_id"] == new_pid, r["voided_at"] is None) for r in on_platform) == [
        (False, False), (True, True)]  # fmt: skip
    expected = {key: mr for (k, _), reports in _source_reports(region).items() if k == kind
                for key, mr in reports.items()}  # fmt: skip
    [key] = [k for k in expected if k[:2] == (org, form)]
    _assert_platform_holds(sim, kind, key, *expected[key])


def test_every_version_was_acknowledged_exactly_once(region, engine, sim, second_push):
    with engine.connect() as conn:
        entries = conn.execute(select(store.outbox)).all()
        logs = conn.execute(select(store.push_log)).all()
    latest: dict[tuple[str, str], Any] = {}
    for e in sorted(entries, key=lambda e: e.id):
        latest[e.entity, e.record_key] = e
    assert {e.status for e in latest.values()} == {"acked"}, Counter(e.status for e in latest.values())
    assert Counter(e.status for e in entries) <= Counter(
        acked=len(entries)
    )  # nothing rejected, dead or queued
    oks = Counter(r.outbox_id for r in logs if r.outcome == "ok")
    assert set(oks.values()) == {1} and set(oks) == {e.id for e in entries}
    assert len(logs) == len(entries)  # one call per version: nothing acknowledged was sent twice
    received = sim.platform.received()["calls"]
    assert received["ArchiveAutoReport"] == sum(e.action == "register" for e in entries)
    assert received.get("DeleteLabInfo", 0) + received.get("DeleteExamInfo", 0) == sum(
        e.action == "void" for e in entries)  # fmt: skip


def test_a_push_with_nothing_due_sends_nothing(region, sim, second_push, run_dag):
    before = sim.platform.received()["calls"]
    result = run_dag("push_reports", logical_date=UNTIL + timedelta(days=2), timeout=120)
    assert result.state == "success" and result.xcom("push")["total"]["sent"] == 0
    assert sim.platform.received()["calls"] == before


def test_dead_letters_are_listed_and_requeued_from_the_push_requeue_dag(
    region, engine, sim, second_push, run_dag
):
    with engine.begin() as conn:  # as if the platform had refused it until a fix on its side
        victim = conn.execute(select(store.outbox.c.id).where(store.outbox.c.action == "register")
                              .order_by(store.outbox.c.id.desc()).limit(1)).scalar_one()  # fmt: skip
        conn.execute(store.outbox.update().where(store.outbox.c.id == victim)
                     .values(status="dead", attempts=8, last_error="HTTPStatusError: HTTP 502 (gave up)"))  # fmt: skip
    listed = run_dag("push_requeue", timeout=120)
    assert listed.state == "success", listed.summary()
    seen = listed.xcom("requeue")
    assert seen["dry_run"] and [e["id"] for e in seen["entries"]] == [victim]
    assert "HTTP 502" in seen["entries"][0]["last_error"]
    done = run_dag("push_requeue", conf={"dry_run": False, "ids": [victim]}, timeout=120)
    assert done.xcom("requeue")["requeued"] == 1
    before = sim.platform.received()["calls"].get("ArchiveAutoReport", 0)
    pushed = run_dag("push_reports", logical_date=UNTIL + timedelta(days=3), timeout=120)
    assert pushed.xcom("push")["total"]["acked"] == 1
    assert sim.platform.received()["calls"]["ArchiveAutoReport"] == before + 1
