"""No patient identifier leaves the store: a small real pipeline run, everything it says scanned.

A synthetic hospital (PostgreSQL, and MariaDB, 30 % defective reports) runs through ``hurren.pipeline.run_stream``
(validator "gx") into a fresh store database and the session's S3 bucket. Collected: every log
record (DEBUG, root and 'hurren' loggers, message and arguments formatted), stdout/stderr, the run
summary (what the DAG pushes to XCom), ``etl_run.details``, ``etl_quarantine.reason`` / ``rules``,
and the validation results kept for analysts (``etl_validation_result``: summaries and GX results);
GX's staged batches (files with the rows) must be removed once the run ends.
None may hold a patient's name, id_no, card_no or birth_date as found in the source database.

Not scanned, by design: ``etl_quarantine.payload`` (the held rows as extracted — the store is
patient-data grade, analysts need them to fix the source) and the spec tables themselves.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import date, datetime

import pytest
from sqlalchemy import create_engine, select, text

from hurren import load, pipeline, sources, store
from hurren.reports.results import validation_result
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic
from tests.fixtures.services import SOURCE_DIALECTS, make_source_database

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)


@pytest.fixture(scope="module", params=SOURCE_DIALECTS)
def hospital(request):
    hospitals = synthetic.make_hospitals(1, seed=4242)
    h = hospitals[0]
    url = make_source_database(request, request.param)("hostile_privacy_src")
    synthetic.generate_hospital_day(
        url, org=h, day=DAY, lab_reports=40, exam_reports=20, seed=4242, peers=hospitals,
        defect_rate=0.3, pdf_kb=1, lab_items=3,
    )  # fmt: skip
    body = {"id": "priv", "org_code": h.org_code, "org_name": h.name, "conn_id": "c",
            "dialect": request.param, "chunk_size": 100}  # fmt: skip
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("priv"), url


def _identifiers(url: str) -> set[str]:
    engine = create_engine(url)
    out: set[str] = set()
    with engine.connect() as conn:
        for table, cols in (("labmaster", ("name", "id_no", "card_no")),
                            ("exammaster", ("name", "id_no", "card_no", "birth_date"))):  # fmt: skip
            for row in conn.execute(text(f"SELECT {', '.join(cols)} FROM {table}")):
                out.update(str(v).strip() for v in row if v is not None and str(v).strip())
    engine.dispose()
    return out


def test_no_identifier_in_logs_summaries_or_quarantine_reasons(
    hospital, make_database, s3, caplog, capsys, monkeypatch, tmp_path
):
    source, src_url = hospital
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where GX's staged batches are spilled
    store_url = make_database("hostile_privacy_store")
    store_engine = create_engine(store_url)
    store.create_all(store_engine)
    source_engine = create_engine(src_url)
    caplog.set_level(logging.DEBUG)  # root
    caplog.set_level(logging.DEBUG, logger="hurren")

    summaries = []
    for stream in ("lab", "exam"):
        summary = pipeline.run_stream(
            source=source, stream=stream, source_engine=source_engine, store_engine=store_engine,
            pdfs=load.Pdfs(s3.client, s3.bucket_reports), run_id="privacy-run", dag_id="privacy",
            until=datetime(2024, 3, 12), backfill_since=datetime(2024, 3, 11), validator="gx", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
        )  # fmt: skip
        summaries.append(summary.as_dict())
    out, err = capsys.readouterr()

    with store_engine.connect() as conn:
        details = [r[0] for r in conn.execute(select(store.run.c.details))]
        quarantine = [(r.reason, r.rules) for r in conn.execute(select(store.quarantine))]
        kept = conn.execute(select(validation_result.c.entity, validation_result.c.summary,
                                   validation_result.c.gx_result)).all()  # fmt: skip
    store_engine.dispose()
    source_engine.dispose()

    # the run did something worth scanning: defects held, reports loaded
    assert sum(s["quarantined"] for s in summaries) > 0 and sum(s["loaded"] for s in summaries) > 0
    assert len(quarantine) >= sum(s["quarantined"] for s in summaries) > 0
    # GX ran once per run and its results were kept for every entity; its staged rows are gone
    assert [s["gx"]["calls"] for s in summaries] == [2, 2]
    assert {e for e, _, gx in kept if gx} == {"labmaster", "lab_subitem", "exammaster", "exam_subitem"}
    assert not list(tmp_path.glob("hurren-gx-*"))
    for s in summaries:
        assert s["extracted"] == s["loaded"] + s["unchanged"] + s["stale"] + s["quarantined"], s

    texts = {
        "stdout": out,
        "stderr": err,
        "summaries": json.dumps(summaries, ensure_ascii=False, default=str),
        "etl_run.details": json.dumps(details, ensure_ascii=False, default=str),
        "quarantine": "\n".join(f"{reason}\n{rules}" for reason, rules in quarantine),
        "etl_validation_result": "\n".join(f"{summary}\n{gx}" for _, summary, gx in kept),
    }
    for i, rec in enumerate(caplog.records):
        texts[f"log {i} {rec.name}"] = f"{rec.getMessage()} {rec.exc_text or ''} {rec.args!r}"
    assert len(caplog.records) > 0

    ids = _identifiers(src_url)
    assert len(ids) > 60
    leaks = sorted({(where, v) for where, body in texts.items() for v in ids if v in body})
    assert not leaks, leaks[:20]
