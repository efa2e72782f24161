"""Loading into the real store (PostgreSQL) and S3: idempotence, replacement, PDFs, quarantine,
the watermark, the run record, and a crash between the S3 put and the commit."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from minio.error import S3Error
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.engine import Engine

from hurren import extract, incremental, load, rows, sources, spec, store, validation
from hurren import pdf as pdf_
from hurren.extract import Chunk, ReportBatch, canonical_frame
from hurren.incremental import CursorState
from hurren.load import Hold, LoadCounts, Pdfs
from hurren.pdf import Pdf
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic
from hurren_testkit.synthetic.reports import HospitalDay
from tests.fixtures.fake_s3 import FakeObjectStore

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
METHODS = [pytest.param("copy", id="copy"), pytest.param("portable", id="portable")]


@pytest.fixture(scope="module")
def db(store_engine: Engine) -> Engine:
    store.create_all(store_engine)
    return store_engine


@pytest.fixture(scope="module")
def pdfs(s3: Any) -> Pdfs:
    return Pdfs(s3.client, s3.bucket_reports)


_seeds = iter(range(100, 10_000))


class Hospital:
    """A synthetic hospital of its own for one test (own org code and source id in the shared store)."""

    def __init__(self, n: int = 20, *, seed: int | None = None) -> None:
        self.seed = next(_seeds) if seed is None else seed
        self.h = synthetic.make_hospitals(1, seed=self.seed)[0]
        self.day = HospitalDay(self.h, DAY, seed=self.seed, lab_reports=n, exam_reports=n, pdf_kb=1)
        self.n = n
        body = {
            "id": f"t{self.seed}",
            "org_code": self.h.org_code,
            "org_name": self.h.name,
            "conn_id": "c",
            "dialect": "postgresql",
        }
        self.source = sources.parse_sources(json.dumps({"hospitals": [body]})).get(f"t{self.seed}")
        self.reports = [self.day.lab_report(i) for i in range(n)]

    def batch(self, reports: list[Any] | None = None) -> ReportBatch:
        reps = self.reports if reports is None else reports
        m, i = spec.entity("labmaster"), spec.entity("lab_subitem")
        masters = canonical_frame([tuple(r.master.get(f) for f in m.names) for r in reps], m.names)
        items = canonical_frame([tuple(it.get(f) for f in i.names) for r in reps for it in r.items], i.names)
        cursor = max(r.master["last_update_dtime"] for r in reps)
        return ReportBatch("lab", masters, items, Chunk(None, "", None, "", len(reps)), 0, 1, cursor)

    def load(self, db: Engine, pdfs: Pdfs, batch: ReportBatch | None = None, **kw: Any) -> LoadCounts:
        return load.load_reports(
            db,
            batch or self.batch(),
            source=self.source,
            run_id="test-run",
            pdfs=pdfs,
            **{"options": DEFAULT_OPTIONS, **kw},
        )

    def key(self, i: int) -> str:
        return store.record_key(spec.entity("labmaster"), self.reports[i].master)


def org_rows(db: Engine, table: str, org: str, *cols: str) -> list[tuple[Any, ...]]:
    what = ", ".join(cols) if cols else "*"
    with db.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(f"SELECT {what} FROM {table} WHERE org_code = :o ORDER BY 1, 2"), {"o": org}
            )
        ]


def versions(db: Engine, org: str) -> dict[str, tuple[Any, ...]]:
    """Row versions (xmin) and load times of every master and item: unchanged means untouched."""
    out = {}
    for table, key in (("labmaster", "report_form_no"), ("lab_subitem", "report_form_no, serial_no")):
        for row in org_rows(db, table, org, f"{key}", "xmin::text", "etl_loaded_at"):
            out[f"{table}:{row[:-2]}"] = row[-2:]
    return out


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_loads_and_loading_it_again_changes_nothing(db: Engine, pdfs: Pdfs, method: str) -> None:
    h = Hospital()
    first = h.load(db, pdfs, method=method)
    n_items = sum(len(r.items) for r in h.reports)
    assert (first.extracted, first.loaded, first.unchanged, first.quarantined) == (h.n, h.n, 0, 0)
    assert (first.items_written, first.pdfs_put) == (n_items, h.n)
    assert len(org_rows(db, "labmaster", h.h.org_code)) == h.n
    assert len(org_rows(db, "lab_subitem", h.h.org_code)) == n_items
    before = versions(db, h.h.org_code)

    again = h.load(db, pdfs, method=method)
    assert (again.loaded, again.unchanged, again.items_written, again.pdfs_put) == (0, h.n, 0, 0)
    assert versions(db, h.h.org_code) == before  # not one row rewritten


def test_stored_values_are_typed_and_hash_matches(db: Engine, pdfs: Pdfs) -> None:
    h = Hospital(3)
    h.load(db, pdfs)
    r = h.reports[0].master
    t = store.SPEC_TABLES["labmaster"]
    with db.connect() as conn:
        row = (
            conn.execute(
                select(t).where(t.c.org_code == r["org_code"], t.c.report_form_no == r["report_form_no"])
            )
            .one()
            ._mapping
        )
    assert row["last_update_dtime"] == r["last_update_dtime"]
    assert row["retrieve_date"] == date.fromisoformat(r["retrieve_date"])
    assert row["authenticator_dtime"] == datetime.strptime(r["authenticator_dtime"], spec.DATETIME_FORMAT)
    assert row["event_type"] == int(r["event_type"]) and row["data_status"] == 1
    pdf = base64.b64decode(r["pdf"])
    batch = h.batch([h.reports[0]])
    canon = {k: v for k, v in batch.masters.iloc[0].to_dict().items()}
    items = batch.items.to_dict("records")
    assert row["etl_content_hash"] == load.content_hash(canon, items, hashlib.sha256(pdf).hexdigest())
    assert row["etl_run_id"] is None or isinstance(row["etl_run_id"], str)


@pytest.mark.parametrize("method", METHODS)
def test_a_changed_report_is_updated_and_its_items_replaced(db: Engine, pdfs: Pdfs, method: str) -> None:
    h = Hospital(10)
    h.load(db, pdfs, method=method)
    before = versions(db, h.h.org_code)
    changed = copy.deepcopy(h.reports)
    r0 = changed[0]
    r0.master["report_title"] = "复查 " + r0.master["report_title"]
    r0.master["last_update_dtime"] += timedelta(hours=1)
    removed = r0.items.pop()  # a sub-item removed at the source
    r0.items[0]["result_value"] = "999"
    counts = h.load(db, pdfs, h.batch(changed), method=method)
    assert (counts.loaded, counts.unchanged, counts.items_written) == (1, 9, len(r0.items))
    rfn, org = r0.master["report_form_no"], h.h.org_code
    where = "org_code = :o AND report_form_no = :r"
    with db.connect() as conn:
        title = conn.execute(
            text(f"SELECT report_title FROM labmaster WHERE {where}"), {"o": org, "r": rfn}
        ).scalar_one()
        serials = set(
            conn.execute(
                text(f"SELECT serial_no FROM lab_subitem WHERE {where}"), {"o": org, "r": rfn}
            ).scalars()
        )
        value = conn.execute(
            text(f"SELECT result_value FROM lab_subitem WHERE {where} AND serial_no = :s"),
            {"o": org, "r": rfn, "s": int(r0.items[0]["serial_no"])},
        ).scalar_one()
    assert title.startswith("复查 ")
    assert serials == {int(i["serial_no"]) for i in r0.items} and int(removed["serial_no"]) not in serials
    assert value == "999"
    after = versions(db, h.h.org_code)
    untouched = {k: v for k, v in before.items() if rfn not in k}
    assert {k: after[k] for k in untouched} == untouched  # the other nine reports: not rewritten


def test_the_pdf_is_in_s3_under_a_content_addressed_key_with_its_sha256(db: Engine, pdfs: Pdfs) -> None:
    h = Hospital(4)
    h.load(db, pdfs)
    rows = org_rows(
        db, "labmaster", h.h.org_code, "report_form_no", "pdf_object_key", "pdf_sha256", "pdf_size"
    )
    by_rfn = {r.master["report_form_no"]: base64.b64decode(r.master["pdf"]) for r in h.reports}
    for rfn, key, sha, size in rows:
        data = pdfs.client.get_object(pdfs.bucket, key).read()
        assert hashlib.sha256(data).hexdigest() == sha and len(data) == size
        assert data == by_rfn[rfn]
        assert key == f"reports/{h.h.org_code}/labmaster/{rfn}/{sha}.pdf"
        assert pdfs.client.stat_object(pdfs.bucket, key).metadata.get("x-amz-meta-sha256") == sha


def test_a_new_pdf_gets_a_new_key_and_the_old_object_stays(db: Engine, pdfs: Pdfs) -> None:
    h = Hospital(2)
    h.load(db, pdfs)
    (old_key,) = {
        r[1] for r in org_rows(db, "labmaster", h.h.org_code, "report_form_no", "pdf_object_key")[:1]
    }
    changed = copy.deepcopy(h.reports)
    pdf = base64.b64decode(changed[0].master["pdf"]) + b"\n% revised\n"
    changed[0].master["pdf"] = base64.b64encode(pdf).decode()
    assert h.load(db, pdfs, h.batch(changed)).pdfs_put == 1
    (new_key,) = {
        r[1] for r in org_rows(db, "labmaster", h.h.org_code, "report_form_no", "pdf_object_key")[:1]
    }
    assert new_key != old_key and new_key.endswith(hashlib.sha256(pdf).hexdigest() + ".pdf")
    pdfs.client.stat_object(pdfs.bucket, old_key)  # still there: an outbox entry may point at it


def test_a_batch_whose_pdfs_were_decoded_after_extraction_loads_as_the_same_versions(
    db: Engine, pdfs: Pdfs
) -> None:
    """hurren.pdf.detach leaves the store's hashes, keys and objects as they were: a batch loaded
    from Base64 and then again decoded changes nothing; a held report keeps its PDF's text."""
    h = Hospital(4)
    first = h.load(db, pdfs)
    stored = org_rows(db, "labmaster", h.h.org_code, "report_form_no", "etl_content_hash", "pdf_object_key")
    before = versions(db, h.h.org_code)
    b = h.batch()
    detached = replace(b, masters=pdf_.detach(b.masters, "pdf", 1 << 20))
    assert all(isinstance(v, Pdf) for v in detached.masters["pdf"])
    again = h.load(db, pdfs, detached, holds={h.key(0): Hold((), "held for the test")})
    assert (first.loaded, again.unchanged, again.quarantined, again.pdfs_put) == (4, 3, 1, 0)
    assert versions(db, h.h.org_code) == before
    assert (
        org_rows(db, "labmaster", h.h.org_code, "report_form_no", "etl_content_hash", "pdf_object_key")
        == stored
    )
    (held,) = quarantine_rows(db, h.source.id)
    assert json.loads(held["payload"])["master"]["pdf"] == "".join(h.reports[0].master["pdf"].split())

    other = Hospital(2)  # and the other way round: decoded first, then from Base64
    b = other.batch()
    assert other.load(db, pdfs, replace(b, masters=pdf_.detach(b.masters, "pdf", 1 << 20))).loaded == 2
    assert other.load(db, pdfs).unchanged == 2


