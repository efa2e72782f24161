"""The defects of issue #17, each through the real pipeline: ``pipeline.run_stream`` reading a real
PostgreSQL hospital database (``hurren_testkit.synthetic``) into a real PostgreSQL store, PDFs into the
real S3 server. Each test failed before the fix:

1. a ``report_form_no`` of ``.``/``..`` made an object key the S3 client refuses: the whole batch
   failed on every retry (and a key S3 refuses now holds that one report only);
2. an older version of a report (a backfill of an earlier window) overwrote the newer one and was
   queued for the platform;
3. a row whose change time lies in the future (a wrong clock, 9999-12-31) was never extracted;
4. ``NULL`` (and the like) in a required field loaded as text;
5. a BOM in a key made ``\\ufeff1878`` and ``1878`` two reports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from hurren import incremental, load, pipeline, sources, store
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
NEXT_DAY = datetime(2024, 3, 12)
NOW = datetime(2024, 3, 12, 12, 0)  # the hospital's clock in these runs (naive: its own zone)
_seeds = iter(range(1700, 1800))


@dataclass
class Hospital:
    """A synthetic hospital's database, its source entry, and a store of its own."""

    source: sources.Source
    src: Engine
    db: Engine
    pdfs: load.Pdfs
    n: int

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.src.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else []

    def reports(self) -> list[str]:
        """The report numbers in extraction order."""
        return [
            r[0]
            for r in self.sql(
                "SELECT report_form_no FROM labmaster ORDER BY last_update_dtime, report_form_no"
            )
        ]

    def run(self, until: datetime = NEXT_DAY, *, since: datetime | None = None, now: datetime = NOW,
            run_id: str = "run", validator: str = "pandas") -> pipeline.RunSummary:  # fmt: skip
        return pipeline.run_stream(
            source=self.source, stream="lab", source_engine=self.src, store_engine=self.db, pdfs=self.pdfs,
            run_id=run_id, dag_id="hostile", until=until, backfill_since=since, now=now,
            validator=validator, options=DEFAULT_OPTIONS, rulebook=load_rulebook(),
        )  # fmt: skip

    def stored(self, *cols: str) -> list[tuple[Any, ...]]:
        t = store.SPEC_TABLES["labmaster"]
        with self.db.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(select(*(t.c[c] for c in cols)).order_by(*(t.c[c] for c in cols)))
            ]

    def quarantine(self) -> list[dict[str, Any]]:
        q = store.quarantine
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(q).order_by(q.c.id))]

    def watermark(self) -> datetime | None:
        with self.db.connect() as conn:
            return incremental.read_cursor(conn, self.source, "lab").last_value


@pytest.fixture
def hospital(make_database: Callable[..., str], s3: Any) -> Iterator[Hospital]:
    seed = next(_seeds)
    org = synthetic.make_hospitals(1, seed=seed)[0]
    url = make_database("hostile_src")
    n = 12
    synthetic.generate_hospital_day(url, org=org, day=DAY, lab_reports=n, exam_reports=0, seed=seed,
                                    pdf_kb=1, lab_items=2)  # fmt: skip
    body = {"id": f"h{seed}", "org_code": org.org_code, "org_name": org.name, "conn_id": "c",
            "dialect": "postgresql", "chunk_size": 5}  # fmt: skip
    source = sources.parse_sources(json.dumps({"hospitals": [body]})).get(body["id"])
    db = create_engine(make_database("hostile_store"))
    store.create_all(db)
    h = Hospital(source, create_engine(url), db, load.Pdfs(s3.client, s3.bucket_reports), n)
    yield h
    h.src.dispose()
    db.dispose()


def balanced(s: pipeline.RunSummary) -> None:
    c = s.counts
    assert c.extracted == c.loaded + c.unchanged + c.stale + c.quarantined, c


def test_a_poison_report_number_loads_and_the_batch_with_it(hospital: Hospital) -> None:
    h = hospital
    dot, dots = h.reports()[2:4]  # in the first chunk, with three valid reports
    for table in ("labmaster", "lab_subitem"):
        h.sql(f"UPDATE {table} SET report_form_no = '..' WHERE report_form_no = :r", r=dots)
        h.sql(f"UPDATE {table} SET report_form_no = '.' WHERE report_form_no = :r", r=dot)
    summary = h.run()  # before the fix: ObjectStoreError "nothing was committed", on every retry
    balanced(summary)
    assert (summary.counts.loaded, summary.counts.quarantined) == (h.n, 0)
    rows = dict(h.stored("report_form_no", "pdf_object_key"))
    for rfn in (".", ".."):
        key = rows[rfn]
        assert f"/labmaster/{rfn}~" in key  # a segment S3 takes
        h.pdfs.client.stat_object(h.pdfs.bucket, key)
    with h.src.connect() as conn:
        newest = conn.execute(text("SELECT max(last_update_dtime) FROM labmaster")).scalar_one()
    assert h.watermark() == newest


