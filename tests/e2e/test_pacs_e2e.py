"""The PACS views of a synthetic hospital into the store, reconciled per study, through real
``exam_reports__*`` and ``pacs__*`` DAG runs over PostgreSQL.

The hospital's PACS rows carry labelled defects (a UID with letters, a UID over 64 characters, a
sex outside GB/T 2261.1, a Modality outside the dictionary); besides, one study lost its exam
report, one exam report lost its PACS rows, and one study's instances carry DICOM sex letters that
the hospital's code mapping turns into GB/T 2261.1 codes (D17). What must hold: every row loaded
or quarantined with its rule, valid rows field by field in the store, every study's
reconciliation exactly as computed independently from the source, re-runs change nothing, and a
corrected row loads, resolves its quarantine entry and reconciles its study.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text

from hurren import dagfactory, extract, spec, store
from hurren_testkit import synthetic

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
UNTIL = datetime(2024, 3, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
PACS_KINDS = ("pacs_uid_letters", "pacs_uid_too_long", "pacs_sex", "pacs_modality")
VIEWS = {"pacs_instance": "v_web_jcjg", "pacs_study": "v_web_jctj"}
BACKFILL = {"since": "2024-03-11 00:00:00", "until": "2024-03-12 00:00:00", "chunk_size": 50}


def _q(url, sql, **params):
    engine = create_engine(url)
    with engine.begin() as conn:
        result = conn.execute(text(sql), params)
        rows = [dict(r) for r in result.mappings()] if result.returns_rows else []
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def region(make_region, monkeypatch_module, s3, tmp_path_factory):
    mapping = tmp_path_factory.mktemp("mappings") / "dicom_sex.tsv"
    mapping.write_text("field\tlocal_code\tstd_code\nv_web_jcjg.PATIENTSEX\tM\t1\nv_web_jcjg.PATIENTSEX\tF\t2\n"
                       "v_web_jcjg.PATIENTSEX\tO\t9\n", encoding="utf-8")  # fmt: skip
    return make_region(
        monkeypatch_module, "pacs", seed=31, day=DAY, peers=False, bucket=s3.bucket_reports,
        generate={"lab_reports": 0, "exam_reports": 30, "pacs_instances": 8, "exam_items": (1, 1),
                  "defect_rate": 0.3, "defect_kinds": PACS_KINDS, "pdf_kb": 1},
        source={"chunk_size": 500, "mapping_file": str(mapping), "streams": ["exam", "pacs_instance", "pacs_study"]},
    )  # fmt: skip


@pytest.fixture(scope="module")
def edits(region):
    """Before the first run: one study loses its exam report, one exam report its PACS rows, and
    one study's instances get DICOM sex letters (mapped by the hospital's mapping file)."""
    url = region.url
    labelled = {r["report_form_no"] for r in _q(url, f"select report_form_no from {synthetic.LABEL_TABLE}")}
    clean = [r for r in _q(url, "select report_form_no, study_instance_uid from exammaster order by report_form_no")
             if r["report_form_no"] not in labelled]  # fmt: skip
    no_report, no_pacs, dicom_sex = clean[0], clean[1], clean[2]
    _q(url, "delete from exam_subitem where report_form_no = :f", f=no_report["report_form_no"])
    _q(url, "delete from exammaster where report_form_no = :f", f=no_report["report_form_no"])
    for view in VIEWS.values():
        _q(url, f'delete from {view} where "STUDIUIID" = :u', u=no_pacs["study_instance_uid"])
    _q(url, """update v_web_jcjg set "PATIENTSEX" = case "PATIENTSEX" when '1' then 'M' else 'F' end
               where "STUDIUIID" = :u""", u=dicom_sex["study_instance_uid"])  # fmt: skip
    return {"no_report": no_report, "no_pacs": no_pacs, "dicom_sex": dicom_sex}


def _pacs_run(run_dag, region, *, logical_date=UNTIL, conf=None):
    result = run_dag(dagfactory.pacs_dag(region.source, doc_md="e2e"), logical_date=logical_date,
                     conf=conf or {"chunk_size": 50})  # fmt: skip
    assert result.state == "success", result.summary()
    return {t: result.xcom(t) for t in ("pacs_study", "pacs_instance", "reconcile")}


@pytest.fixture(scope="module")
def first_run(region, edits, run_dag):
    region.run_reports(run_dag, UNTIL, streams=("exam",))
    return _pacs_run(run_dag, region)


def _labels(region):
    return _q(region.url, f"select * from {synthetic.LABEL_TABLE}")


def test_every_row_is_loaded_or_quarantined(region, first_run):
    labels = Counter(lb["entity"] for lb in _labels(region))
    for stream, view in VIEWS.items():
        r = first_run[stream]
        in_source = _q(region.url, f"select count(*) as n from {view}")[0]["n"]
        assert r["extracted"] == in_source == r["loaded"] + r["unchanged"] + r["stale"] + r["quarantined"], (
            stream,
            r,
        )
        assert r["quarantined"] == labels[view] > 0, stream
    assert first_run["pacs_instance"]["batches"] >= 4  # 50 rows per batch
    assert first_run["pacs_instance"]["mapped"] == {"PATIENTSEX": 8}  # D17: one study's DICOM letters


def test_every_labelled_row_is_quarantined_with_its_rule(region, first_run):
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        held = {
            (r.entity, r.record_key): {x["rule"] for x in json.loads(r.rules)}
            for r in conn.execute(
                select(store.quarantine).where(store.quarantine.c.entity.in_(list(VIEWS.values())))
            )
        }
    engine.dispose()
    labels = _labels(region)
    assert {lb["kind"] for lb in labels} == set(PACS_KINDS)
    for lb in labels:
        key = json.dumps([lb["item_key"]], ensure_ascii=False)
        assert lb["expected_rule"] in held[lb["entity"], key], (lb["kind"], held.get((lb["entity"], key)))
    assert len(held) == len(labels)


def test_valid_rows_are_in_the_store_field_by_field(region, edits, first_run):
    labelled = {(lb["entity"], lb["item_key"]) for lb in _labels(region)}
    dicom_uid = edits["dicom_sex"]["study_instance_uid"]
    engine = create_engine(region.store_url)
    for view in VIEWS.values():
        ent = spec.entity(view)
        key = ent.key[0]
        rows = [r for r in _q(region.url, f"select * from {view}") if (view, r[key]) not in labelled]
        table = store.SPEC_TABLES[view]
        with engine.connect() as conn:
            stored = {r[key.lower()]: r for r in conn.execute(select(table)).mappings()}
        assert set(stored) == {r[key] for r in rows}, view
        for r in rows:
            s = stored[r[key]]
            for f in ent.fields:
                want = extract.canonical(r[f.name])
                if f.name == "PATIENTSEX" and r["STUDIUIID"] == dicom_uid:
                    want = {"M": "1", "F": "2"}[want]
                assert extract.canonical(s[f.name.lower()]) == want, (view, f.name)
    engine.dispose()


def _expected_recon(region):
    """Each study's issues, computed from the source and the labels alone."""
    url = region.url
    labels = _labels(region)
    bad_instances = {lb["item_key"] for lb in labels if lb["entity"] == "v_web_jcjg"}
    bad_studies = {lb["item_key"] for lb in labels if lb["entity"] == "v_web_jctj"}
    studies = {
        r["STUDIUIID"]: r for r in _q(url, "select * from v_web_jctj") if r["STUDIUIID"] not in bad_studies
    }
    received: dict[str, list[int]] = {}
    for r in _q(url, 'select "STUDIUIID", "INSTANCESOPIUID", "FILESIZE" from v_web_jcjg'):
        if r["INSTANCESOPIUID"] not in bad_instances:
            received.setdefault(r["STUDIUIID"], []).append(int(r["FILESIZE"]))
    reports = {r["study_instance_uid"] for r in _q(url, "select study_instance_uid from exammaster")}
    uids = set(studies) | set(received) | reports | bad_studies
    out = {}
    for uid in uids:
        issues = []
        s, got = studies.get(uid), received.get(uid, [])
        if s is None:
            issues.append("no_study")
        if not got:
            issues.append("no_instances")
        if s is not None and got:
            if int(s["INSTANCECOUNT"]) != len(got):
                issues.append("instance_count")
            if int(s["FILESIZE"]) != sum(got):
                issues.append("file_size")
        if uid not in reports:
            issues.append("no_report")
        out[uid] = ",".join(issues)
    return out


