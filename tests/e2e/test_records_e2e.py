"""Accept and quote records (互认结果 / 引用结果) from synthetic hospitals into the store and to the
platform, through real ``records__*`` DAG runs over PostgreSQL and the simulator (SOAP over HTTP).

Two hospitals whose doctors accept or quote each other's reports, a quarter of the records
defective (reason missing or unknown when is_accept = 2, a required field empty). What must hold:
every record is loaded or quarantined (with the rule its label names), the simulator holds exactly
the valid ones field by field, each acknowledged once through the push outbox, a re-run changes
nothing, and refused calls are split until only the refused records are left out, which a requeue
sends once the platform takes them.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text

from hurren import dagfactory, spec, store
from hurren_testkit import synthetic
from tests.fixtures.services import SOURCE_DIALECTS

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
UNTIL = datetime(2024, 3, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
STREAMS = {"accept": "sehr_accept_record", "quote": "sehr_quote_record"}
RECORD_KINDS = ("accept_reason_missing", "accept_reason_unknown", "quote_not_null")


@pytest.fixture(scope="module")
def region(make_region, monkeypatch_module, sim):
    """Two hospitals, one in PostgreSQL and one in MariaDB."""
    return make_region(
        monkeypatch_module, "rec", seed=23, day=DAY, dialects=SOURCE_DIALECTS, sim=sim,
        generate={"lab_reports": 40, "exam_reports": 20, "lab_items": 2, "accept_records": 40, "quote_records": 30,
                  "defect_rate": 0.25, "defect_kinds": RECORD_KINDS, "pdf_kb": 1},
        source={"chunk_size": 15, "streams": ["accept", "quote"]},
    )  # fmt: skip


def _run(run_dag, source, **kwargs):
    result = run_dag(dagfactory.records_dag(source, doc_md="e2e"), logical_date=UNTIL, **kwargs)
    return result


@pytest.fixture(scope="module")
def first_run(region, run_dag, sim):
    sim.platform.reset()
    out = {}
    for source in region.sources:
        result = _run(run_dag, source)
        assert result.state == "success", result.summary()
        out[source.id] = {t: result.xcom(t) for t in ("accept", "quote", "push_accept", "push_quote")}
    return out


def _source_rows(url, entity):
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(text(f"select * from {entity}")).mappings()]
        labels = [dict(r) for r in conn.execute(text(f"select * from {synthetic.LABEL_TABLE}")).mappings()]
    engine.dispose()
    return rows, labels


def _key(entity, row):
    ent = spec.entity(entity)
    return json.dumps([row[k] for k in ent.key], ensure_ascii=False)


def test_every_record_is_loaded_or_quarantined_with_its_rule(region, first_run):
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        held = {}
        for r in conn.execute(
            select(store.quarantine).where(store.quarantine.c.entity.in_(list(STREAMS.values())))
        ):
            held.setdefault((r.entity, r.record_key), set()).update(x["rule"] for x in json.loads(r.rules))
    engine.dispose()
    labelled = 0
    for sid, url in region.urls.items():
        for stream, entity in STREAMS.items():
            rows, labels = _source_rows(url, entity)
            r = first_run[sid][stream]
            assert r["extracted"] == len(rows) and r["batches"] >= 2
            assert r["extracted"] == r["loaded"] + r["unchanged"] + r["stale"] + r["quarantined"]
            mine = [lb for lb in labels if lb["entity"] == entity]
            assert r["quarantined"] == len(mine)
            for lb in mine:
                key = json.dumps(
                    [json.loads(lb["row_key"])[k] for k in spec.entity(entity).key], ensure_ascii=False
                )
                assert lb["expected_rule"] in held[entity, key], (lb["kind"], held.get((entity, key)))
                labelled += 1
    assert labelled >= 10


def test_the_platform_holds_exactly_the_valid_records_field_by_field(region, first_run, sim):
    for stream, entity in STREAMS.items():
        on_platform = {_key(entity, rec): rec for rec, _org, _name in sim.platform.store.records(entity)}
        expected = {}
        for url in region.urls.values():
            rows, labels = _source_rows(url, entity)
            bad = {json.dumps([json.loads(lb["row_key"])[k] for k in spec.entity(entity).key], ensure_ascii=False)
                   for lb in labels if lb["entity"] == entity}  # fmt: skip
            expected.update({_key(entity, r): r for r in rows if _key(entity, r) not in bad})
        assert set(on_platform) == set(expected), stream
        for key, rec in on_platform.items():
            src = expected[key]
            for name in spec.entity(entity).names:
                value = src[name]
                want = value.strftime(spec.DATETIME_FORMAT) if isinstance(value, datetime) else (value or "")
                assert rec[name] == want, (entity, name)
    acked = sum(first_run[s][f"push_{k}"]["total"]["acked"] for s in first_run for k in STREAMS)
    assert acked == sum(len(sim.platform.store.records(e)) for e in STREAMS.values())
    engine = create_engine(region.store_url)
    with engine.connect() as conn:  # one outbox entry per valid record, acknowledged once
        entries = conn.execute(
            text("select entity, status, count(*) from push_outbox group by entity, status")
        ).all()
        calls = conn.execute(text("select count(distinct sent_at) from push_log")).scalar_one()
    engine.dispose()
    assert {(e, st): n for e, st, n in entries} == {
        (e, "acked"): len(sim.platform.store.records(e)) for e in STREAMS.values()}  # fmt: skip
    assert calls < acked / 5  # many records per call


def test_a_rerun_loads_and_sends_nothing_new(region, first_run, run_dag, sim):
    before = {
        e: sorted(json.dumps(r, sort_keys=True) for r, _, _ in sim.platform.store.records(e))
        for e in STREAMS.values()
    }
    for source in region.sources:
        result = _run(run_dag, source, conf={"since": "2024-03-11 00:00:00", "until": "2024-03-12 00:00:00"})
        assert result.state == "success", result.summary()
        for stream in STREAMS:
            r = result.xcom(stream)
            assert r["loaded"] == 0 and r["extracted"] == first_run[source.id][stream]["extracted"]
            assert result.xcom(f"push_{stream}")["total"]["sent"] == 0  # nothing new queued: nothing sent
    after = {
        e: sorted(json.dumps(r, sort_keys=True) for r, _, _ in sim.platform.store.records(e))
        for e in STREAMS.values()
    }
    assert after == before


def test_refused_calls_are_split_until_only_the_refused_records_stay_out(region, first_run, run_dag, sim):
    """The hospital corrects its accept records (a new version of each); the simulator refuses half
    of the SubmitAccept calls (error:simulated failure): the push splits refused batches, sends the
    rest, names the refused and fails; once the platform takes them, a requeue sends exactly those."""
    from hurren.push.tasks import requeue_entries

    source = region.sources.enabled[0]
    hospital = create_engine(region.urls[source.id])
    with hospital.begin() as conn:
        conn.execute(text("update sehr_accept_record set doc_name = doc_name || '(改)'"))
    hospital.dispose()
    window = {"since": "2024-03-11 00:00:00", "until": "2024-03-12 00:00:00"}
    valid = first_run[source.id]["accept"]["loaded"]
    sim.platform.reset()
    sim.platform.faults.update({"error_rate": 0.5, "seed": 4, "methods": ["SubmitAccept"]})
    try:
        result = _run(run_dag, source, conf=window)
        assert result.xcom("accept")["loaded"] == valid  # the new versions, queued by their load
        assert result.task_states["push_accept"] == "failed"
        assert "refused" in str(result.errors["push_accept"])
        stored = len(sim.platform.store.records("sehr_accept_record"))
        assert 0 < stored < valid
    finally:
        sim.platform.faults.reset()
    store_engine = create_engine(region.store_url)
    try:
        out = requeue_entries(
            status="rejected", entity="sehr_accept_record", dry_run=False, engine=store_engine
        )
    finally:
        store_engine.dispose()
    assert out["requeued"] == valid - stored
    result = _run(run_dag, source, conf=window)
    assert result.state == "success", result.summary()
    assert result.xcom("push_accept")["total"]["acked"] == valid - stored  # only the refused ones again
    records = [r for r, _, _ in sim.platform.store.records("sehr_accept_record")]
    assert len(records) == valid and all(r["doc_name"].endswith("(改)") for r in records)