def test_a_pdf_s3_refuses_holds_its_report_only(hospital: Hospital, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys refused for a reason of their own (the S3 client: a '..' segment; the store: longer
    than its column holds) quarantine those reports (pdf / storage_refused); the rest loads, the
    watermark moves, nothing is left pending. (The server's KeyTooLongError: test_load.py.)"""
    h = hospital
    first, second = h.reports()[1:3]
    real_key = load.pdf_object_key

    def key(org: str, entity: str, rfn: str, sha: str) -> str:
        if rfn == first:
            return f"reports/{org}/{entity}/../{sha}.pdf"  # refused by the minio client
        if rfn == second:
            return f"reports/{org}/{entity}/{'x' * 600}/{sha}.pdf"  # longer than pdf_object_key holds
        return real_key(org, entity, rfn, sha)

    monkeypatch.setattr(load.units, "pdf_object_key", key)
    summary = h.run()  # before the fix: ObjectStoreError for the whole batch, on every retry
    balanced(summary)
    assert (summary.counts.loaded, summary.counts.quarantined) == (h.n - 2, 2)
    held = {q["report_form_no"]: q for q in h.quarantine()}
    assert set(held) == {first, second}
    for q in held.values():
        (rule,) = json.loads(q["rules"])
        assert (rule["rule"], rule["detail"], rule["by"]) == ("pdf", "storage_refused", "load")
        assert "S3" in q["reason"]
    assert "refused the object name" in held[first]["reason"] and "512 bytes" in held[second]["reason"]
    assert first not in {r[0] for r in h.stored("report_form_no")}
    with h.src.connect() as conn:
        newest = conn.execute(text("SELECT max(last_update_dtime) FROM labmaster")).scalar_one()
    assert h.watermark() == newest
    with h.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.pdf_pending)).scalar_one() == 0
        queued = conn.execute(select(store.outbox.c.report_form_no)).scalars().all()
    assert len(queued) == h.n - 2 and first not in queued and second not in queued


def test_an_older_version_never_overwrites_a_newer_one(hospital: Hospital) -> None:
    h = hospital
    h.run()
    rfn = h.reports()[5]
    (title, changed), *_ = h.sql(
        "SELECT report_title, last_update_dtime FROM labmaster WHERE report_form_no = :r", r=rfn
    )
    stored_before = h.stored("report_form_no", "report_title", "last_update_dtime", "etl_content_hash")
    # the source now holds an older version of it (a back-dated edit): a backfill reads it
    h.sql("UPDATE labmaster SET report_title = '旧版', last_update_dtime = :t WHERE report_form_no = :r",
          t=changed - timedelta(hours=1), r=rfn)  # fmt: skip
    summary = h.run(since=datetime.combine(DAY, datetime.min.time()), run_id="backfill")
    balanced(summary)
    assert (summary.counts.stale, summary.counts.loaded) == (1, 0)
    assert (
        h.stored("report_form_no", "report_title", "last_update_dtime", "etl_content_hash") == stored_before
    )
    assert dict(h.stored("report_form_no", "report_title"))[rfn] == title
    with h.db.connect() as conn:
        entries = conn.execute(select(func.count()).where(store.outbox.c.report_form_no == rfn)).scalar_one()
        run = conn.execute(select(store.run).where(store.run.c.run_id == "backfill")).one()._mapping
    assert entries == 1  # the newer version's, nothing for the older one
    assert run["stale"] == 1 and json.loads(run["details"])["stale"] == 1


def test_a_row_changed_in_the_future_is_quarantined_counted_and_released_once_corrected(
    hospital: Hospital, caplog: pytest.LogCaptureFixture
) -> None:
    h = hospital
    rfn = h.reports()[-1]
    h.sql("UPDATE labmaster SET last_update_dtime = '9999-12-31 23:59:59' WHERE report_form_no = :r", r=rfn)
    caplog.set_level(logging.WARNING, logger="hurren")
    summary = h.run()  # before the fix: never extracted, never counted
    balanced(summary)
    assert summary.future_rows == 1 and summary.errors_by_rule["future_dtime"] == 1
    assert (summary.counts.loaded, summary.counts.quarantined, summary.counts.extracted) == (h.n - 1, 1, h.n)
    (entry,) = h.quarantine()
    assert entry["report_form_no"] == rfn and entry["resolved_at"] is None
    assert json.loads(entry["rules"])[0]["rule"] == "future_dtime"
    assert "9999-12-31 23:59:59" in entry["reason"] and "2024-03-12 12:00:00" in entry["reason"]
    assert h.watermark() < NEXT_DAY  # not moved into the future
    warning = [r.getMessage() for r in caplog.records if "changed after its now" in r.getMessage()]
    assert warning and "1 row(s)" in warning[0]
    with h.db.connect() as conn:
        details = json.loads(
            conn.execute(select(store.run.c.details).where(store.run.c.run_id == "run")).scalar_one()
        )
    assert details["future_rows"] == 1

    again = h.run(NEXT_DAY + timedelta(hours=1), run_id="again", now=NOW + timedelta(hours=1))
    assert again.future_rows == 1 and again.counts.quarantine_written == 0  # held once, counted each run
    assert len(h.quarantine()) == 1

    # the hospital fixes its clock: the row's change time is now real, after the watermark
    h.sql("UPDATE labmaster SET last_update_dtime = :t WHERE report_form_no = :r", t=NEXT_DAY + timedelta(hours=2),
          r=rfn)  # fmt: skip
    fixed = h.run(NEXT_DAY + timedelta(hours=3), run_id="fixed", now=NOW)
    balanced(fixed)
    assert (fixed.future_rows, fixed.counts.loaded, fixed.counts.resolved) == (0, 1, 1)
    assert h.quarantine()[0]["resolved_at"] is not None
    assert rfn in {r[0] for r in h.stored("report_form_no")}