def quarantine_rows(db: Engine, source: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        q = store.quarantine
        return [
            dict(r._mapping) for r in conn.execute(select(q).where(q.c.source == source).order_by(q.c.id))
        ]


def test_held_reports_are_quarantined_whole_once_and_resolved_by_a_valid_version(
    db: Engine, pdfs: Pdfs
) -> None:
    h = Hospital(6)
    holds = {
        h.key(0): Hold(
            ({"rule": "dictionary", "field": "sex_code", "entity": "labmaster"},),
            "labmaster.sex_code 不在字典",
        ),
        h.key(1): Hold(
            ({"rule": "not_null", "field": "name", "entity": "labmaster"},), "labmaster.name 为空"
        ),
    }
    counts = h.load(db, pdfs, holds=holds)
    assert (counts.loaded, counts.quarantined, counts.quarantine_written) == (4, 2, 2)
    rows = quarantine_rows(db, h.source.id)
    assert {r["record_key"] for r in rows} == {h.key(0), h.key(1)}
    r0 = next(r for r in rows if r["record_key"] == h.key(0))
    payload = json.loads(r0["payload"])
    assert payload["master"]["report_form_no"] == h.reports[0].master["report_form_no"]
    assert len(payload["items"]) == len(h.reports[0].items)  # the whole report
    assert json.loads(r0["rules"])[0]["rule"] == "dictionary" and "sex_code" in r0["reason"]
    assert (r0["entity"], r0["org_code"], r0["resolved_at"]) == ("labmaster", h.h.org_code, None)
    stored = {r[0] for r in org_rows(db, "labmaster", h.h.org_code, "report_form_no", "org_code")}
    assert h.reports[0].master["report_form_no"] not in stored

    again = h.load(db, pdfs, holds=holds)  # the same version held again: no second entry
    assert (again.quarantined, again.quarantine_written) == (2, 0)
    assert len(quarantine_rows(db, h.source.id)) == 2

    fixed = h.load(db, pdfs)  # the corrected version passes validation
    assert (fixed.loaded, fixed.resolved) == (2, 2)
    assert all(r["resolved_at"] is not None for r in quarantine_rows(db, h.source.id))


def test_a_report_corrected_under_another_key_resolves_its_quarantine_entry(db: Engine, pdfs: Pdfs) -> None:
    """The hospital fixes a report's patient_id: its key changes, its report number does not."""
    h = Hospital(3)
    good = h.reports[0]
    wrong = copy.deepcopy(good)
    wrong.master["patient_id"] = f"X{good.master['patient_id']}"
    hold = Hold(({"rule": "not_null", "field": "name", "entity": "labmaster"},), "labmaster.name 为空")
    held = h.load(db, pdfs, h.batch([wrong, h.reports[1]]),
                  holds={store.record_key(spec.entity("labmaster"), wrong.master): hold})  # fmt: skip
    assert (held.loaded, held.quarantine_written, held.resolved) == (1, 1, 0)
    (entry,) = quarantine_rows(db, h.source.id)
    assert (entry["report_form_no"], entry["resolved_at"]) == (good.master["report_form_no"], None)
    fixed = h.load(db, pdfs, h.batch([good, h.reports[2]]))
    assert (fixed.loaded, fixed.resolved) == (2, 1)
    assert quarantine_rows(db, h.source.id)[0]["resolved_at"] is not None


@pytest.mark.parametrize(
    ("pdf", "detail"),
    [
        pytest.param("not base64 at all!", "not_base64", id="not-base64"),
        pytest.param(None, "missing", id="missing"),
        pytest.param(base64.b64encode(b"hello, not a pdf").decode(), "not_pdf", id="not-a-pdf"),
    ],
)
def test_a_broken_pdf_is_a_quarantine_reason_not_a_crash(
    db: Engine, pdfs: Pdfs, pdf: str | None, detail: str
) -> None:
    h = Hospital(3)
    bad = copy.deepcopy(h.reports)
    bad[0].master["pdf"] = pdf
    counts = h.load(db, pdfs, h.batch(bad))
    assert (counts.loaded, counts.quarantined) == (2, 1)
    (row,) = quarantine_rows(db, h.source.id)
    rules = json.loads(row["rules"])
    assert rules[0]["rule"] == "pdf" and rules[0]["detail"] == detail and rules[0]["by"] == "load"


def test_duplicate_keys_in_a_batch_hold_both_reports(db: Engine, pdfs: Pdfs) -> None:
    h = Hospital(3)
    dup = copy.deepcopy(h.reports)
    dup.append(copy.deepcopy(dup[0]))
    dup[-1].master["report_title"] = "another version"
    counts = h.load(db, pdfs, h.batch(dup))
    assert (counts.extracted, counts.loaded, counts.quarantined) == (4, 2, 2)
    assert {json.loads(r["rules"])[0]["rule"] for r in quarantine_rows(db, h.source.id)} == {"unique_key"}


def test_empty_string_and_null_stay_apart_through_copy(db: Engine, pdfs: Pdfs) -> None:
    h = Hospital(2)
    reps = copy.deepcopy(h.reports)
    reps[0].master["card_no"], reps[1].master["card_no"] = "", None
    h.load(db, pdfs, h.batch(reps), method="copy")
    got = dict(org_rows(db, "labmaster", h.h.org_code, "report_form_no", "card_no"))
    assert got[reps[0].master["report_form_no"]] == ""
    assert got[reps[1].master["report_form_no"]] is None


HOSTILE_TEXTS = ["a\tb", "c\nd\r", "\\", "\\N", "\\t", "", None, "\x01\x1f", '"q"', "𠀀😀", "N/A"]


@pytest.mark.parametrize("method", METHODS)
def test_sub_items_are_stored_as_typed_whatever_their_text(db: Engine, pdfs: Pdfs, method: str) -> None:
    """The sub-items' COPY text is built by Arrow (``hurren.rows.copy_text``), not by psycopg:
    hostile text, empty and null, odd but valid numbers and dates arrive in the store as the
    per-row reference types them, each with the per-row reference's ``etl_content_hash``."""
    h = Hospital(2)
    reps = copy.deepcopy(h.reports)
    item = spec.entity("lab_subitem")
    texts = [f.name for f in item.fields if f.type == "text" and not f.key]
    for i, it in enumerate(reps[0].items):
        for j, name in enumerate(texts):
            it[name] = HOSTILE_TEXTS[(i + j) % len(HOSTILE_TEXTS)]
        it["recognition"] = ["-0", "٣", "007", None][i % 4]
        it["effective_dtime"] = [None, "2024-03-11 00:00:00"][i % 2]
    counts = h.load(db, pdfs, h.batch(reps), method=method)
    assert (counts.loaded, counts.quarantined) == (2, 0), counts
    fields = load.units._stored_fields(item)
    t = store.SPEC_TABLES["lab_subitem"]
    with db.connect() as conn:
        got = {
            (r.report_form_no, r.serial_no): r._mapping
            for r in conn.execute(select(t).where(t.c.org_code == h.h.org_code))
        }
    assert len(got) == sum(len(r.items) for r in reps)
    for r in reps:
        for it in r.items:
            want = {c: rows.to_store_value(f, extract.canonical(it.get(f.name))) for c, f in fields}
            row = got[(want["report_form_no"], want["serial_no"])]
            assert {c: row[c] for c in want} == want
            assert row["etl_content_hash"] == rows.row_hash(want)


def watermark(db: Engine, source: sources.Source) -> datetime | None:
    with db.connect() as conn:
        return incremental.read_cursor(conn, source, "lab").last_value


def test_the_watermark_moves_with_the_commit_never_back_and_not_for_a_backfill(
    db: Engine, pdfs: Pdfs
) -> None:
    h = Hospital(5)
    cursor = CursorState(initial_value=datetime(2024, 1, 1))
    batch = h.batch()
    h.load(db, pdfs, batch, cursor=cursor)
    assert watermark(db, h.source) == batch.max_cursor
    older = h.batch(h.reports[:2])
    h.load(db, pdfs, older, cursor=cursor)
    assert watermark(db, h.source) == batch.max_cursor  # never back
    newer = copy.deepcopy(h.reports)
    newer[0].master["last_update_dtime"] = batch.max_cursor + timedelta(days=30)
    h.load(db, pdfs, h.batch(newer), cursor=None)  # a backfill
    assert watermark(db, h.source) == batch.max_cursor


@contextmanager
def failing_sub_items(db: Engine, h: Hospital) -> Iterator[None]:
    """While open, inserting a sub-item of ``h``'s hospital fails: its batch cannot commit."""
    trigger = f"fail_{h.seed}"
    with db.begin() as conn:
        conn.execute(
            text(
                f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN IF NEW.org_code = '{h.h.org_code}' THEN RAISE EXCEPTION 'simulated crash'; END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON lab_subitem FOR EACH ROW EXECUTE FUNCTION {trigger}()"
            )
        )
    try:
        yield
    finally:
        with db.begin() as conn:
            conn.execute(text(f"DROP TRIGGER {trigger} ON lab_subitem"))
            conn.execute(text(f"DROP FUNCTION {trigger}()"))


@pytest.mark.parametrize("method", METHODS)
def test_a_crash_between_the_s3_put_and_the_commit_leaves_the_store_consistent(
    db: Engine, pdfs: Pdfs, method: str
) -> None:
    h = Hospital(8)
    cursor = CursorState(initial_value=datetime(2024, 1, 1))
    run_pk = incremental.start_run(
        db, run_id=f"crash-{h.seed}", dag_id="test", source=h.source.id, stream="lab"
    )
    first = h.batch(h.reports[:4])
    h.load(db, pdfs, first, cursor=cursor, run_pk=run_pk, method=method)
    before = versions(db, h.h.org_code)

    # the next batch: new reports and a changed one; the database fails after the PDFs are put
    changed = copy.deepcopy(h.reports)
    pdf = base64.b64decode(changed[0].master["pdf"]) + b"\n% v2\n"
    changed[0].master["pdf"] = base64.b64encode(pdf).decode()
    changed[0].master["last_update_dtime"] += timedelta(hours=2)
    second = h.batch(changed)
    with failing_sub_items(db, h), pytest.raises(load.StoreWriteError, match="simulated crash") as info:
        h.load(db, pdfs, second, cursor=cursor, run_pk=run_pk, method=method)
    # the driver's text quotes the failing row (COPY's CONTEXT line): none of it in the message
    assert changed[0].master["name"] not in str(info.value) and "watermark did not move" in str(info.value)

    assert versions(db, h.h.org_code) == before  # nothing of the failed batch committed
    assert watermark(db, h.source) == first.max_cursor
    new_key = f"reports/{h.h.org_code}/labmaster/{changed[0].master['report_form_no']}/{hashlib.sha256(pdf).hexdigest()}.pdf"
    pdfs.client.stat_object(pdfs.bucket, new_key)  # the orphan object: harmless
    with db.connect() as conn:
        run = conn.execute(select(store.run).where(store.run.c.id == run_pk)).one()._mapping
    assert (run["extracted"], run["loaded"]) == (4, 4)  # counts of committed batches only

    retry = h.load(db, pdfs, second, cursor=cursor, run_pk=run_pk, method=method)  # the retry completes
    assert (retry.loaded, retry.unchanged) == (5, 3)
    assert watermark(db, h.source) == second.max_cursor
    keys = dict(org_rows(db, "labmaster", h.h.org_code, "report_form_no", "pdf_object_key"))
    assert keys[changed[0].master["report_form_no"]] == new_key  # the orphan, reused
    assert len(org_rows(db, "lab_subitem", h.h.org_code)) == sum(len(r.items) for r in changed)


def test_an_s3_failure_commits_nothing(db: Engine) -> None:
    class Down:
        def put_object(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("S3 is down")

    h = Hospital(2)
    with pytest.raises(load.ObjectStoreError, match="nothing was committed"):
        h.load(db, Pdfs(Down(), "b"), cursor=CursorState(initial_value=datetime(2024, 1, 1)))
    assert org_rows(db, "labmaster", h.h.org_code) == []
    assert watermark(db, h.source) is None


def test_s3_refusals_of_one_object_are_told_apart_from_outages(pdfs: Pdfs) -> None:
    """The real server's and client's answers: a refusal that belongs to one object is returned
    (its report is held), anything else fails the batch (ObjectStoreError: S3 and retry)."""
    data = b"%PDF-1.4 refused\n%%EOF\n"
    pdf = Pdf.of(data)

    def unit(key: str) -> Any:
        return load._Unit(key="k", master={}, pdf=pdf, typed_master={"pdf_object_key": key})

    good, too_long, dots = (
        "reports/x/labmaster/ok/a.pdf",
        "reports/" + "x" * 1100 + ".pdf",
        "reports/x/../a.pdf",
    )
    put, refused = load._put_pdfs([unit(good), unit(too_long), unit(dots)], pdfs)
    assert put == 1 and set(refused) == {too_long, dots}
    assert refused[too_long] == "S3 answered KeyTooLongError"  # the server's 400
    assert refused[dots].startswith("the S3 client refused the object name")  # minio, before sending
    pdfs.client.remove_object(pdfs.bucket, good)

    from hurren.clients import minio_client
    from hurren.settings import settings

    down = minio_client(dataclasses.replace(settings(), s3_endpoint="127.0.0.1:9"))  # nothing listens
    with pytest.raises(load.ObjectStoreError, match="check S3 and retry"):
        load._put_pdfs([unit(good)], Pdfs(down, pdfs.bucket))


@pytest.mark.parametrize("method", METHODS)
def test_pdfs_of_a_batch_that_never_committed_are_swept_unless_a_row_refers_to_them(
    db: Engine, pdfs: Pdfs, method: str
) -> None:
    h = Hospital(4)
    h.load(db, pdfs, h.batch(h.reports[:2]), method=method)
    committed = dict(org_rows(db, "labmaster", h.h.org_code, "report_form_no", "pdf_object_key"))
    changed = copy.deepcopy(h.reports)
    changed[0].master["report_title"] = "复查"  # the same PDF: its key is a committed row's
    changed[0].master["last_update_dtime"] += timedelta(hours=1)
    pdf = base64.b64decode(changed[1].master["pdf"]) + b"\n% v2\n"  # a new PDF: a new key
    changed[1].master["pdf"] = base64.b64encode(pdf).decode()
    changed[1].master["last_update_dtime"] += timedelta(hours=1)
    with failing_sub_items(db, h), pytest.raises(load.StoreWriteError):
        h.load(db, pdfs, h.batch(changed), method=method)  # reports 2, 3 are new: their PDFs too
    p = store.pdf_pending
    with db.connect() as conn:
        pending = set(conn.execute(select(p.c.object_key).where(p.c.source == h.source.id)).scalars())
    shared = committed[changed[0].master["report_form_no"]]
    assert shared in pending and len(pending) == 4  # every object the batch put (or put again)
    orphans = pending - {shared}
    for key in pending:
        pdfs.client.stat_object(pdfs.bucket, key)

    assert load.sweep_pdfs(db, pdfs.client, source=h.source.id) == 0  # within the grace period
    later = datetime.now(UTC).replace(tzinfo=None) + load.PDF_SWEEP_GRACE + timedelta(minutes=1)
    assert load.sweep_pdfs(db, pdfs.client, source=h.source.id, now=later, group=2) == 3
    for key in orphans:
        with pytest.raises(S3Error, match="NoSuchKey|does not exist"):
            pdfs.client.stat_object(pdfs.bucket, key)
    pdfs.client.stat_object(pdfs.bucket, shared)  # a committed row refers to it: kept
    with db.connect() as conn:
        assert conn.execute(select(func.count()).where(p.c.source == h.source.id)).scalar_one() == 0

    retry = h.load(db, pdfs, h.batch(changed), method=method)  # a retry puts them again and commits
    assert retry.loaded == 4
    for key in orphans:
        pdfs.client.stat_object(pdfs.bucket, key)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).where(p.c.source == h.source.id)).scalar_one() == 0


