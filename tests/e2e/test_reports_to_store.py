"""Lab and exam reports from synthetic hospitals into the store, through real DAG runs.

Two synthetic hospitals with labelled defects of every kind, one in PostgreSQL, one in MariaDB
(every test below covers both source dialects); the real
``lab_reports__*`` / ``exam_reports__*`` DAGs run with ``dag.test()`` against the real store and S3.
What must hold: every valid report is in the store field by field, its PDF in S3 with a matching
SHA-256; every labelled report is quarantined with the rule its label predicts; extracted =
loaded + unchanged + stale + quarantined exactly; a re-run, and a run killed mid-way then re-run, leave
store and objects identical.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text

from hurren import dagfactory, extract, incremental, load, pipeline, spec, store
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic
from tests.fixtures.services import SOURCE_DIALECTS

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
UNTIL = datetime(2024, 3, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
REPORT_ENTITIES = {"lab": ("labmaster", "lab_subitem"), "exam": ("exammaster", "exam_subitem")}


@pytest.fixture(scope="module")
def region(make_region, monkeypatch_module, s3):
    """Two hospitals (PostgreSQL and MariaDB, 25 % of reports defective), a fresh store, sources and
    connections."""
    return make_region(
        monkeypatch_module, "e2e", seed=11, day=DAY, dialects=SOURCE_DIALECTS, bucket=s3.bucket_reports,
        generate={"lab_reports": 120, "exam_reports": 60, "defect_rate": 0.25, "pdf_kb": 1, "lab_items": 6},
        source={"chunk_size": 40},
    )  # fmt: skip


def _store_snapshot(store_url, s3):
    """Every spec table's rows (without load times and run ids) and every object with its etag."""
    engine = create_engine(store_url)
    out = {}
    with engine.connect() as conn:
        for ent in ("labmaster", "lab_subitem", "exammaster", "exam_subitem"):
            t = store.SPEC_TABLES[ent]
            cols = [c for c in t.c if c.name not in ("etl_loaded_at", "etl_run_id")]
            out[ent] = sorted(tuple(map(str, r)) for r in conn.execute(select(*cols)))
        out["quarantine"] = sorted(
            (r.entity, r.record_key, r.content_hash, r.rules)
            for r in conn.execute(select(store.quarantine).where(store.quarantine.c.resolved_at.is_(None)))
        )
    engine.dispose()
    out["objects"] = sorted(
        (o.object_name, o.etag) for o in s3.client.list_objects(s3.bucket_reports, recursive=True)
    )
    return out


@pytest.fixture(scope="module")
def first_run(region, s3, run_dag):
    results = region.run_reports(run_dag, UNTIL)
    return results, _store_snapshot(region.store_url, s3)


def _labels(url):
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(f"select * from {synthetic.LABEL_TABLE}")).mappings().all()
    engine.dispose()
    return [dict(r) for r in rows]


def test_counts_add_up_and_match_the_source(region, first_run):
    results, _ = first_run
    for (sid, stream), r in results.items():
        assert r["extracted"] == r["loaded"] + r["unchanged"] + r["stale"] + r["quarantined"], (
            sid,
            stream,
            r,
        )
        master = REPORT_ENTITIES[stream][0]
        engine = create_engine(region.urls[sid])
        with engine.connect() as conn:
            in_source = conn.execute(text(f"select count(*) from {master}")).scalar_one()
            orphans = conn.execute(text(
                f"select count(distinct report_form_no) from {synthetic.LABEL_TABLE} where kind like '%orphan_item'"
                f" and entity = '{REPORT_ENTITIES[stream][1]}'")).scalar_one()  # fmt: skip
        engine.dispose()
        assert r["extracted"] == in_source + orphans, (sid, stream)
        assert r["loaded"] > 0 and r["quarantined"] > 0


def test_every_labelled_report_is_quarantined_with_its_rule(region, first_run):
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        held = {}
        for r in conn.execute(select(store.quarantine)):
            org, form, _pid, _etype, event_no = json.loads(r.record_key)
            held.setdefault((org, form, event_no), set()).update(x["rule"] for x in json.loads(r.rules))
    engine.dispose()
    checked = 0
    for url in region.urls.values():
        for label in _labels(url):
            if label["entity"] not in ("labmaster", "lab_subitem", "exammaster", "exam_subitem"):
                continue
            key = (label["org_code"], label["report_form_no"], label["event_no"])
            assert key in held, f"{label['kind']} on {key} was not quarantined"
            assert label["expected_rule"] in held[key], (label["kind"], held[key])
            checked += 1
    assert checked >= 20


def _canonical(value):
    return extract.canonical(value)