def test_placeholders_and_invisible_characters_are_held(hospital: Hospital) -> None:
    h = hospital
    h.run()
    nulls, bom, zw = h.reports()[1:4]
    stored_before = h.stored("report_form_no", "patient_id", "author_name", "etl_content_hash")
    later = NEXT_DAY + timedelta(hours=1)  # new versions of three reports, read by the next run
    h.sql("UPDATE labmaster SET author_name = 'NULL', last_update_dtime = :t WHERE report_form_no = :r",
          t=later, r=nulls)  # fmt: skip
    h.sql("UPDATE labmaster SET patient_id = chr(65279) || patient_id, last_update_dtime = :t "
          "WHERE report_form_no = :r", t=later, r=bom)  # fmt: skip
    h.sql("UPDATE labmaster SET last_update_dtime = :t WHERE report_form_no = :r", t=later, r=zw)
    h.sql("UPDATE lab_subitem SET class_code = chr(8203) || class_code WHERE report_form_no = :r", r=zw)
    summary = h.run(NEXT_DAY + timedelta(hours=2), run_id="next", validator="gx")  # GX per batch
    balanced(summary)
    held = {q["report_form_no"]: {r["rule"] for r in json.loads(q["rules"])} for q in h.quarantine()}
    assert held == {nulls: {"placeholder"}, bom: {"invisible_chars"}, zw: {"invisible_chars"}}
    assert (summary.counts.quarantined, summary.counts.loaded) == (3, 0)
    assert summary.errors_by_rule["placeholder"] == 1 and summary.errors_by_rule["invisible_chars"] == 3
    # before the fix: 'NULL' stored as the author, and the BOM version stored as a second report
    assert h.stored("report_form_no", "patient_id", "author_name", "etl_content_hash") == stored_before


def test_the_future_range_of_a_sqlite_source_reaches_its_last_second(tmp_path: Any, s3: Any) -> None:
    """SQLite compares ``datetime()`` text, which ends at 9999-12-31 23:59:59 (as Oracle's DATE and
    MySQL's DATETIME do): the future range has no upper bound, so a row at exactly that second is
    read and held too, not only the rows before it."""
    org = synthetic.make_hospitals(1, seed=1799)[0]
    url = f"sqlite:///{tmp_path / 'src.db'}"
    synthetic.generate_hospital_day(
        url, org=org, day=DAY, lab_reports=4, exam_reports=0, seed=1799, pdf_kb=1, lab_items=2
    )
    src = create_engine(url)
    with src.begin() as conn:
        rfns = [
            r[0] for r in conn.exec_driver_sql("SELECT report_form_no FROM labmaster ORDER BY report_form_no")
        ]
        for rfn, t in (
            (rfns[0], "2099-01-01 00:00:00"),
            (rfns[1], "9999-12-31 23:59:58"),
            (rfns[2], "9999-12-31 23:59:59"),
        ):
            conn.exec_driver_sql(
                "UPDATE labmaster SET last_update_dtime = ? WHERE report_form_no = ?", (t, rfn)
            )
    body = {
        "id": "sqlite_clock",
        "org_code": org.org_code,
        "org_name": "S",
        "conn_id": "c",
        "dialect": "sqlite",
    }
    source = sources.parse_sources(json.dumps({"hospitals": [body]})).get("sqlite_clock")
    db = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_all(db)
    summary = pipeline.run_stream(
        source=source, stream="lab", source_engine=src, store_engine=db, pdfs=load.Pdfs(s3.client, s3.bucket_reports),
        run_id="clock", dag_id="hostile", until=NEXT_DAY, now=NOW, validator="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )  # fmt: skip
    src.dispose()
    balanced(summary)
    assert (summary.future_rows, summary.counts.loaded, summary.counts.extracted) == (3, 1, 4)
    with db.connect() as conn:
        held = set(conn.execute(select(store.quarantine.c.report_form_no)).scalars())
    db.dispose()
    assert held == {rfns[0], rfns[1], rfns[2]}
