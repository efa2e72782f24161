"""GX once per run: a hospital whose validator is "gx", a day in several batches, real PostgreSQL + S3.

A synthetic hospital (25 % of reports defective) runs through ``pipeline.run_stream`` in batches
of 30 reports. What must hold: GX is called once per entity for the whole run (counted by
wrapping the real ``validate_gx``), while the rows it validates are staged in files under the
run's temporary directory, removed afterwards; the GX results kept for the hospital-day equal
GX per batch on the same batches (today's way, merged as the day's row merges them); GX agrees
with the pandas verdicts; and a disagreement (forced by making the pandas engine forget one
check's failures) is logged as an error and recorded in the day's summary and the run's details.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import date, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, select

from hurren import extract, load, pipeline, sources, store
from hurren.reports.results import merge, slim, validation_result
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren.validation import gx_day as gx_day_module
from hurren.validation import pandas_engine, validate_reports
from hurren_testkit import synthetic

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
SINCE, UNTIL = datetime(2024, 3, 11), datetime(2024, 3, 12)
CHUNK = 30


@pytest.fixture(scope="module")
def hospital(make_database):
    h = synthetic.make_hospitals(1, seed=1313)[0]
    url = make_database("gx_day_src")
    synthetic.generate_hospital_day(
        url,
        org=h,
        day=DAY,
        lab_reports=100,
        exam_reports=0,
        seed=1313,
        defect_rate=0.25,
        pdf_kb=1,
        lab_items=4,
    )
    body = {"id": "gxday", "org_code": h.org_code, "org_name": h.name, "conn_id": "c", "dialect": "postgresql", "chunk_size": CHUNK,
            "validator": "gx"}  # fmt: skip
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("gxday"), url


@pytest.fixture
def gx_calls(monkeypatch, tmp_path) -> list[dict[str, Any]]:
    """Each GX call of GxDay: its rows and the staged files present while it ran."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the run's staging directory lands here
    calls: list[dict[str, Any]] = []
    real = gx_day_module.validate_gx

    def counted(data, plan_, rb):
        calls.append(
            {"entity": plan_.entity, "rows": len(data), "staged": sorted(tmp_path.glob("hurren-gx-*/*"))}
        )
        return real(data, plan_, rb)

    monkeypatch.setattr(gx_day_module, "validate_gx", counted)
    return calls


def _run(source, src_url: str, store_url: str, s3, run_id: str) -> pipeline.RunSummary:
    store_engine, source_engine = create_engine(store_url), create_engine(src_url)
    store.create_all(store_engine)
    try:
        return pipeline.run_stream(
            source=source, stream="lab", source_engine=source_engine, store_engine=store_engine,
            pdfs=load.Pdfs(s3.client, s3.bucket_reports), run_id=run_id, dag_id="gx-day", until=UNTIL,
            backfill_since=SINCE, options=DEFAULT_OPTIONS, rulebook=load_rulebook(),
        )  # fmt: skip
    finally:
        store_engine.dispose()
        source_engine.dispose()


def _day_rows(store_url: str) -> dict[str, Any]:
    engine = create_engine(store_url)
    with engine.connect() as conn:
        rows = conn.execute(select(validation_result)).all()
    engine.dispose()
    return {r.entity: r for r in rows}


def _per_batch_gx(source, src_url: str) -> dict[str, Any]:
    """Today's way on the same data: GX decides each batch, the results merged per entity."""
    engine = create_engine(src_url)
    out: dict[str, Any] = {}
    with extract.source_snapshot(engine, source) as conn:
        for batch in extract.read_reports(conn, source, "lab", SINCE, UNTIL):
            v = validate_reports(
                batch.masters,
                batch.items,
                master_entity="labmaster",
                engine="gx",
                options=DEFAULT_OPTIONS,
                rulebook=load_rulebook(),
            )
            for ent, res in v.gx_results.items():
                out[ent] = merge(out.get(ent), slim(res.to_json_dict()))
    engine.dispose()
    return out


def test_gx_runs_once_per_run_and_equals_gx_per_batch(hospital, make_database, s3, gx_calls, tmp_path):
    source, src_url = hospital
    store_url = make_database("gx_day_store")
    summary = _run(source, src_url, store_url, s3, "gx-once")
    c = summary.counts
    assert c.extracted == c.loaded + c.unchanged + c.stale + c.quarantined and c.quarantined > 0
    assert summary.batches >= 4
    # once per entity for the whole run, not once per batch
    assert sorted(call["entity"] for call in gx_calls) == ["lab_subitem", "labmaster"]
    assert summary.gx is not None and summary.gx["calls"] == 2 and summary.gx["disagreements"] == []
    assert summary.gx["batches"] == summary.batches
    # GX read the staged files (one per batch and entity), and they are gone after the run
    assert len(gx_calls[0]["staged"]) >= 2 * (summary.batches - 1)
    assert not list(tmp_path.glob("hurren-gx-*"))

    rows = _day_rows(store_url)
    expected = _per_batch_gx(source, src_url)
    assert set(expected) == {"labmaster", "lab_subitem"}
    for ent, want in expected.items():
        got = json.loads(rows[ent].gx_result)
        assert got == want, ent
        assert "gx_disagreements" not in json.loads(rows[ent].summary)
    assert not json.loads(rows["labmaster"].gx_result)["success"]  # the day's defects are in it
    assert rows["labmaster"].batches == summary.batches


def test_a_disagreement_is_logged_and_recorded(hospital, make_database, s3, gx_calls, monkeypatch, caplog):
    source, src_url = hospital
    store_url = make_database("gx_day_disagree")
    real = pandas_engine.run

    def forgets_dictionary_failures(frame, plan_):
        hits = real(frame, plan_)
        return {cid: (np.empty(0, np.int64) if ".dictionary." in cid else pos) for cid, pos in hits.items()}

    monkeypatch.setattr(pandas_engine, "run", forgets_dictionary_failures)
    caplog.set_level(logging.INFO, logger="hurren")
    summary = _run(source, src_url, store_url, s3, "gx-disagree")

    found = summary.gx["disagreements"]
    assert found and all(d["rule"] == "dictionary" and d["gx_only"] > 0 for d in found)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "disagree" in r.getMessage()]
    assert len(errors) == len(found)
    rows = _day_rows(store_url)
    recorded = [d for r in rows.values() for d in json.loads(r.summary).get("gx_disagreements", [])]
    assert sorted(d["check_id"] for d in recorded) == sorted(d["check_id"] for d in found)
    engine = create_engine(store_url)
    with engine.connect() as conn:
        details = conn.execute(select(store.run.c.details)).scalar_one()
    engine.dispose()
    details = json.loads(details) if isinstance(details, str) else details
    assert details["gx"]["disagreements"] == found