def _recon(store_url):
    engine = create_engine(store_url)
    with engine.connect() as conn:
        rows = {r.study_uid: r for r in conn.execute(select(store.pacs_recon))}
    engine.dispose()
    return rows


def test_each_study_reconciles_as_computed_from_the_source(region, edits, first_run):
    expected = _expected_recon(region)
    rows = _recon(region.store_url)
    assert {uid: r.issues for uid, r in rows.items()} == expected
    assert all((r.status == "ok") == (r.issues == "") for r in rows.values())
    assert expected[edits["no_report"]["study_instance_uid"]] == "no_report"
    assert expected[edits["no_pacs"]["study_instance_uid"]] == "no_study,no_instances"
    assert expected[edits["dicom_sex"]["study_instance_uid"]] == ""
    assert {"instance_count", "no_study"} <= {i for v in expected.values() for i in v.split(",") if i}
    summary = first_run["reconcile"]
    counted = Counter(i for v in expected.values() for i in v.split(",") if i)
    assert summary["by_issue"] == dict(counted)
    assert summary["studies"] == len(expected) and summary["ok"] == sum(v == "" for v in expected.values())
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        details = (
            conn.execute(
                select(store.run.c.details)
                .where(store.run.c.stream == "pacs_recon")
                .order_by(store.run.c.id.desc())
            )
            .scalars()
            .first()
        )
    engine.dispose()
    run = json.loads(details)
    tries = run.pop("tries")
    assert run == summary  # the run summary in etl_run
    assert [t["status"] for t in tries] == ["success"] and {k: tries[0][k] for k in summary} == summary


