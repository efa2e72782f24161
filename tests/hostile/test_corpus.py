"""Every kind of hostile source data in ``corpus.py``, through the real validation + load path.

validate_reports (pandas engine) -> load.holds_from_verdicts -> load.load_reports, twice: into a
SQLite store with PDFs in a fake object store (the demo's portable path), and into the real
PostgreSQL store (COPY) with PDFs in the real S3 server, so that a fake that accepts more than the
real part cannot hide a defect (issue #17). Each kind must be quarantined with its rule (or load,
value unchanged, its PDF stored and listed back under the row's key, and round-trip through the
platform XML builder; or be counted stale), the counts must add up (extracted = loaded +
unchanged + stale + quarantined), and no quarantine reason or rules text may hold a patient
identifier in clear.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hurren import load, rules, sources, spec, store
from hurren.extract import Chunk, ReportBatch, canonical, canonical_frame
from hurren.platform import xml as px
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren.validation import validate_reports
from tests.fixtures.fake_s3 import FakeObjectStore
from tests.fixtures.services import remove_bucket
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
SHIPPED_RULES = rules.load_rulebook()
TINY_PDF = dataclasses.replace(SHIPPED_RULES, pdf_max_bytes=64)


@dataclass(frozen=True)
class Target:
    """Where the corpus is loaded: a store (engine, load method) and an object store."""

    name: str
    db: Engine
    objects: Any  # FakeObjectStore or minio.Minio
    bucket: str
    method: str

    @property
    def pdfs(self) -> load.Pdfs:
        return load.Pdfs(self.objects, self.bucket)

    def has_object(self, key: str, data: bytes) -> bool:
        """The object is there under ``key`` with ``data``, and a listing finds it by that key."""
        if isinstance(self.objects, FakeObjectStore):
            return self.objects.objects.get((self.bucket, key)) == data
        listed = [o.object_name for o in self.objects.list_objects(self.bucket, prefix=key)]
        return listed == [key] and self.objects.get_object(self.bucket, key).read() == data


@pytest.fixture(scope="module", params=["fake", "real"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The fakes (SQLite, FakeObjectStore), or the real PostgreSQL store and S3 server; fresh."""
    if request.param == "fake":
        engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'store.db'}")
        store.create_all(engine)
        yield Target("fake", engine, FakeObjectStore(), "reports", "portable")
        engine.dispose()
        return
    make_database, s3 = request.getfixturevalue("make_database"), request.getfixturevalue("s3")
    engine = create_engine(make_database("hostile_corpus"))
    store.create_all(engine)
    bucket = f"hurren-hostile-{secrets.token_hex(4)}"
    s3.client.make_bucket(bucket)
    yield Target("real", engine, s3.client, bucket, "auto")
    engine.dispose()
    remove_bucket(s3.client, bucket)


def _frame(entity: str, rows: list[dict]) -> Any:
    names = spec.entity(entity).names
    return canonical_frame([tuple(r.get(f) for f in names) for r in rows], names)