def test_an_object_put_again_is_not_swept(db: Engine, pdfs: Pdfs) -> None:
    """A batch that puts a pending object again refreshes its row: a sweep leaves it alone."""
    h = Hospital(1)
    with failing_sub_items(db, h), pytest.raises(load.StoreWriteError):
        h.load(db, pdfs)
    p = store.pdf_pending
    with db.begin() as conn:  # that was two days ago
        conn.execute(update(p).where(p.c.source == h.source.id).values(put_at=p.c.put_at - timedelta(days=2)))
    with failing_sub_items(db, h), pytest.raises(load.StoreWriteError):
        h.load(db, pdfs)  # a retry puts it again (and fails again)
    assert load.sweep_pdfs(db, pdfs.client, source=h.source.id) == 0
    (key,) = {r[0] for r in org_rows(db, "etl_pdf_pending", h.h.org_code, "object_key", "put_at")}
    pdfs.client.stat_object(pdfs.bucket, key)


@pytest.mark.parametrize("method", METHODS)
def test_an_older_version_is_stale_never_written_nor_queued(db: Engine, pdfs: Pdfs, method: str) -> None:
    h = Hospital(3)
    newer = copy.deepcopy(h.reports)
    newer[0].master["last_update_dtime"] += timedelta(hours=2)
    newer[0].master["report_title"] = "新版"
    run_pk = incremental.start_run(
        db, run_id=f"stale-{h.seed}-{method}", dag_id="t", source=h.source.id, stream="lab"
    )
    first = h.load(db, pdfs, h.batch(newer), method=method, run_pk=run_pk)
    before = versions(db, h.h.org_code)
    older = copy.deepcopy(h.reports)
    older[0].master["report_title"] = "旧版"  # an older change time, other content
    counts = h.load(db, pdfs, h.batch(older), method=method, run_pk=run_pk)
    assert (first.loaded, counts.stale, counts.unchanged, counts.loaded) == (3, 1, 2, 0)
    assert counts.extracted == counts.loaded + counts.unchanged + counts.stale + counts.quarantined
    assert versions(db, h.h.org_code) == before  # nothing rewritten
    assert (
        dict(org_rows(db, "labmaster", h.h.org_code, "report_form_no", "report_title"))[
            newer[0].master["report_form_no"]
        ]
        == "新版"
    )
    assert len(org_rows(db, "push_outbox", h.h.org_code)) == 3  # the written versions only
    with db.connect() as conn:
        assert conn.execute(select(store.run.c.stale).where(store.run.c.id == run_pk)).scalar_one() == 1