def test_every_valid_report_is_in_the_store_field_by_field_with_its_pdf(region, s3, first_run):
    store_db = create_engine(region.store_url)
    for _sid, url in region.urls.items():
        labelled = {(x["org_code"], x["report_form_no"], x["event_no"]) for x in _labels(url)}
        src = create_engine(url)
        for master, _item in REPORT_ENTITIES.values():
            ent = spec.entity(master)
            with src.connect() as conn:
                rows = conn.execute(text(f"select * from {master}")).mappings().all()
            valid = [r for r in rows if (r["org_code"], r["report_form_no"], r["event_no"]) not in labelled]
            assert valid
            table = store.SPEC_TABLES[master]
            with store_db.connect() as conn:
                stored = {
                    (r["org_code"], r["report_form_no"], r["event_no"]): r
                    for r in conn.execute(select(table)).mappings()
                }
            for r in valid:
                s = stored[r["org_code"], r["report_form_no"], r["event_no"]]
                for f in ent.fields:
                    if f.type == "pdf":
                        pdf = base64.b64decode(r["pdf"])
                        assert s["pdf_sha256"] == hashlib.sha256(pdf).hexdigest()
                        body = s3.client.get_object(s3.bucket_reports, s["pdf_object_key"])
                        assert hashlib.sha256(body.read()).hexdigest() == s["pdf_sha256"]
                        body.close()
                        body.release_conn()
                    else:
                        assert _canonical(s[f.name]) == _canonical(r[f.name]), (master, f.name)
        src.dispose()
    store_db.dispose()


@pytest.mark.parametrize("how", ["incremental", "backfill"])
def test_rerunning_the_interval_changes_nothing(region, s3, first_run, run_dag, how):
    """Incremental: the watermark's overlap is read again; backfill: the whole day again."""
    first, before = first_run
    conf = {"since": "2024-03-11 00:00:00", "until": "2024-03-12 00:00:00"} if how == "backfill" else None
    results = region.run_reports(run_dag, UNTIL, conf=conf)
    for key, r in results.items():
        assert r["loaded"] == 0 and r["unchanged"] + r["stale"] + r["quarantined"] == r["extracted"]
        if how == "backfill":
            assert r["extracted"] == first[key]["extracted"]
    assert _store_snapshot(region.store_url, s3) == before


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even except-clauses for Exception."""


def test_a_run_killed_midway_then_rerun_ends_identical(region, s3, first_run, make_database, monkeypatch):
    """A fresh store: kill the lab run after its second batch commits, re-run, compare with the first run."""
    _, reference = first_run
    fresh = make_database("hurren_e2e_kill")
    engine = create_engine(fresh)
    store.create_all(engine)
    pdfs = load.Pdfs(client=s3.client, bucket=s3.bucket_reports)
    real_load = load.load_reports
    calls = {"n": 0}

    def dying_load(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Killed
        return real_load(*args, **kwargs)

    for source in region.sources:
        src = create_engine(region.urls[source.id])
        for stream in ("lab", "exam"):
            kwargs = dict(source=source, stream=stream, source_engine=src, store_engine=engine, pdfs=pdfs,
                          run_id="kill", dag_id="e2e", until=UNTIL, options=DEFAULT_OPTIONS,
                          rulebook=load_rulebook())  # fmt: skip
            if stream == "lab" and source is region.sources.enabled[0]:
                monkeypatch.setattr(load, "load_reports", dying_load)
                with pytest.raises(_Killed):
                    pipeline.run_stream(**kwargs)
                monkeypatch.setattr(load, "load_reports", real_load)
                with engine.connect() as conn:
                    assert (
                        incremental.read_cursor(conn, source, "lab").last_value is not None
                    )  # two batches committed
            pipeline.run_stream(**{**kwargs, "run_id": "rerun"})
        src.dispose()
    engine.dispose()
    after = _store_snapshot(fresh, s3)
    for part in reference:
        extra, missing = set(after[part]) - set(reference[part]), set(reference[part]) - set(after[part])
        assert not extra and not missing, (part, sorted(extra)[:3], sorted(missing)[:3])


def test_backfill_reads_its_window_and_leaves_the_watermark(region, s3, first_run):
    source = region.sources.enabled[0]
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        before = incremental.read_cursor(conn, source, "lab")
    src = create_engine(region.urls[source.id])
    summary = pipeline.run_stream(
        source=source, stream="lab", source_engine=src, store_engine=engine,
        pdfs=load.Pdfs(client=s3.client, bucket=s3.bucket_reports), run_id="backfill", dag_id="e2e",
        until=datetime(2024, 3, 11, 12), backfill_since=datetime(2024, 3, 11, 6), options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )  # fmt: skip
    assert summary.mode == "backfill"
    assert 0 < summary.counts.extracted < 120
    assert summary.counts.loaded == 0  # all already there
    with engine.connect() as conn:
        assert incremental.read_cursor(conn, source, "lab") == before
    src.dispose()
    engine.dispose()


def test_watermark_moves_to_the_last_loaded_value_and_late_rows_are_picked_up(region, first_run, run_dag):
    source = region.sources.enabled[1]
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        cursor = incremental.read_cursor(conn, source, "lab")
    assert cursor.last_value is not None and cursor.last_value.date() == DAY
    changes = synthetic.generate_changes(
        region.urls[source.id], org=synthetic.make_hospitals(2, seed=11)[1], since=cursor.last_value,
        count_new=3, count_updated=2, seed=5, report="lab", window_s=600,
    )  # fmt: skip
    result = run_dag(dagfactory.report_dag(source, "lab", doc_md="e2e"),
                     logical_date=UNTIL + timedelta(days=1))  # fmt: skip
    r = result.xcom("extract_validate_load")
    assert r["loaded"] == len(changes.new) + len(changes.updated), r
    with engine.connect() as conn:
        assert incremental.read_cursor(conn, source, "lab").last_value >= changes.last_change
    engine.dispose()
