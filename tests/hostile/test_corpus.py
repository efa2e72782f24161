"""Every kind of hostile source data in ``corpus.py``, through the real validation + load path.

validate_reports (pandas engine) -> load.holds_from_verdicts -> load.load_reports into a SQLite
store, PDFs into a fake object store. Each kind must be quarantined with its rule (or load, value
unchanged, and round-trip through the platform XML builder), the counts must add up
(extracted = loaded + unchanged + quarantined), and no quarantine reason or rules text may hold a
patient identifier in clear.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hurren import load, rules, sources, spec, store
from hurren.extract import Chunk, ReportBatch, canonical_frame
from hurren.platform import xml as px
from hurren.validation import validate_reports
from tests.hostile.corpus import IDENTIFIER_FIELDS, KINDS, Kind
from tests.unit.test_validation import lab_report

ORG = "457759922"
SOURCE = sources.parse_sources(
    json.dumps(
        {
            "hospitals": [
                {"id": "hostile", "org_code": ORG, "org_name": "H", "conn_id": "c", "dialect": "sqlite"}
            ]
        }
    )
).get("hostile")
TINY_PDF = dataclasses.replace(rules.load_rulebook(), pdf_max_bytes=64)


class FakeObjectStore:
    """Just enough of minio's client for hurren.load.Pdfs: put_object keeps the bytes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, bucket: str, key: str, data: Any, length: int, **_: Any) -> None:
        body = data.read()
        assert len(body) == length
        self.objects[f"{bucket}/{key}"] = body


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'store.db'}")
    store.create_all(engine)
    return engine


@pytest.fixture(scope="module")
def objects() -> FakeObjectStore:
    return FakeObjectStore()


def _frame(entity: str, rows: list[dict]) -> Any:
    names = spec.entity(entity).names
    return canonical_frame([tuple(r.get(f) for f in names) for r in rows], names)


def run(
    db: Engine,
    objects: FakeObjectStore,
    masters: list[dict],
    items: list[dict],
    *,
    stream: str,
    run_id: str,
    rulebook: rules.RuleBook | None = None,
) -> tuple[Any, load.LoadCounts]:
    m_name, i_name = sources.STREAMS[stream].master, sources.STREAMS[stream].item
    mf, itf = _frame(m_name, masters), _frame(i_name, items)
    verdicts = validate_reports(mf, itf, master_entity=m_name, engine="pandas", rulebook=rulebook)
    cursor = max((m["last_update_dtime"] for m in masters if m.get("last_update_dtime")), default=None)
    batch = ReportBatch(stream, mf, itf, Chunk(None, "", None, "", len(masters)), 0, 1, cursor)
    counts = load.load_reports(
        db,
        batch,
        source=SOURCE,
        run_id=run_id,
        pdfs=load.Pdfs(objects, "reports"),
        holds=load.holds_from_verdicts(verdicts),
        method="portable",
    )
    return verdicts, counts


def quarantined(db: Engine, run_id: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT record_key, rules, reason FROM etl_quarantine WHERE run_id = :r"), {"r": run_id}
        )
        return [dict(r._mapping) for r in rows]


def stored(db: Engine, table: str, report_form_no: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(f"SELECT * FROM {table} WHERE org_code = :o AND report_form_no = :r"),
            {"o": ORG, "r": report_form_no},
        )
        return [dict(r._mapping) for r in rows]


def identifiers(masters: list[dict]) -> set[str]:
    return {str(m[f]) for m in masters for f in IDENTIFIER_FIELDS if m.get(f) not in (None, "")}


def _param(k: Kind) -> Any:
    marks = [pytest.mark.xfail(strict=True, raises=UnicodeEncodeError, reason=k.bug)] if k.bug else []
    return pytest.param(k, id=k.id, marks=marks)


@pytest.mark.parametrize("kind", [_param(k) for k in KINDS])
def test_hostile_kind(db: Engine, objects: FakeObjectStore, kind: Kind) -> None:
    n = 1000 + KINDS.index(kind)
    masters, items = kind.build(n)
    run_id = f"hostile-{kind.id}"
    verdicts, counts = run(
        db,
        objects,
        masters,
        items,
        stream=kind.report,
        run_id=run_id,
        rulebook=TINY_PDF if kind.tiny_pdf_limit else None,
    )

    assert counts.extracted == counts.loaded + counts.unchanged + counts.quarantined, counts
    held = quarantined(db, run_id)
    secrets_ = identifiers(masters)
    for row in held:  # no identifier in clear, whatever the verdict
        for value in secrets_:
            assert value not in row["reason"] and value not in row["rules"], (value, row["reason"])

    m_table = sources.STREAMS[kind.report].master
    rfn = masters[0]["report_form_no"]
    if kind.rule is not None:
        assert held, f"{kind.id}: nothing quarantined; failures:\n{verdicts.failures.to_string()}"
        broken = {r["rule"] for row in held for r in json.loads(row["rules"])}
        assert kind.rule in broken, (broken, [row["reason"] for row in held])
        if kind.rule != "orphan_item":  # an orphan is filed alone; its (valid) master still loads
            assert counts.quarantined == counts.extracted and counts.loaded == 0, counts
            assert stored(db, m_table, rfn) == []
        return

    assert not held, [row["reason"] for row in held]
    assert (counts.extracted, counts.loaded, counts.quarantined) == (1, 1, 0), counts
    (row,) = stored(db, m_table, rfn)
    item_table = sources.STREAMS[kind.report].item
    item_rows = stored(db, item_table, rfn)
    assert len(item_rows) == len(items)
    if kind.stored is not None:
        field, want = kind.stored
        assert row[field] == want  # stored exactly as sent
        build = px.build_lab_report if kind.report == "lab" else px.build_exam_report
        parsed = px.parse_records(px.parse_xml(build(row, item_rows)))
        assert parsed[m_table][0][field] == want  # and pushed exactly as stored


