"""The push against the simulator's fault modes, over real HTTP, PostgreSQL and S3.

Every test starts from the same store (two report types of one hospital) with a fresh outbox and
an empty simulator, misbehaves in one way, recovers, and then checks the promise: every report
version is acknowledged exactly once (one ``ok`` in ``push_log``, no call after it), the
simulator holds exactly the store's reports (PDFs by SHA-256), and the platform processed no more
calls than our acknowledgements plus the calls whose answer it dropped or delivered too late.
The last test kills a real ``python -m hurren.push run`` with SIGKILL between an answer and its
record, and checks that only that in-flight batch is sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, delete, select, text, update
from sqlalchemy.engine import Engine

from hurren import crypto, load, sources, spec, store
from hurren.extract import Chunk, ReportBatch, canonical_frame
from hurren.platform import Credential, PlatformClient
from hurren.push import outbox
from hurren.push.connection import PlatformConfig, TimedSession
from hurren.push.options import PushOptions
from hurren.push.runner import Pusher, RunResult
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import samples, synthetic
from hurren_testkit.simulator import Simulator, SimulatorConfig
from hurren_testkit.synthetic.reports import HospitalDay

pytestmark = pytest.mark.services

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRIVATE, _ = crypto.generate_keypair()
LAB, EXAM = 30, 12
FAST = {"backoff_base_s": 0.05, "backoff_max_s": 0.2, "max_wait_s": 2, "max_run_s": 60, "concurrency": 4,
        "breaker_threshold": 8, "breaker_cooldown_s": 0.2}  # fmt: skip


@pytest.fixture(scope="module")
def hospital() -> Any:
    return synthetic.make_hospitals(1, seed=3101)[0]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(config=SimulatorConfig(port=0, private_key=PRIVATE)) as s:
        yield s


def _batch(kind: str, reports: list[Any]) -> ReportBatch:
    m, i = spec.entity(f"{kind}master"), spec.entity(f"{kind}_subitem")
    masters = canonical_frame([tuple(r.master.get(f) for f in m.names) for r in reports], m.names)
    items = canonical_frame([tuple(it.get(f) for f in i.names) for r in reports for it in r.items], i.names)
    cursor = max(r.master["last_update_dtime"] for r in reports)
    return ReportBatch(kind, masters, items, Chunk(None, "", None, "", len(reports)), 0, 1, cursor)


@pytest.fixture(scope="module")
def db(make_database: Any, s3: Any, hospital: Any) -> Iterator[Engine]:
    """A store holding LAB lab and EXAM exam reports of one hospital (1 KB PDFs in S3)."""
    engine = create_engine(make_database("hurren_push"), pool_size=10)
    store.create_all(engine)
    day = HospitalDay(hospital, date(2024, 3, 11), seed=3101, lab_reports=LAB, exam_reports=EXAM, pdf_kb=1,
                      lab_items=4)  # fmt: skip
    body = {"id": "p31", "org_code": hospital.org_code, "org_name": hospital.name, "conn_id": "c",
            "dialect": "postgresql"}  # fmt: skip
    source = sources.parse_sources(json.dumps({"hospitals": [body]})).get("p31")
    pdfs = load.Pdfs(s3.client, s3.bucket_reports)
    for kind, n in (("lab", LAB), ("exam", EXAM)):
        make = day.lab_report if kind == "lab" else day.exam_report
        counts = load.load_reports(engine, _batch(kind, [make(i) for i in range(n)]), source=source,
                                   run_id="faults", pdfs=pdfs, options=DEFAULT_OPTIONS)  # fmt: skip
        assert counts.queued == n
    yield engine
    engine.dispose()


@pytest.fixture
def fresh(db: Engine, sim: Simulator) -> Engine:
    """An empty outbox refilled from the store (``sync_from_store``), an empty simulator."""
    with db.begin() as conn:
        conn.execute(delete(store.push_log))
        conn.execute(delete(store.outbox))
    nothing = dict.fromkeys(outbox.SYNCABLE, 0)
    assert outbox.sync_from_store(db, void_data_status=DEFAULT_OPTIONS.void_data_status) == {
        **nothing,
        "labmaster": LAB,
        "exammaster": EXAM,
    }
    assert (
        outbox.sync_from_store(db, void_data_status=DEFAULT_OPTIONS.void_data_status) == nothing
    )  # idempotent
    sim.platform.reset()
    return db


def faults(sim: Simulator, **values: Any) -> None:
    response = httpx.post(f"{sim.admin_url}/faults", json=values, timeout=5)
    assert response.status_code == 200, response.text


def config(sim: Simulator, hospital: Any, timeout_s: float = 2.0) -> PlatformConfig:
    credential = Credential(
        org_code=hospital.org_code, org_name=hospital.name, visitor_code="v", visitor_key="k"
    )
    return PlatformConfig(endpoint=sim.url, public_key=sim.public_key, credential=credential, timeout_s=timeout_s,
                          connect_timeout_s=timeout_s, spec_options=DEFAULT_OPTIONS)  # fmt: skip


def push(db: Engine, s3: Any, sim: Simulator, hospital: Any, *, timeout_s: float = 2.0,
         profile: spec.SpecOptions | None = None, **options: Any) -> RunResult:  # fmt: skip
    opts = PushOptions.from_mapping({**FAST, **options})
    session = TimedSession(opts.concurrency)
    platform = replace(config(sim, hospital, timeout_s), spec_options=profile or spec.SpecOptions())
    with platform.client(pool_size=opts.concurrency, session=session) as client:
        return Pusher(engine=db, client=client, objects=s3.client, bucket=s3.bucket_reports, options=opts,
                      spec_options=platform.spec_options, session=session, run_id="test").run()  # fmt: skip


def log_rows(db: Engine) -> list[Any]:
    with db.connect() as conn:
        return conn.execute(select(store.push_log).order_by(store.push_log.c.id)).all()


def assert_acknowledged_exactly_once(db: Engine, sim: Simulator, *, extra_ok: int = 0) -> None:
    """Every entry acked, one ok per entry and nothing sent after it; the simulator holds the store."""
    with db.connect() as conn:
        entries = conn.execute(select(store.outbox)).all()
    assert {e.status for e in entries} == {"acked"}, Counter(e.status for e in entries)
    logs = log_rows(db)
    oks = Counter(r.outbox_id for r in logs if r.outcome == "ok")
    assert set(oks) == {e.id for e in entries} and set(oks.values()) == {1}
    ok_at = {r.outbox_id: r.id for r in logs if r.outcome == "ok"}
    assert not [r for r in logs if r.id > ok_at[r.outbox_id]], "a call after the acknowledgement"
    received = sim.platform.received()
    # the simulator said ok once per acknowledgement, plus the answers it dropped or sent too late
    assert received["answers"].get("ok", 0) == len(entries) + extra_ok
    for kind in ("lab", "exam"):
        stored = {tuple(r["key"].values()): r for r in sim.platform.store.report_keys(kind)}
        table = store.SPEC_TABLES[f"{kind}master"]
        with db.connect() as conn:
            rows = conn.execute(select(table)).mappings().all()
        assert len(stored) == len(rows)
        for r in rows:
            key = tuple(str(r[k]) for k in spec.entity(f"{kind}master").key)
            assert stored[key]["pdf_sha256"] == r["pdf_sha256"] and stored[key]["voided_at"] is None


def settled_calls(sim: Simulator) -> int:
    """ArchiveAutoReport calls the simulator handled, once the count stops moving."""
    last = -1
    while True:
        now = sim.platform.received()["calls"].get("ArchiveAutoReport", 0)
        if now == last:
            return now
        last = now
        time.sleep(0.3)


def late_answers(sim: Simulator) -> int:
    """Calls the simulator processed (and stored) whose answer the client never saw."""
    injected = sim.platform.faults.status()["injected"]
    return injected.get("drop", 0) + injected.get("timeout", 0)


# --------------------------------------------------------------------------------------------


def test_down_for_the_whole_run_then_back(fresh: Engine, s3: Any, sim: Simulator, hospital: Any) -> None:
    faults(sim, down=True)
    result = push(fresh, s3, sim, hospital, max_run_s=2.5, breaker_threshold=3, breaker_cooldown_s=0.5)
    assert result.platform_down and result.total().acked == 0 and result.total().dead == 0
    calls = sim.platform.faults.status()["injected"]["down"]
    assert calls <= 3 + 4 + 6, f"{calls} calls to a platform that is down: it was hammered"
    with fresh.connect() as conn:
        assert {s for (s,) in conn.execute(select(store.outbox.c.status)).all()} == {"queued"}
    faults(sim, down=False)
    result = push(fresh, s3, sim, hospital)
    assert not result.platform_down and result.total().acked == LAB + EXAM
    assert_acknowledged_exactly_once(fresh, sim)


def test_slow_beyond_the_time_out(fresh: Engine, s3: Any, sim: Simulator, hospital: Any) -> None:
    faults(sim, timeout_rate=0.25, timeout_s=1.2, seed=3)
    result = push(fresh, s3, sim, hospital, timeout_s=0.6, breaker_threshold=20)
    assert result.total().retried > 0
    assert_acknowledged_exactly_once(fresh, sim, extra_ok=late_answers(sim))


def test_http_500_and_dropped_connections(fresh: Engine, s3: Any, sim: Simulator, hospital: Any) -> None:
    faults(sim, http500_rate=0.2, drop_rate=0.2, seed=5)
    result = push(fresh, s3, sim, hospital)
    assert result.total().retried > 0 and result.total().dead == 0
    outcomes = Counter(r.answer.split(":")[0] for r in log_rows(fresh) if r.outcome == "transport")
    assert outcomes.keys() >= {"HTTPStatusError", "RemoteProtocolError"}, outcomes
    assert_acknowledged_exactly_once(fresh, sim, extra_ok=late_answers(sim))


def test_error_answers_are_rejected_once_then_requeued_by_hand(
    fresh: Engine, s3: Any, sim: Simulator, hospital: Any
) -> None:
    faults(sim, error_rate=0.3, seed=7)
    first = push(fresh, s3, sim, hospital)
    rejected = first.total().rejected
    assert rejected > 0 and first.total().sent == LAB + EXAM  # one call each: no blind retry
    faults(sim, error_rate=0.0)
    assert push(fresh, s3, sim, hospital).total().sent == 0  # a rejection waits for a fix
    with fresh.begin() as conn:
        back = outbox.requeue(conn, statuses=("rejected",), error_contains="simulated failure")
    assert len(back) == rejected
    assert push(fresh, s3, sim, hospital).total().acked == rejected
    with fresh.connect() as conn:
        assert {s for (s,) in conn.execute(select(store.outbox.c.status)).all()} == {"acked"}
    assert Counter(r.outcome for r in log_rows(fresh)) == {"ok": LAB + EXAM, "error": rejected}


def test_retries_give_up_into_dead_letters_that_requeue_after_the_fix(
    fresh: Engine, s3: Any, sim: Simulator, hospital: Any
) -> None:
    faults(sim, http500_rate=1.0, methods=["ArchiveAutoReport"])
    result = push(fresh, s3, sim, hospital, max_attempts=2, breaker_threshold=1000, org_codes=[hospital.org_code],
                  entities=["exammaster"])  # fmt: skip
    assert result.total().dead == EXAM and len(result.dead_letters) == EXAM
    assert all("HTTP 500" in d["last_error"] and "requeue" in d["last_error"] for d in result.dead_letters)
    faults(sim, http500_rate=0.0)
    with fresh.begin() as conn:
        assert len(outbox.requeue(conn, statuses=("dead",), entity="exammaster")) == EXAM
    push(fresh, s3, sim, hospital)
    assert_acknowledged_exactly_once(fresh, sim)


def test_a_void_keeps_the_answer_naming_who_quoted_the_report(
    fresh: Engine, s3: Any, sim: Simulator, hospital: Any
) -> None:
    push(fresh, s3, sim, hospital, entities=["labmaster"])
    lab = store.SPEC_TABLES["labmaster"]
    with fresh.connect() as conn:
        report = dict(conn.execute(select(lab).limit(1)).mappings().one())
    [quote] = samples.quote_records(report_form_no=report["report_form_no"], id_no=report["id_no"], type_="2")
    quote |= {"hr_org_code": report["org_code"], "dept_name": "内科", "doc_name": "李医生"}
    other = Credential(org_code="650000999", org_name="乙医院", visitor_code="v2", visitor_key="k2")
    with PlatformClient(
        endpoint=sim.url, credential=other, public_key=sim.public_key, spec_options=DEFAULT_OPTIONS
    ) as client:
        client.submit_quote([quote])
    void_hash = "f" * 64  # the source marked it void: a new version with data_status 0
    with fresh.begin() as conn:
        conn.execute(update(lab).where(lab.c.report_form_no == report["report_form_no"])
                     .values(data_status=0, etl_content_hash=void_hash))  # fmt: skip
        voided = {**report, "data_status": 0, "etl_content_hash": void_hash}
        assert outbox.enqueue_reports(conn, spec.entity("labmaster"), [voided], void_data_status=("0",)) == 1
    try:
        result = push(fresh, s3, sim, hospital, entities=["labmaster"])
    finally:  # the store is the module's: put the report back as it was
        with fresh.begin() as conn:
            conn.execute(update(lab).where(lab.c.report_form_no == report["report_form_no"])
                         .values(data_status=report["data_status"], etl_content_hash=report["etl_content_hash"]))  # fmt: skip
    assert [q["report_form_no"] for q in result.quoted] == [report["report_form_no"]]
    assert "乙医院" in result.quoted[0]["answer"] and "李医生" in result.quoted[0]["answer"]
    with fresh.connect() as conn:
        answer = conn.execute(
            select(store.outbox.c.answer_text).where(store.outbox.c.action == "void")
        ).scalar_one()
    assert answer == result.quoted[0]["answer"]
    key = [str(report[k]) for k in spec.entity("labmaster").key]
    assert sim.platform.store.report("lab", key).voided_at is not None


# --- D20: a changed report, replaced or voided then registered --------------------------------


VOID_THEN_REGISTER = spec.SpecOptions(update_mode="void_then_register")


def revise(db: Engine, entity: str, forms: list[str], *, title: str) -> list[dict[str, Any]]:
    """The hospital corrected these reports: a new title, a new version in the store, queued as the
    load queues it. Returns the rows as they were (for :func:`restore`)."""
    table = store.SPEC_TABLES[entity]
    with db.begin() as conn:
        before = [
            dict(r) for r in conn.execute(select(table).where(table.c.report_form_no.in_(forms))).mappings()
        ]
        for row in before:
            new = {
                **row,
                "report_title": title,
                "etl_content_hash": hashlib.sha256(f"{row['etl_content_hash']}{title}".encode()).hexdigest(),
            }
            conn.execute(update(table).where(table.c.report_form_no == row["report_form_no"])
                         .values(report_title=title, etl_content_hash=new["etl_content_hash"]))  # fmt: skip
            assert outbox.enqueue_reports(conn, spec.entity(entity), [new], void_data_status=("0",)) == 1
    return before


def restore(db: Engine, entity: str, rows: list[dict[str, Any]]) -> None:
    table = store.SPEC_TABLES[entity]
    with db.begin() as conn:
        for row in rows:
            conn.execute(update(table).where(table.c.report_form_no == row["report_form_no"])
                         .values(report_title=row["report_title"], etl_content_hash=row["etl_content_hash"]))  # fmt: skip


def forms_of(db: Engine, entity: str, n: int) -> list[str]:
    table = store.SPEC_TABLES[entity]
    with db.connect() as conn:
        return list(
            conn.execute(select(table.c.report_form_no).order_by(table.c.report_form_no).limit(n)).scalars()
        )


def held_titles(sim: Simulator, kind: str) -> dict[str, tuple[str, bool]]:
    """report_form_no -> (report_title, void) as the simulator holds them."""
    out = {}
    for r in sim.platform.store.report_keys(kind):
        report = sim.platform.store.report(kind, list(r["key"].values()))
        out[r["key"]["report_form_no"]] = (report.master["report_title"], r["voided_at"] is not None)
    return out


@pytest.fixture
def strict_sim(sim: Simulator) -> Iterator[Simulator]:
    """A platform that takes an update only as a void then a new registration (D20), same key pair."""
    with Simulator(config=SimulatorConfig(port=0, private_key=PRIVATE, spec_options=VOID_THEN_REGISTER)) as s:
        yield s


def test_updates_under_void_then_register_go_void_first_exactly_once_each_d20(
    fresh: Engine, s3: Any, strict_sim: Simulator, hospital: Any
) -> None:
    """Through the outbox against a platform enforcing D20's void_then_register: every changed report
    is voided, then registered again, once each and in that order, even when the void first fails
    (HTTP 500, then accepted): the register never overtakes it. A replace push of a change is
    refused by that platform, naming the rule."""
    assert push(fresh, s3, strict_sim, hospital, profile=VOID_THEN_REGISTER).total().acked == LAB + EXAM
    labs, exams = forms_of(fresh, "labmaster", 3), forms_of(fresh, "exammaster", 2)
    old_titles = held_titles(strict_sim, "lab")
    before = revise(fresh, "labmaster", labs, title="复查报告") + revise(
        fresh, "exammaster", exams, title="复查报告"
    )
    others: list[str] = []
    try:
        faults(strict_sim, http500_rate=1.0, methods=["DeleteLabInfo"])  # the lab voids fail, for now
        first = push(
            fresh, s3, strict_sim, hospital, profile=VOID_THEN_REGISTER, backoff_base_s=60, backoff_max_s=60
        )
        received = strict_sim.platform.received()["calls"]
        assert strict_sim.platform.faults.status()["injected"] == {"http500": 3}  # the lab voids, once each
        assert "DeleteLabInfo" not in received and received["DeleteExamInfo"] == 2
        assert (
            received["ArchiveAutoReport"] == LAB + EXAM + 2
        )  # only the exams' registers: their voids went through
        assert first.total().retried == 3 + 3  # the lab voids to retry, their registers waiting behind them
        assert all(held_titles(strict_sim, "lab")[f] == old_titles[f] for f in labs)  # untouched
        faults(strict_sim, http500_rate=0.0)
        with fresh.begin() as conn:  # due now, not after the backoff
            conn.execute(
                update(store.outbox).where(store.outbox.c.status == "queued").values(next_attempt_at=None)
            )
        push(fresh, s3, strict_sim, hospital, profile=VOID_THEN_REGISTER)
        received = strict_sim.platform.received()["calls"]
        assert (received["DeleteLabInfo"], received["DeleteExamInfo"]) == (3, 2)
        assert received["ArchiveAutoReport"] == LAB + EXAM + 3 + 2
        for kind, forms in (("lab", labs), ("exam", exams)):
            held = held_titles(strict_sim, kind)
            assert all(held[f] == ("复查报告", False) for f in forms)
        with fresh.connect() as conn:
            rows = conn.execute(select(store.outbox)).all()
            logs = conn.execute(select(store.push_log).order_by(store.push_log.c.id)).all()
        assert {r.status for r in rows} == {"acked"}
        by_id = {r.id: r for r in rows}
        for form in labs + exams:  # in the order the platform answered them
            oks = [(by_id[g.outbox_id].action, by_id[g.outbox_id].cause) for g in logs
                   if g.outcome == "ok" and by_id[g.outbox_id].report_form_no == form]  # fmt: skip
            assert oks == [("register", "load"), ("void", "update"), ("register", "load")], (form, oks)
        # the same platform refuses a changed report registered without a void (replace: the default)
        others = forms_of(fresh, "labmaster", 4)[3:]
        before += revise(fresh, "labmaster", others, title="再次修订")
        refused = push(fresh, s3, strict_sim, hospital)
        assert refused.total().rejected == 1 and "(D20)" in refused.rejected[0]["answer"]
    finally:
        restore(fresh, "labmaster", [r for r in before if r["report_form_no"] in labs + others])
        restore(fresh, "exammaster", [r for r in before if r["report_form_no"] in exams])


def test_updates_under_replace_register_again_without_a_void_d20(
    fresh: Engine, s3: Any, sim: Simulator, hospital: Any
) -> None:
    """The default (§1: resubmit under the same key): a changed report is registered again, once, no
    void; the platform holds the new version."""
    push(fresh, s3, sim, hospital)
    labs = forms_of(fresh, "labmaster", 3)
    before = revise(fresh, "labmaster", labs, title="复查报告")
    try:
        result = push(fresh, s3, sim, hospital)
    finally:
        restore(fresh, "labmaster", before)
    assert result.total().acked == 3 and result.total().sent == 3
    received = sim.platform.received()["calls"]
    assert "DeleteLabInfo" not in received and received["ArchiveAutoReport"] == LAB + EXAM + 3
    assert all(held_titles(sim, "lab")[f] == ("复查报告", False) for f in labs)


def test_killed_between_the_answer_and_its_record_resends_only_that_batch(
    fresh: Engine, s3: Any, sim: Simulator, hospital: Any
) -> None:
    env = {
        **os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "plugins"), ROOT]),
        "HURREN_STORE_URL": fresh.url.render_as_string(hide_password=False),
        "HURREN_S3_BUCKET_REPORTS": s3.bucket_reports, "HURREN_PLATFORM_URL": sim.url,
        "HURREN_PLATFORM_PUBLIC_KEY": sim.public_key, "HURREN_PLATFORM_ORG_CODE": hospital.org_code,
        "HURREN_PLATFORM_VISITOR_CODE": "v", "HURREN_PLATFORM_VISITOR_KEY": "k",
    }  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "tests.faults.kill_push", "9", "run", "--concurrency", "3", "--set",
                           "report_batch=2"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    with fresh.connect() as conn:
        in_flight = {
            r.id for r in conn.execute(select(store.outbox.c.id).where(store.outbox.c.status == "sending"))
        }
        acked_before = {
            r.id for r in conn.execute(select(store.outbox.c.id).where(store.outbox.c.status == "acked"))
        }
    assert 1 <= len(in_flight) <= 2 * 3 * 2, (
        in_flight
    )  # at most two claims of `concurrency` jobs of `report_batch`
    assert len(acked_before) >= 9 - 3 * 2 - 1  # answers recorded before the kill (the others were in flight)
    calls_before = settled_calls(sim)  # requests of the dead process still being handled count too

    result = push(fresh, s3, sim, hospital, lease_s=0)
    assert result.total().lost == len(in_flight)
    logs = log_rows(fresh)
    sent_again = {r.outbox_id for r in logs if r.outcome == "ok"} - acked_before
    assert sent_again >= in_flight
    resent = {r.outbox_id for r in logs if r.outcome == "lost"}
    assert resent == in_flight  # only that batch was taken back (and sent again)
    calls = sim.platform.received()["calls"]["ArchiveAutoReport"]
    assert calls == calls_before + (LAB + EXAM - len(acked_before))  # nothing acknowledged was sent twice
    processed_twice = calls_before - len(acked_before)  # in flight and answered before the kill
    assert 0 <= processed_twice <= len(in_flight)
    assert_acknowledged_exactly_once(fresh, sim, extra_ok=processed_twice)


def test_the_command_line_shows_dead_letters_and_requeues_them(
    fresh: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hurren.push.__main__ import main
    from hurren.settings import settings

    with fresh.begin() as conn:
        ids = list(conn.execute(select(store.outbox.c.id).order_by(store.outbox.c.id).limit(2)).scalars())
        conn.execute(update(store.outbox).where(store.outbox.c.id.in_(ids))
                     .values(status="dead", attempts=8, last_error="HTTPStatusError: HTTP 502 (gave up)"))  # fmt: skip
    monkeypatch.setenv("HURREN_STORE_URL", fresh.url.render_as_string(hide_password=False))
    settings.cache_clear()
    try:
        assert main(["dead"]) == 0
        listing = capsys.readouterr().out
        assert all(str(i) in listing for i in ids) and listing.count("HTTP 502") == 2
        assert main(["requeue", "--ids", str(ids[0])]) == 0
        assert "requeued 1 of 1 dead" in capsys.readouterr().out
        assert main(["status"]) == 0
        status = capsys.readouterr().out
        assert "queued" in status and "labmaster" in status
    finally:
        settings.cache_clear()
    with fresh.connect() as conn:
        got = dict(
            conn.execute(
                select(store.outbox.c.id, store.outbox.c.status).where(store.outbox.c.id.in_(ids))
            ).all()
        )
    assert got == {ids[0]: "queued", ids[1]: "dead"}


def test_load_queues_each_written_version_in_its_transaction(make_database: Any, s3: Any) -> None:
    """Loading queues what it writes: once; a void as a void; nothing when a batch changes nothing."""
    engine = create_engine(make_database("hurren_push_load"))
    store.create_all(engine)
    h = synthetic.make_hospitals(1, seed=4101)[0]
    day = HospitalDay(h, date(2024, 3, 11), seed=4101, lab_reports=4, exam_reports=0, pdf_kb=1, lab_items=2)
    body = {"id": "q41", "org_code": h.org_code, "org_name": h.name, "conn_id": "c", "dialect": "postgresql"}
    source = sources.parse_sources(json.dumps({"hospitals": [body]})).get("q41")
    pdfs = load.Pdfs(s3.client, s3.bucket_reports)
    reports = [day.lab_report(i) for i in range(4)]
    assert (
        load.load_reports(
            engine, _batch("lab", reports), source=source, run_id="a", pdfs=pdfs, options=DEFAULT_OPTIONS
        ).queued
        == 4
    )
    assert (
        load.load_reports(
            engine, _batch("lab", reports), source=source, run_id="b", pdfs=pdfs, options=DEFAULT_OPTIONS
        ).queued
        == 0
    )
    reports[0].master["data_status"] = "0"
    reports[0].master["last_update_dtime"] = datetime(2024, 3, 11, 23)
    reports[1].items[0]["result_value"] = "9.9"
    assert (
        load.load_reports(
            engine, _batch("lab", reports), source=source, run_id="c", pdfs=pdfs, options=DEFAULT_OPTIONS
        ).queued
        == 2
    )
    with engine.connect() as conn:
        rows = conn.execute(select(store.outbox).order_by(store.outbox.c.id)).all()
    assert Counter((r.action, r.status) for r in rows) == {
        ("register", "superseded"): 2, ("register", "queued"): 3, ("void", "queued"): 1}  # fmt: skip
    assert next(r for r in rows if r.action == "void").report_form_no == reports[0].master["report_form_no"]
    table = store.SPEC_TABLES["labmaster"]
    with engine.connect() as conn:
        hashes = dict(conn.execute(select(table.c.report_form_no, table.c.etl_content_hash)).all())
    assert {(r.report_form_no, r.content_hash) for r in rows if r.status == "queued"} == set(hashes.items())
    engine.dispose()


def test_the_outbox_tables_compile_and_a_sketch_table_is_refused(make_database: Any) -> None:
    engine = create_engine(make_database("hurren_push_old"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE push_outbox (id bigint primary key, entity varchar(64))"))
        conn.execute(text("CREATE TABLE push_log (id bigint primary key)"))
    from hurren.push.exceptions import PushConfigError

    with pytest.raises(PushConfigError, match="Drop push_outbox and push_log"):
        outbox.check_schema(engine)
    engine.dispose()
