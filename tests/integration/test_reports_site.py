"""Validation reports over the real services: results kept by the pipeline's hook in PostgreSQL,
Data Docs rendered by Great Expectations into the S3 docs bucket, retention, and a held report
resolved by its corrected version.

The region (:func:`reports_region`) is built once per test session and shared with
tests/browser/test_pages.py: two synthetic hospitals in PostgreSQL, three data days each, run
through ``pipeline.run_stream`` (GX for hospital 0's last two days, the fast pandas engine for
the rest, to keep the suite quick).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy import MetaData, Table, create_engine, delete, insert, select, text
from sqlalchemy.engine import Engine

from hurren import incremental, load, pipeline, sources, spec, store
from hurren.reports import datadocs, masking, quarantine, results
from hurren.rules import load_rulebook
from hurren_testkit import synthetic

pytestmark = pytest.mark.services

DAYS = (date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 11))
SEED = 41
VOLUME = {"lab_reports": 24, "exam_reports": 10, "pdf_kb": 1, "lab_items": 3}
GX_RUNS = {(0, DAYS[1], "lab"), (0, DAYS[2], "lab"), (0, DAYS[2], "exam")}  # (hospital, day, stream)


@dataclass
class Region:
    hospitals: list[synthetic.Hospital]
    sources: sources.Sources
    urls: dict[str, str]  # source id -> hospital database URL
    store_url: str
    engine: Engine
    s3: object  # tests.fixtures.services.S3Session
    docs_bucket: (
        str  # our own: the session's docs bucket must stay empty (tests/integration/test_services.py)
    )
    idents: set[str] = field(default_factory=set)
    others: set[str] = field(default_factory=set)

    @property
    def orgs(self) -> list[str]:
        return [h.org_code for h in self.hospitals]

    def scan(self, text_: str) -> list[str]:
        return masking.leaks(text_, self.idents, self.others)


def run_day(region: Region, i: int, day: date, stream: str, **kw) -> pipeline.RunSummary:
    src = region.sources.enabled[i]
    engine = create_engine(region.urls[src.id])
    try:
        return pipeline.run_stream(
            source=src, stream=stream, source_engine=engine, store_engine=region.engine,
            pdfs=load.Pdfs(client=region.s3.client, bucket=region.s3.bucket_reports),
            run_id=kw.pop("run_id", f"scheduled__{day + timedelta(days=1)}T00:00:00+08:00"),
            dag_id=f"{stream}_reports__{src.id}", until=datetime.combine(day + timedelta(days=1), time()),
            validator=kw.pop("validator", "gx" if (i, day, stream) in GX_RUNS else "pandas"),
            options=kw.pop("options", spec.DEFAULT_OPTIONS), rulebook=kw.pop("rulebook", load_rulebook()), **kw,
        )  # fmt: skip
    finally:
        engine.dispose()


@functools.cache
def reports_region(make_database, s3, config: pytest.Config) -> Region:
    """Two hospitals × three days through the pipeline into a fresh store, and a docs bucket of
    its own (once per session; the bucket is removed when the session ends)."""
    hospitals = synthetic.make_hospitals(2, seed=SEED)
    hosp_cfg, urls = [], {}
    for i, h in enumerate(hospitals):
        sid = f"rep{i}"
        urls[sid] = make_database(f"hospital_rep{i}")
        for k, day in enumerate(DAYS):
            synthetic.generate_hospital_day(urls[sid], org=h, day=day, seed=SEED + 10 * i + k, peers=hospitals,
                                            defect_rate=0.3, **VOLUME)  # fmt: skip
        hosp_cfg.append({"id": sid, "org_code": h.org_code, "org_name": h.name, "conn_id": f"hurren_src_{sid}",
                         "dialect": "postgresql", "chunk_size": 1000,
                         "validator": "gx" if i == 0 else "pandas"})  # the DAG runs of tests/browser: GX  # fmt: skip
    cfg = {"defaults": {"initial_value": "2024-01-01 00:00:00"}, "hospitals": hosp_cfg}
    store_url = make_database("hurren_reports_store")
    engine = create_engine(store_url, pool_pre_ping=True)
    store.create_all(engine)
    docs_bucket = f"{s3.bucket_docs}-site"
    s3.client.make_bucket(docs_bucket)
    config.add_cleanup(functools.partial(_remove_bucket, s3.client, docs_bucket))
    region = Region(
        hospitals, sources.parse_sources(json.dumps(cfg)), urls, store_url, engine, s3, docs_bucket
    )
    region.sources_json = json.dumps(cfg)
    for day in DAYS:
        for i in range(len(hospitals)):
            for stream in ("lab", "exam"):
                run_day(region, i, day, stream)
    for url in urls.values():
        e = create_engine(url)
        idents, others = masking.database_identifiers(e)
        region.idents |= idents
        region.others |= others
        e.dispose()
    return region


def _remove_bucket(client, bucket: str) -> None:
    for o in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, o.object_name)
    client.remove_bucket(bucket)


@pytest.fixture(scope="module")
def region(make_database, s3, pytestconfig) -> Region:
    return reports_region(make_database, s3, pytestconfig)


def _rows(region: Region) -> list[results.DayRow]:
    with region.engine.connect() as conn:
        return results.day_rows(conn)


def test_the_hook_keeps_one_row_per_hospital_day_stream_and_entity(region):
    rows = _rows(region)
    got = {(r.org_code, r.day, r.stream, r.entity) for r in rows if r.day in DAYS}
    want = {(o, d, s, e) for o in region.orgs for d in DAYS for s, ents in
            (("lab", ("labmaster", "lab_subitem")), ("exam", ("exammaster", "exam_subitem"))) for e in ents}  # fmt: skip
    assert want <= got
    gx = {(r.org_code, r.day, r.stream) for r in rows if r.has_gx and r.day in DAYS}
    assert gx == {(region.orgs[i], d, s) for i, d, s in GX_RUNS}
    with region.engine.connect() as conn:
        runs = conn.execute(select(store.run.c.source, store.run.c.stream, store.run.c.quarantined)).all()
    held = {(r.org_code, r.stream): 0 for r in rows}
    for r in rows:  # every day: other modules may have added runs (tests/browser runs a DAG)
        if r.is_master:
            held[(r.org_code, r.stream)] += r.summary["held"]
    by_source = {s.id: s.org_code for s in region.sources}
    for (org, stream), n in held.items():
        assert n == sum(q for s, st, q in runs if by_source[s] == org and st == stream)


def test_kept_results_hold_counts_only(region):
    t = results.validation_result
    with region.engine.connect() as conn:
        blobs = conn.execute(select(t.c.summary, t.c.gx_result)).all()
    assert region.idents
    for summary, gx in blobs:
        assert not region.scan(summary)
        if gx:
            assert not region.scan(gx)
            doc = json.loads(gx)
            for r in doc["results"]:
                assert set(r["result"]) <= {
                    "element_count", "unexpected_count", "missing_count", "unexpected_percent",
                    "unexpected_percent_total", "unexpected_percent_nonmissing", "missing_percent",
                }  # fmt: skip


def _objects(region: Region, prefix: str = "") -> dict[str, bytes]:
    c, b = region.s3.client, region.docs_bucket
    out = {}
    for o in c.list_objects(b, prefix=prefix, recursive=True):
        out[o.object_name] = datadocs.read_object(c, b, o.object_name)
    return out


def test_publish_renders_each_hospital_day_with_gx_offline_and_masked(region):
    client, bucket = region.s3.client, region.docs_bucket
    out = datadocs.publish(region.engine, client, bucket, keep_days=30, on=DAYS[-1])
    org0 = region.orgs[0]
    # built now, or already on a first view (tests/browser opens them when it runs first)
    assert {(org0, DAYS[1]), (org0, DAYS[2])} <= datadocs.built_days(client, bucket)
    assert all(not datadocs.is_stale(region.engine, client, bucket, o, d) for o, d in out.built)
    objs = _objects(region)
    assert (
        "index.html" in objs
        and "static/vendor/bootstrap-4.3.1.min.css" in objs
        and "static/hurren.css" in objs
    )
    prefix = datadocs.day_prefix(org0, DAYS[2])
    pages = sorted(
        k for k in objs if k.startswith(prefix) and k.endswith(".html") and not k.endswith("index.html")
    )
    assert [p.rsplit("/", 1)[1] for p in pages] == [
        "rep0.exam_subitem.html", "rep0.exammaster.html", "rep0.lab_subitem.html", "rep0.labmaster.html",
    ]  # fmt: skip
    lab = objs[prefix + "rep0.labmaster.html"].decode()
    assert "Expectation Validation Result" in lab and "unexpected" in lab and "hurren · Data Docs" in lab
    day_index = objs[prefix + "index.html"].decode()
    for p in pages:
        assert f'href="{p.rsplit("/", 1)[1]}"' in day_index
    assert f'href="datadocs/{org0}/{DAYS[2].isoformat()}/index.html"' in objs["index.html"].decode()
    for key, body in objs.items():
        if key.endswith((".html", ".json")):
            page = body.decode()
            assert not re.search(r'(?:src|href)="(?:https?:)?//', page), (
                f"{key} loads something from the internet"
            )
            assert not region.scan(page), key


def test_publish_again_builds_nothing_until_a_batch_arrives(region):
    client, bucket = region.s3.client, region.docs_bucket
    assert datadocs.publish(region.engine, client, bucket, keep_days=30, on=DAYS[-1]).built == []
    org0 = region.orgs[0]
    assert not datadocs.is_stale(region.engine, client, bucket, org0, DAYS[2])
    # a backfill of the day re-validates it (pandas: no GX result, the kept one stays)
    summary = run_day(region, 0, DAYS[2], "lab", validator="pandas", run_id="backfill__reports",
                      backfill_since=datetime.combine(DAYS[2], time()))  # fmt: skip
    assert summary.counts.extracted > 0
    assert datadocs.is_stale(region.engine, client, bucket, org0, DAYS[2])
    assert datadocs.ensure_day(region.engine, client, bucket, org0, DAYS[2])
    assert not datadocs.is_stale(region.engine, client, bucket, org0, DAYS[2])
    with region.engine.connect() as conn:
        lab = [r for r in results.day_rows(conn, org_code=org0, days=[DAYS[2]]) if r.entity == "labmaster"][0]
    assert lab.batches == 2 and lab.has_gx


def _label_to_fix(url: str) -> dict:
    key_fields = set(spec.entity("labmaster").key)
    engine = create_engine(url)
    with engine.connect() as conn:
        labels = conn.execute(text(f"select * from {synthetic.LABEL_TABLE}")).mappings().all()
    engine.dispose()
    for lb in labels:
        day = (lb["report_form_no"] or "")[:6]
        if (lb["entity"] == "labmaster" and lb["field"] and lb["field"] not in key_fields
                and lb["field"] != "last_update_dtime" and day == DAYS[2].strftime("%y%m%d")):  # fmt: skip
            return dict(lb)
    raise AssertionError("no labelled lab report of the last day to correct")


def test_a_corrected_report_resolves_its_quarantine_entry(region, make_database):
    """The hospital fixes a held report; the next run loads it and load.py sets resolved_at."""
    src = region.sources.enabled[0]
    h = region.hospitals[0]
    lb = _label_to_fix(region.urls[src.id])
    clean_url = make_database("hospital_rep_clean")
    synthetic.generate_hospital_day(clean_url, org=h, day=DAYS[2], seed=SEED + 2, peers=region.hospitals,
                                    defect_rate=0.0, **VOLUME)  # fmt: skip
    q = store.quarantine
    with region.engine.connect() as conn:
        entry = (
            conn.execute(
                select(q).where(
                    q.c.org_code == h.org_code, q.c.record_key.like(f'%"{lb["report_form_no"]}"%')
                )
            )
            .mappings()
            .first()
        )
    assert entry is not None and entry["resolved_at"] is None
    # the corrected version, stamped after everything the store has seen
    src_db, clean_db = create_engine(region.urls[src.id]), create_engine(clean_url)
    with region.engine.connect() as conn:
        cursor = incremental.read_cursor(conn, src, "lab")
    stamp = max(datetime.combine(DAYS[2], time(23, 59, 50)), cursor.last_value + timedelta(minutes=1))
    with clean_db.connect() as c, src_db.begin() as s:
        for name in ("labmaster", "lab_subitem"):
            t = Table(name, MetaData(), autoload_with=src_db)
            where = (t.c.org_code == h.org_code) & (t.c.report_form_no == lb["report_form_no"])
            fixed = [dict(r) for r in c.execute(select(t).where(where)).mappings()]
            assert fixed, name
            s.execute(delete(t).where(where))
            s.execute(insert(t), [{**r, "last_update_dtime": stamp} for r in fixed])
    src_db.dispose()
    clean_db.dispose()
    summary = run_day(region, 0, stamp.date(), "lab", validator="pandas", run_id="manual__corrected")
    assert summary.counts.resolved >= 1
    with region.engine.connect() as conn:
        after = conn.execute(select(q.c.resolved_at).where(q.c.id == entry["id"])).scalar_one()
        lines = quarantine.quarantine_lines(conn, quarantine.Filter(org_code=h.org_code, status="resolved"))
        still_open = quarantine.quarantine_lines(conn, quarantine.Filter(org_code=h.org_code, status="open"))
    assert after is not None
    mine = [ln for ln in lines if ln.id == entry["id"]]
    assert mine and all(ln.status == "resolved" and ln.resolved_at == after for ln in mine)
    assert entry["id"] not in {ln.id for ln in still_open}
    assert mine[0].report_no == lb["report_form_no"] and mine[0].report_date.startswith(DAYS[2].isoformat())
    assert "resolved" in quarantine.to_csv(mine).decode("utf-8-sig")


def test_retention_removes_old_hospital_days_and_their_gx_results(region):
    client, bucket = region.s3.client, region.docs_bucket
    org0 = region.orgs[0]
    out = datadocs.publish(region.engine, client, bucket, keep_days=1, on=DAYS[-1])
    assert (org0, DAYS[1]) in out.removed and (org0, DAYS[2]) not in out.removed
    assert out.pruned_results >= 1
    assert not _objects(region, datadocs.day_prefix(org0, DAYS[1]))
    assert _objects(region, datadocs.day_prefix(org0, DAYS[2]))
    with region.engine.connect() as conn:
        old = results.day_rows(conn, org_code=org0, days=[DAYS[1]])
    assert old and not any(r.has_gx for r in old) and all(r.summary for r in old)  # the scorecard keeps them
    index = datadocs.read_object(client, bucket, "index.html").decode()
    assert DAYS[1].strftime("%m-%d") not in index and DAYS[2].strftime("%m-%d") in index