@pytest.mark.parametrize("method", METHODS)
def test_the_upsert_itself_never_writes_an_older_version(
    db: Engine, pdfs: Pdfs, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run stores a newer version between this batch's look at the store and its commit:
    the comparison in the transaction (COPY: the upsert's WHERE; portable: a locked read) keeps
    the newer one and counts this one stale."""
    h = Hospital(2)
    newer = copy.deepcopy(h.reports)
    newer[0].master["last_update_dtime"] += timedelta(hours=2)
    h.load(db, pdfs, h.batch(newer), method=method)
    before = versions(db, h.h.org_code)
    real, calls = load._existing, []

    def blind_first_look(*args: Any, **kwargs: Any) -> Any:  # the look before the commit sees nothing
        calls.append(kwargs.get("lock", False))
        return {} if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(load, "_existing", blind_first_look)
    older = copy.deepcopy(h.reports)
    older[0].master["report_title"] = "旧版"
    counts = h.load(db, pdfs, h.batch(older), method=method)
    assert (counts.loaded, counts.stale, counts.unchanged) == (0, 1, 1), counts
    assert versions(db, h.h.org_code) == before
    assert len(org_rows(db, "push_outbox", h.h.org_code)) == 2


def test_the_run_record_counts_what_committed(db: Engine, pdfs: Pdfs) -> None:
    h = Hospital(6)
    run_id = f"run-{h.seed}"
    pk = incremental.start_run(
        db,
        run_id=run_id,
        dag_id="hurren_extract",
        source=h.source.id,
        stream="lab",
        interval_start=datetime(2024, 3, 11),
        interval_end=datetime(2024, 3, 12),
    )
    h.load(db, pdfs, h.batch(h.reports[:3]), run_pk=pk)
    h.load(db, pdfs, h.batch(h.reports[3:]), run_pk=pk, holds={h.key(5): Hold((), "held")})
    incremental.finish_run(db, pk, status="success", details={"batches": 2})
    assert (
        incremental.start_run(db, run_id=run_id, dag_id="hurren_extract", source=h.source.id, stream="lab")
        == pk
    )
    with db.connect() as conn:
        run = conn.execute(select(store.run).where(store.run.c.id == pk)).one()._mapping
    assert (run["extracted"], run["loaded"], run["quarantined"]) == (6, 5, 1)
    assert run["status"] == "running"  # started again (a retried task) with its counts kept
    details = json.loads(run["details"])
    assert [(t["try"], t["status"]) for t in details["tries"]] == [(1, "success"), (2, "running")]
    assert details["batches"] == 2 and details["tries"][0]["batches"] == 2  # the first try's summary kept


def _run_row(db: Engine, pk: int) -> dict[str, Any]:
    with db.connect() as conn:
        return dict(conn.execute(select(store.run).where(store.run.c.id == pk)).one()._mapping)


def test_a_try_killed_without_a_word_is_found_interrupted_by_its_retry(db: Engine, pdfs: Pdfs) -> None:
    """A SIGKILLed try never calls finish_run: its row stays running (main left it so until a retry
    set it running again, its try forgotten). The retry (same run) marks that try interrupted with
    the counts its committed batches left; the run's details list every try, and add up."""
    h = Hospital(6)
    run_id = f"killed-{h.seed}"
    pk = incremental.start_run(db, run_id=run_id, dag_id="t", source=h.source.id, stream="lab")
    h.load(db, pdfs, h.batch(h.reports[:4]), run_pk=pk)  # committed; then the worker dies
    assert _run_row(db, pk)["status"] == "running"
    assert incremental.start_run(db, run_id=run_id, dag_id="t", source=h.source.id, stream="lab") == pk
    row = _run_row(db, pk)
    tries = json.loads(row["details"])["tries"]
    assert [t["status"] for t in tries] == ["interrupted", "running"] and row["status"] == "running"
    assert (tries[0]["extracted"], tries[0]["loaded"], tries[0]["unchanged"]) == (4, 4, 0)
    assert tries[0]["found_over_at"] >= tries[0]["started_at"]
    second = h.load(db, pdfs, h.batch(h.reports), run_pk=pk)  # the retry reads the window again
    incremental.finish_run(db, pk, status="success", details={"batches": 1, **second.as_dict()})
    row = _run_row(db, pk)
    details = json.loads(row["details"])
    assert row["status"] == "success"
    assert [t["status"] for t in details["tries"]] == ["interrupted", "success"]
    assert (row["extracted"], row["loaded"], row["quarantined"]) == (10, 6, 0)
    counts = ("extracted", "loaded", "unchanged", "quarantined")
    assert tuple(details[k] for k in counts) == (10, 6, 4, 0)
    assert details["extracted"] == details["loaded"] + details["unchanged"] + details["quarantined"]


def test_a_run_left_running_is_interrupted_by_the_next_run_once_its_lease_is_over(
    db: Engine, pdfs: Pdfs
) -> None:
    """Another run of the same source and stream: a running row younger than the lease may be alive
    (a backfill next to the scheduled run) and is left alone; an older one cannot be (no task
    outlives its execution_timeout) and is marked interrupted, with the time."""
    h = Hospital(2)
    dead = incremental.start_run(db, run_id=f"dead-{h.seed}", dag_id="t", source=h.source.id, stream="lab")
    h.load(db, pdfs, h.batch(h.reports[:1]), run_pk=dead)
    other = incremental.start_run(
        db, run_id=f"backfill-{h.seed}", dag_id="t", source=h.source.id, stream="lab"
    )
    assert _run_row(db, dead)["status"] == "running"  # within the lease: it may be working
    incremental.finish_run(db, other, status="success", details={"batches": 0})
    # three hours later, as far as the lease can tell
    incremental.start_run(
        db, run_id=f"next-{h.seed}", dag_id="t", source=h.source.id, stream="lab", lease=timedelta(0)
    )
    row = _run_row(db, dead)
    details = json.loads(row["details"])
    assert row["status"] == "interrupted" and row["finished_at"] is not None
    assert details["tries"][0]["status"] == "interrupted" and details["tries"][0]["extracted"] == 1
    assert (details["extracted"], details["loaded"]) == (row["extracted"], row["loaded"]) == (1, 1)
    assert _run_row(db, other)["status"] == "success"  # a finished run is never touched


def test_validator_verdicts_become_holds(db: Engine, pdfs: Pdfs) -> None:
    h = Hospital(5)
    reps = copy.deepcopy(h.reports)
    reps[2].master["sex_code"] = "M"  # a local code the hospital did not map
    batch = h.batch(reps)
    verdicts = validation.validate_reports(
        batch.masters,
        batch.items,
        master_entity="labmaster",
        engine="pandas",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    holds = load.holds_from_verdicts(verdicts)
    assert set(holds) == {h.key(2)}
    counts = h.load(db, pdfs, batch, holds=holds)
    assert (counts.loaded, counts.quarantined) == (4, 1)
    (row,) = quarantine_rows(db, h.source.id)
    assert "sex_code" in row["reason"] and json.loads(row["rules"])[0]["rule"] == "dictionary"


@pytest.mark.parametrize("method", METHODS)
def test_records_and_pacs_rows_load_idempotently(
    db: Engine, method: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    hs = synthetic.make_hospitals(2, seed=next(_seeds))
    path = tmp_path_factory.mktemp("records") / "h.db"
    synthetic.generate_hospital_day(
        f"sqlite:///{path}", org=hs[0], day=DAY, lab_reports=60, exam_reports=40, seed=1, peers=hs, pdf_kb=1
    )
    body = {
        "id": f"rec_{method}_{hs[0].org_code}",
        "org_code": hs[0].org_code,
        "org_name": "x",
        "conn_id": "c",
        "dialect": "sqlite",
    }
    src = sources.parse_sources(json.dumps({"hospitals": [body]})).get(body["id"])
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        for stream, table in (
            ("pacs_instance", "pacs_instance"),
            ("pacs_study", "pacs_study"),
            ("accept", "sehr_accept_record"),
            ("quote", "sehr_quote_record"),
        ):
            batches = list(
                extract.read_records(conn, src, stream, datetime(2024, 3, 11), datetime(2024, 3, 12), 50)
            )
            rows = sum(len(b.records) for b in batches)
            total = LoadCounts()
            for b in batches:
                total += load.load_records(db, b, source=src, run_id="r", method=method)
            assert (total.extracted, total.loaded + total.unchanged + total.quarantined) == (rows, rows), (
                stream
            )
            again = LoadCounts()
            for b in batches:
                again += load.load_records(db, b, source=src, run_id="r", method=method)
            assert again.loaded == 0 and again.unchanged == total.loaded, stream
            with db.connect() as sconn:
                assert (
                    sconn.execute(
                        select(func.count()).select_from(
                            store.SPEC_TABLES[
                                {"pacs_instance": "v_web_jcjg", "pacs_study": "v_web_jctj"}.get(stream, table)
                            ]
                        )
                    ).scalar_one()
                    >= total.loaded
                )
    engine.dispose()


def test_an_incremental_run_end_to_end(db: Engine, pdfs: Pdfs, make_database: Callable[..., str]) -> None:
    """Extract a PostgreSQL hospital window by window into the store, as a DAG task would."""
    url = make_database("hurren_hospital")
    org = synthetic.make_hospitals(1, seed=next(_seeds))[0]
    synthetic.generate_hospital_day(url, org=org, day=DAY, lab_reports=150, exam_reports=0, seed=4, pdf_kb=1)
    body = {
        "id": f"e2e_{org.org_code}",
        "org_code": org.org_code,
        "org_name": org.name,
        "conn_id": "c",
        "dialect": "postgresql",
        "chunk_size": 40,
    }
    src = sources.parse_sources(json.dumps({"hospitals": [body]})).get(body["id"])
    source_engine = create_engine(url)

    def run(until: datetime) -> LoadCounts:
        with db.connect() as conn:
            cursor = incremental.read_cursor(conn, src, "lab")
        w = incremental.window(
            cursor, until=until, overlap=timedelta(minutes=src.overlap_minutes), tz=src.timezone
        )
        total = LoadCounts()
        with extract.source_snapshot(source_engine, src) as conn:
            for batch in extract.read_reports(conn, src, "lab", w.since, w.until):
                total += load.load_reports(
                    db, batch, source=src, run_id="e2e", pdfs=pdfs, cursor=cursor, options=DEFAULT_OPTIONS
                )
        return total

    try:
        first = run(datetime(2024, 3, 12))
        assert (first.extracted, first.loaded) == (150, 150)
        last = watermark(db, src)
        second = run(datetime(2024, 3, 12, 1))  # only the overlap is read again, and nothing changes
        assert second.loaded == 0 and second.extracted == second.unchanged < 150
        changes = synthetic.generate_changes(
            url, org=org, since=last, count_new=3, count_updated=2, count_voided=1, seed=4
        )
        third = run(datetime(2024, 3, 13))
        assert third.loaded == 6
        assert watermark(db, src) == changes.last_change
    finally:
        source_engine.dispose()


def test_load_counts_add_up() -> None:
    total = LoadCounts(extracted=2, loaded=1, unchanged=1) + LoadCounts(extracted=3, quarantined=3)
    assert total.as_dict()["extracted"] == 5 and total.quarantined == 3


def test_store_values_from_canonical_strings() -> None:
    f = spec.entity("labmaster").field
    assert load.to_store_value(f("retrieve_date"), "2024-03-11 09:29:00") == date(2024, 3, 11)  # D1
    assert load.to_store_value(f("event_type"), "01") == 1
    with pytest.raises(ValueError):
        load.to_store_value(f("event_type"), "1.0")
    assert load.to_store_value(f("name"), " x ") == " x "


def test_the_portable_path_on_a_sqlite_store() -> None:
    db = create_engine("sqlite://")
    store.create_all(db)
    objects = FakeObjectStore()
    pdfs = Pdfs(objects, "demo")
    h = Hospital(6)
    cursor = CursorState(initial_value=datetime(2024, 1, 1))
    holds = {h.key(5): Hold(({"rule": "x"},), "held")}
    first = h.load(db, pdfs, cursor=cursor, holds=holds)
    assert (first.loaded, first.quarantined, first.pdfs_put) == (5, 1, 5)
    assert len(objects.objects) == 5
    again = h.load(db, pdfs, holds=holds)
    assert (again.unchanged, again.quarantine_written) == (5, 0)

    changed = copy.deepcopy(h.reports)
    changed[0].items.pop()
    changed[0].master["last_update_dtime"] += timedelta(hours=1)
    batch = h.batch(changed)
    counts = h.load(db, pdfs, batch, cursor=cursor)  # report 5 now passes: resolved
    assert (counts.loaded, counts.unchanged, counts.resolved) == (2, 4, 1)
    with db.connect() as conn:
        n_items = conn.execute(
            text("SELECT COUNT(*) FROM lab_subitem WHERE report_form_no = :r"),
            {"r": changed[0].master["report_form_no"]},
        ).scalar_one()
        assert incremental.read_cursor(conn, h.source, "lab").last_value == batch.max_cursor
        resolved = conn.execute(select(store.quarantine.c.resolved_at)).scalar_one()
    assert n_items == len(changed[0].items) and resolved is not None
    with pytest.raises(load.LoadError, match="needs PostgreSQL"):
        h.load(db, pdfs, method="copy")