def test_the_corpus_is_big_and_distinct() -> None:
    assert len(KINDS) >= 40 and len({k.id for k in KINDS}) == len(KINDS)
    assert sum(k.rule is None for k in KINDS) >= 10  # valid-but-odd kinds that must load
    assert {k.rule for k in KINDS} >= {
        "not_null",
        "length",
        "dictionary",
        "datetime",
        "number",
        "id_card",
        "pq_numeric",
        "limits_order",
        "unique_key",
        "orphan_item",
        "no_items",
        "pdf",
        "xml_chars",
    }


def test_same_key_in_a_later_chunk_is_an_update(db: Engine, objects: FakeObjectStore) -> None:
    """Chunks are separate batches (extract reads a window in chunk_size pieces, oldest first):
    a key seen again in a later chunk is a newer version of the report, so it updates the store.
    Inside ONE chunk two versions of a key are a unique_key defect (corpus: duplicate-master-same-chunk)."""
    first = lab_report(9001)
    second = lab_report(9001, last_update_dtime="2024-03-11 10:00:00", report_title="复核报告")
    _, c1 = run(db, objects, *first, stream="lab", run_id="chunk-1")
    _, c2 = run(db, objects, *second, stream="lab", run_id="chunk-2")
    assert (c1.loaded, c2.loaded, c1.quarantined + c2.quarantined) == (1, 1, 0)
    (row,) = stored(db, "labmaster", "R9001")
    assert row["report_title"] == "复核报告"
    assert len(stored(db, "lab_subitem", "R9001")) == 2  # items replaced, not doubled
    _, c3 = run(db, objects, *second, stream="lab", run_id="chunk-3")  # the same chunk again: no-op
    assert (c3.loaded, c3.unchanged) == (0, 1)


def test_duplicate_key_across_real_chunks_is_an_update(
    tmp_path: Any, db: Engine, objects: FakeObjectStore
) -> None:
    """The same key twice in a source without a primary key (a view, a log table), far apart in
    time: extract with chunk_size=2 puts the two versions in different chunks. The later one wins
    (an update), nothing is quarantined, and the counts add up over the run."""
    from datetime import date, datetime

    from hurren import pipeline, synthetic

    h = synthetic.make_hospitals(1, seed=77)
    url = f"sqlite:///{tmp_path / 'src.db'}"
    synthetic.generate_hospital_day(
        url,
        org=h[0],
        day=date(2024, 3, 11),
        lab_reports=6,
        exam_reports=1,
        seed=77,
        peers=h,
        pdf_kb=1,
        lab_items=2,
        defect_rate=0.0,
    )
    src_engine = create_engine(url)
    with src_engine.begin() as conn:
        first = conn.exec_driver_sql(
            "SELECT report_form_no FROM labmaster ORDER BY last_update_dtime LIMIT 1"
        ).scalar_one()
        cols = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(labmaster)")]
        others = ", ".join(
            c
            if c not in ("last_update_dtime", "report_title")
            else {"last_update_dtime": "'2024-03-11 23:59:00'", "report_title": "'第二版'"}[c]
            for c in cols
        )
        conn.exec_driver_sql(
            f"INSERT INTO labmaster SELECT {others} FROM labmaster WHERE report_form_no = ?", (first,)
        )
    body = {
        "id": "chunks",
        "org_code": h[0].org_code,
        "org_name": "C",
        "conn_id": "c",
        "dialect": "sqlite",
        "chunk_size": 2,
    }
    source = sources.parse_sources(json.dumps({"hospitals": [body]})).get("chunks")
    summary = pipeline.run_stream(
        source=source,
        stream="lab",
        source_engine=src_engine,
        store_engine=db,
        pdfs=load.Pdfs(objects, "reports"),
        run_id="chunks",
        dag_id="hostile",
        until=datetime(2024, 3, 12),
        backfill_since=datetime(2024, 3, 11),
        validator="pandas",
    )
    src_engine.dispose()
    c = summary.counts
    assert summary.batches >= 4  # 7 rows in chunks of 2
    assert c.extracted == c.loaded + c.unchanged + c.quarantined == 7, c
    assert c.quarantined == 0 and quarantined(db, "chunks") == []
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT report_title FROM labmaster WHERE org_code = :o AND report_form_no = :r"),
            {"o": h[0].org_code, "r": first},
        ).all()
    assert rows == [("第二版",)]  # one row, the later version