def run(
    t: Target,
    masters: list[dict],
    items: list[dict],
    *,
    stream: str,
    run_id: str,
    rulebook: rules.RuleBook = SHIPPED_RULES,
) -> tuple[Any, load.LoadCounts]:
    m_name, i_name = sources.STREAMS[stream].master, sources.STREAMS[stream].item
    mf, itf = _frame(m_name, masters), _frame(i_name, items)
    verdicts = validate_reports(
        mf, itf, master_entity=m_name, engine="pandas", rulebook=rulebook, options=DEFAULT_OPTIONS
    )
    cursor = max((m["last_update_dtime"] for m in masters if m.get("last_update_dtime")), default=None)
    batch = ReportBatch(stream, mf, itf, Chunk(None, "", None, "", len(masters)), 0, 1, cursor)
    counts = load.load_reports(
        t.db,
        batch,
        source=SOURCE,
        run_id=run_id,
        pdfs=t.pdfs,
        holds=load.holds_from_verdicts(verdicts),
        method=t.method,
        clock=load.SourceClock(datetime.now(SOURCE.tz).replace(tzinfo=None), timedelta(minutes=60)),
        options=DEFAULT_OPTIONS,
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


def queued(db: Engine, record_key: str) -> int:
    with db.connect() as conn:
        return conn.execute(
            text("SELECT COUNT(*) FROM push_outbox WHERE record_key = :k"), {"k": record_key}
        ).scalar_one()


@pytest.mark.parametrize("kind", [_param(k) for k in KINDS])
def test_hostile_kind(target: Target, kind: Kind) -> None:
    n = 1000 + KINDS.index(kind)
    masters, items = kind.build(n)
    run_id = f"hostile-{kind.id}"
    m_table = sources.STREAMS[kind.report].master
    rfn = masters[0]["report_form_no"]
    if kind.prior is not None:
        _, first = run(target, *kind.prior(n), stream=kind.report, run_id=f"{run_id}-prior")
        assert first.loaded == 1, first
        before = stored(target.db, m_table, rfn)
    verdicts, counts = run(
        target, masters, items, stream=kind.report, run_id=run_id,
        rulebook=TINY_PDF if kind.tiny_pdf_limit else load_rulebook(),
    )  # fmt: skip

    assert counts.extracted == counts.loaded + counts.unchanged + counts.stale + counts.quarantined, counts
    held = quarantined(target.db, run_id)
    secrets_ = identifiers(masters)
    for row in held:  # no identifier in clear, whatever the verdict
        for value in secrets_:
            assert value not in row["reason"] and value not in row["rules"], (value, row["reason"])

    if kind.rule is not None:
        assert held, f"{kind.id}: nothing quarantined; failures:\n{verdicts.failures.to_string()}"
        broken = {r["rule"] for row in held for r in json.loads(row["rules"])}
        assert kind.rule in broken, (broken, [row["reason"] for row in held])
        if kind.rule != "orphan_item":  # an orphan is filed alone; its (valid) master still loads
            assert counts.quarantined == counts.extracted and counts.loaded == 0, counts
            assert stored(target.db, m_table, rfn) == []
        return

    assert not held, [row["reason"] for row in held]
    if kind.stale:  # the newer version stays as it was; nothing queued for the older one
        assert (counts.extracted, counts.loaded, counts.stale) == (1, 0, 1), counts
        assert stored(target.db, m_table, rfn) == before
        assert queued(target.db, store.record_key(spec.entity(m_table), masters[0])) == 1
        return
    assert (counts.extracted, counts.loaded, counts.quarantined) == (1, 1, 0), counts
    (row,) = stored(target.db, m_table, rfn)
    item_table = sources.STREAMS[kind.report].item
    item_rows = stored(target.db, item_table, rfn)
    assert len(item_rows) == len(items)
    pdf = base64.b64decode(masters[0]["pdf"])
    assert target.has_object(row["pdf_object_key"], pdf), row["pdf_object_key"]
    if kind.stored is not None:
        field, want = kind.stored
        assert canonical(row[field]) == want  # stored exactly as sent (a date column: as a date)
        build = px.build_lab_report if kind.report == "lab" else px.build_exam_report
        parsed = px.parse_records(px.parse_xml(build(row, item_rows, options=DEFAULT_OPTIONS)))
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
        "placeholder",
        "invisible_chars",
        "future_dtime",
    }
    assert any(k.stale for k in KINDS)


def test_same_key_in_a_later_chunk_is_an_update(target: Target) -> None:
    """Chunks are separate batches (extract reads a window in chunk_size pieces, oldest first):
    a key seen again in a later chunk is a newer version of the report, so it updates the store.
    Inside ONE chunk two versions of a key are a unique_key defect (corpus: duplicate-master-same-chunk)."""
    first = lab_report(9001)
    second = lab_report(9001, last_update_dtime="2024-03-11 10:00:00", report_title="复核报告")
    _, c1 = run(target, *first, stream="lab", run_id="chunk-1")
    _, c2 = run(target, *second, stream="lab", run_id="chunk-2")
    assert (c1.loaded, c2.loaded, c1.quarantined + c2.quarantined) == (1, 1, 0)
    (row,) = stored(target.db, "labmaster", "R9001")
    assert row["report_title"] == "复核报告"
    assert len(stored(target.db, "lab_subitem", "R9001")) == 2  # items replaced, not doubled
    _, c3 = run(target, *second, stream="lab", run_id="chunk-3")  # the same chunk again: no-op
    assert (c3.loaded, c3.unchanged) == (0, 1)


def test_duplicate_key_across_real_chunks_is_an_update(tmp_path: Any, target: Target) -> None:
    """The same key twice in a source without a primary key (a view, a log table), far apart in
    time: extract with chunk_size=2 puts the two versions in different chunks. The later one wins
    (an update), nothing is quarantined, and the counts add up over the run."""
    from datetime import date, datetime

    from hurren import pipeline
    from hurren_testkit import synthetic

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
        store_engine=target.db,
        pdfs=target.pdfs,
        run_id="chunks",
        dag_id="hostile",
        until=datetime(2024, 3, 12),
        backfill_since=datetime(2024, 3, 11),
        validator="pandas",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    src_engine.dispose()
    c = summary.counts
    assert summary.batches >= 4  # 7 rows in chunks of 2
    assert c.extracted == c.loaded + c.unchanged + c.stale + c.quarantined == 7, c
    assert c.quarantined == 0 and quarantined(target.db, "chunks") == []
    with target.db.connect() as conn:
        rows = conn.execute(
            text("SELECT report_title FROM labmaster WHERE org_code = :o AND report_form_no = :r"),
            {"o": h[0].org_code, "r": first},
        ).all()
    assert rows == [("第二版",)]  # one row, the later version