def _snapshot(store_url):
    engine = create_engine(store_url)
    out = {}
    with engine.connect() as conn:
        for view in VIEWS.values():
            t = store.SPEC_TABLES[view]
            cols = [c for c in t.c if c.name not in ("etl_loaded_at", "etl_run_id")]
            out[view] = sorted(tuple(map(str, r)) for r in conn.execute(select(*cols)))
        q = store.quarantine
        out["quarantine"] = sorted(
            (r.entity, r.record_key, r.content_hash)
            for r in conn.execute(select(q).where(q.c.resolved_at.is_(None)))
        )
        r = store.pacs_recon
        out["recon"] = sorted(
            tuple(map(str, x))
            for x in conn.execute(select(*(c for c in r.c if c.name not in ("checked_at", "run_id"))))
        )
    engine.dispose()
    return out


@pytest.mark.parametrize("how", ["incremental", "backfill"])
def test_rerunning_changes_nothing(region, first_run, run_dag, how):
    before = _snapshot(region.store_url)
    again = _pacs_run(run_dag, region, conf=BACKFILL if how == "backfill" else None)
    for stream in VIEWS:
        assert again[stream]["loaded"] == 0, again[stream]
    if how == "backfill":
        assert again["pacs_instance"]["extracted"] == first_run["pacs_instance"]["extracted"]
    assert again["reconcile"] == first_run["reconcile"]
    assert _snapshot(region.store_url) == before


def test_a_corrected_row_loads_resolves_its_quarantine_and_reconciles(region, first_run, run_dag):
    sex = next(lb for lb in _labels(region) if lb["kind"] == "pacs_sex")
    study = _q(
        region.url, 'select "STUDIUIID" from v_web_jcjg where "INSTANCESOPIUID" = :k', k=sex["item_key"]
    )[0]
    _q(
        region.url,
        """update v_web_jcjg set "PATIENTSEX" = '2' where "INSTANCESOPIUID" = :k""",
        k=sex["item_key"],
    )
    again = _pacs_run(run_dag, region, conf=BACKFILL)
    assert again["pacs_instance"]["loaded"] == 1 and again["pacs_instance"]["resolved"] >= 1
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        q = store.quarantine
        entry = conn.execute(
            select(q.c.resolved_at).where(q.c.record_key == json.dumps([sex["item_key"]]))
        ).one()
    engine.dispose()
    assert entry.resolved_at is not None
    # one defect per study (hurren_testkit.synthetic): with the sex fixed, the study reconciles
    assert _recon(region.store_url)[study["STUDIUIID"]].status == "ok"
    assert again["reconcile"]["ok"] == first_run["reconcile"]["ok"] + 1
