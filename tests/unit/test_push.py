"""The push without servers: outcomes, backoff, circuit breaker, options, the outbox's SQL on
SQLite, the platform connection, and whole runs against a scripted fake platform."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, insert, select, update
from sqlalchemy.engine import Engine

from hurren import crypto, spec, store
from hurren.platform import (
    AnswerError,
    BusinessError,
    ConnectError,
    HTTPStatusError,
    PayloadError,
    RemoteProtocolError,
    SoapFault,
    TimeoutError,
)
from hurren.platform.answers import Ack
from hurren.push import outbox
from hurren.push.connection import PlatformConfig
from hurren.push.exceptions import PushConfigError
from hurren.push.options import PushOptions
from hurren.push.policy import CircuitBreaker, Outcome, backoff_s, classify
from hurren.push.runner import Pusher
from hurren.settings import PlatformSettings
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import samples

LAB = spec.entity("labmaster")
ob = store.outbox

# --------------------------------------------------------------------------------------------
# policy


@pytest.mark.parametrize(
    ("result", "kind", "answered", "breaker_failure"),
    [
        pytest.param(Ack(method="m"), "ok", True, False, id="ok"),
        pytest.param(Ack(method="m", text="某医院 内科 张三"), "ok", True, False, id="ok-quoted"),
        pytest.param(BusinessError("bad field"), "rejected", True, False, id="error-answer"),
        pytest.param(BusinessError("系统繁忙"), "retry", True, False, id="error-transient"),
        pytest.param(ConnectError("refused"), "unreachable", False, True, id="connect"),
        pytest.param(TimeoutError("slow"), "retry", False, True, id="timeout"),
        pytest.param(RemoteProtocolError("dropped"), "retry", False, True, id="dropped"),
        pytest.param(HTTPStatusError("500", status_code=500), "retry", False, True, id="http-500"),
        pytest.param(AnswerError("garbage"), "retry", False, True, id="bad-answer"),
        pytest.param(
            PayloadError("bad text", entity="labmaster", field="name"), "broken", False, False, id="payload"
        ),
        pytest.param(SoapFault("Client", "机构编码不存在"), "rejected", True, False, id="client-fault"),
        pytest.param(SoapFault("Client", "系统繁忙"), "retry", True, False, id="client-fault-transient"),
        pytest.param(SoapFault("Server", "数据库连接超时"), "retry", False, True, id="server-fault"),
    ],
)
def test_an_answer_becomes_an_outcome(result: Any, kind: str, answered: bool, breaker_failure: bool) -> None:
    outcome = classify(result, transient=lambda reason: "繁忙" in reason)
    assert (outcome.kind, outcome.answered, outcome.transport_failure) == (kind, answered, breaker_failure)
    if kind == "ok":
        assert outcome.text == getattr(result, "text", None) and outcome.log_outcome == "ok"
    if isinstance(result, BusinessError):
        assert outcome.text == f"error:{result.reason}" and outcome.log_outcome == "error"
    if isinstance(result, SoapFault):  # kept as the platform wrote it, whatever becomes of it
        assert outcome.text == f"fault:{result.code}: {result.text}"


def test_backoff_doubles_is_capped_and_jittered_the_same_way_every_time() -> None:
    delays = [backoff_s(n, base_s=10, max_s=100, salt=7) for n in range(1, 8)]
    assert delays == [backoff_s(n, base_s=10, max_s=100, salt=7) for n in range(1, 8)]
    for n, d in enumerate(delays, start=1):
        full = min(100, 10 * 2 ** (n - 1))
        assert full / 2 <= d < full
    assert len({round(backoff_s(3, base_s=10, max_s=100, salt=s), 6) for s in range(20)}) > 10


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


FAIL, OK = Outcome("retry", "TimeoutError: slow"), Outcome("ok", None, answered=True)


def test_circuit_breaker_opens_waits_probes_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown_s=10, max_cooldown_s=25, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record(FAIL)
    b.record(Outcome("rejected", "error:x", answered=True))  # the platform answered: it is up
    for _ in range(3):
        b.record(FAIL)
    assert b.state == "open" and not b.allow() and b.wait_s() == 10 and b.opened == 1
    clock.now = 10
    assert b.allow() and not b.allow()  # one probe only
    b.record(FAIL)
    assert b.state == "open" and b.wait_s() == 20  # the cool-down doubles ...
    clock.now = 30
    assert b.allow()
    b.record(FAIL)
    assert b.wait_s() == 25  # ... up to its maximum
    clock.now = 55
    assert b.allow()
    b.record(OK)
    assert b.state == "closed" and b.allow() and b.allow()


# --------------------------------------------------------------------------------------------
# options


def test_options_from_params_refuse_unknown_keys_and_bad_values() -> None:
    o = PushOptions.from_mapping({"concurrency": 8, "org_codes": ["1"], "max_run_s": None})
    assert (o.concurrency, o.org_codes, o.max_run_s) == (8, ("1",), 900.0)
    with pytest.raises(PushConfigError, match="unknown push option"):
        PushOptions.from_mapping({"concurency": 8})
    with pytest.raises(PushConfigError, match="concurrency"):
        PushOptions(concurrency=0)
    with pytest.raises(PushConfigError, match="entities"):
        PushOptions(entities=("lab_subitem",))
    with pytest.raises(PushConfigError, match="not a regex"):
        PushOptions(transient_errors=("(",))
    assert PushOptions(transient_errors=("繁忙",)).is_transient("error: 系统繁忙")


# --------------------------------------------------------------------------------------------
# the outbox on SQLite


@pytest.fixture
def db(tmp_path: Any) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}", connect_args={"timeout": 30})
    store.create_all(engine)
    yield engine
    engine.dispose()


def row(
    form: str, *, version: str = "v1", status: int = 1, patient: str = "P1", at: str = "2024-03-11 09:00:00",
    org: str = "457759922",
) -> dict[str, Any]:  # fmt: skip
    return {"org_code": org, "report_form_no": form, "patient_id": patient, "event_type": 1,
            "event_no": "E1", "data_status": status, "last_update_dtime": at,
            "etl_content_hash": hashlib.sha256(f"{form}{version}{patient}{status}".encode()).hexdigest()}  # fmt: skip


def enqueue(db: Engine, *rows: dict[str, Any]) -> int:
    with db.begin() as conn:
        return outbox.enqueue_reports(
            conn, LAB, list(rows), void_data_status=DEFAULT_OPTIONS.void_data_status
        )


def entries(db: Engine) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(select(ob).order_by(ob.c.id)).mappings()]


def test_each_version_is_queued_once_voids_by_data_status(db: Engine) -> None:
    assert enqueue(db, row("F1"), row("F2", status=0)) == 2
    assert enqueue(db, row("F1"), row("F2", status=0)) == 0  # the same versions again: nothing
    e = entries(db)
    assert [(x["report_form_no"], x["action"], x["status"], x["cause"]) for x in e] == [
        ("F1", "register", "queued", "load"), ("F2", "void", "queued", "load")]  # fmt: skip
    assert json.loads(e[0]["record_key"]) == ["457759922", "F1", "P1", "1", "E1"]


def test_a_new_version_supersedes_the_unsent_one_but_not_the_acknowledged(db: Engine) -> None:
    enqueue(db, row("F1"))
    enqueue(db, row("F1", version="v2"))
    assert [x["status"] for x in entries(db)] == ["superseded", "queued"]
    with db.begin() as conn:
        conn.execute(update(ob).where(ob.c.status == "queued").values(status="acked"))
    enqueue(db, row("F1", version="v3"))
    enqueue(db, row("F1", version="v1"))  # back to an earlier content: a new version again
    assert [x["status"] for x in entries(db)] == ["superseded", "acked", "superseded", "queued"]


def test_a_changed_key_voids_the_old_key(db: Engine) -> None:
    enqueue(db, row("F1", patient="P1"))
    with db.begin() as conn:
        conn.execute(update(ob).values(status="acked"))
    enqueue(db, row("F1", patient="P2", at="2024-03-11 10:00:00"))
    e = entries(db)
    assert [(json.loads(x["record_key"])[2], x["action"], x["cause"], x["status"]) for x in e] == [
        ("P1", "register", "load", "acked"), ("P2", "register", "load", "queued"),
        ("P1", "void", "key_change", "queued")]  # fmt: skip
    assert e[2]["content_hash"] == e[0]["content_hash"]
    # the same batch holding both keys: the later one wins, the earlier is voided
    enqueue(
        db, row("F9", patient="A", at="2024-03-11 10:00:00"), row("F9", patient="B", at="2024-03-11 11:00:00")
    )
    f9 = [(json.loads(x["record_key"])[2], x["action"]) for x in entries(db) if x["report_form_no"] == "F9"]
    assert sorted(f9) == [("A", "void"), ("B", "register")]


def test_earlier_entries_are_found_per_hospital_across_read_lists(db: Engine) -> None:
    """A batch's earlier entries are read per hospital by lists of report numbers
    (``outbox._groups``): two hospitals with the same report number never see each other's
    entries, and a batch larger than one list finds all of its own."""
    forms = [f"F{i:04d}" for i in range(outbox._IN + 3)]
    assert enqueue(db, *(row(f) for f in forms), row("F0001", org="OTHER")) == len(forms) + 1
    assert enqueue(db, *(row(f) for f in forms), row("F0001", org="OTHER")) == 0  # all found again
    with db.begin() as conn:
        conn.execute(update(ob).values(status="acked"))
    # a key change in one hospital voids its old key there only
    assert enqueue(db, row("F0001", patient="P2", at="2024-03-11 10:00:00")) == 2
    queued = [
        (x["org_code"], x["action"], json.loads(x["record_key"])[2])
        for x in entries(db)
        if x["status"] == "queued"
    ]
    assert sorted(queued) == [("457759922", "register", "P2"), ("457759922", "void", "P1")]


def claim(db: Engine, limit: int = 10, who: str = "run-1") -> list[outbox.Entry]:
    with db.begin() as conn:
        return outbox.claim(conn, limit=limit, claimed_by=who)


def test_claim_voids_first_one_per_key_in_flight_and_only_when_due(db: Engine) -> None:
    enqueue(db, row("F1"), row("F2"), row("F3", status=0))
    with db.begin() as conn:
        conn.execute(update(ob).where(ob.c.report_form_no == "F2")
                     .values(next_attempt_at=outbox.utcnow() + timedelta(hours=1)))  # fmt: skip
    got = claim(db)
    assert [(e.report_form_no, e.action) for e in got] == [("F3", "void"), ("F1", "register")]
    enqueue(db, row("F1", version="v2"))  # F1 v1 is in flight: v2 waits for it
    assert claim(db) == []
    f1 = next(e for e in got if e.report_form_no == "F1")
    with db.begin() as conn:
        ok = outbox.Recording(
            f1, "acked", 1, calls=[outbox.Call(outbox.utcnow(), outbox.utcnow(), "ok", None)]
        )
        assert outbox.record(conn, [ok], claimed_by="run-1") == {f1.id}
        assert outbox.record(conn, [ok], claimed_by="run-1") == set()  # not ours any more
    assert [e.report_form_no for e in claim(db)] == ["F1"]


def test_a_run_that_died_leaves_sending_entries_that_come_back_logged_lost(db: Engine) -> None:
    enqueue(db, row("F1"), row("F2"))
    claim(db)
    with db.begin() as conn:
        assert outbox.recover_stale(conn, lease_s=3600, max_attempts=3) == []  # lease still running
        back = outbox.recover_stale(conn, lease_s=0, max_attempts=2)
        conn.execute(
            update(ob).where(ob.c.report_form_no == "F2").values(status="sending", claimed_at=outbox.utcnow())
        )
        again = outbox.recover_stale(conn, lease_s=0, max_attempts=2)
        logs = conn.execute(
            select(store.push_log.c.outcome, func.count()).group_by(store.push_log.c.outcome)
        ).all()
    assert len(back) == 2 and len(again) == 1
    assert {x["report_form_no"]: (x["status"], x["attempts"]) for x in entries(db)} == {
        "F1": ("queued", 1), "F2": ("dead", 2)}  # fmt: skip
    assert dict(logs) == {"lost": 3}


def test_requeue_dead_entries_resets_attempts_and_supersedes_stale_ones(db: Engine) -> None:
    enqueue(db, row("F1"), row("F2"))
    with db.begin() as conn:
        conn.execute(update(ob).values(status="dead", attempts=8, last_error="HTTPStatusError: HTTP 500"))
    enqueue(db, row("F2", version="v2"))  # supersedes the dead F2 entry itself
    with db.begin() as conn:
        conn.execute(
            update(ob).where(ob.c.report_form_no == "F2", ob.c.status == "superseded").values(status="dead")
        )
        dry = outbox.requeue(conn, statuses=("dead",), dry_run=True)
    assert {(r["report_form_no"], r["status"]) for r in dry} == {("F1", "queued"), ("F2", "superseded")}
    assert [x["status"] for x in entries(db)] == ["dead", "dead", "queued"]  # a dry run changes nothing
    with db.begin() as conn:
        assert [
            r["report_form_no"] for r in outbox.requeue(conn, error_contains="HTTP 500", dry_run=True)
        ] == ["F1"]
        done = outbox.requeue(conn, statuses=("dead",))
        with pytest.raises(ValueError, match="status"):
            outbox.requeue(conn, statuses=("acked",))
    assert len(done) == 2
    assert [(x["report_form_no"], x["status"], x["attempts"]) for x in entries(db)] == [
        ("F1", "queued", 0), ("F2", "superseded", 8), ("F2", "queued", 0)]  # fmt: skip


def test_letters_and_counts_are_what_the_engineer_reads(db: Engine) -> None:
    enqueue(db, row("F1"), row("F2"))
    with db.begin() as conn:
        conn.execute(update(ob).where(ob.c.report_form_no == "F1").values(status="dead", last_error="boom"))
        assert outbox.counts(conn) == {"labmaster": {"457759922": {"dead": 1, "queued": 1}}}
        [letter] = outbox.letters(conn)
    assert (letter["report_form_no"], letter["last_error"]) == ("F1", "boom")
    assert "patient_id" not in letter and "record_key" not in letter


# --------------------------------------------------------------------------------------------
# the platform connection


def _settings(**kw: Any) -> PlatformSettings:
    base = {"url": "http://127.0.0.1:1/Myhealth", "public_key": crypto.generate_keypair()[1], "org_code": "457759922",
            "visitor_code": "v", "visitor_key": "secret-key"}  # fmt: skip
    return PlatformSettings(**(base | kw))


def test_the_platform_config_names_every_missing_setting() -> None:
    with pytest.raises(PushConfigError) as info:
        PlatformConfig.from_settings(
            _settings(public_key=None, visitor_key=None), spec_options=DEFAULT_OPTIONS
        )
    assert "HURREN_PLATFORM_PUBLIC_KEY" in str(info.value) and "password" in str(info.value)
    config = PlatformConfig.from_settings(
        _settings(key_max_uses=5, key_max_age_s=60), spec_options=DEFAULT_OPTIONS
    )
    assert (config.key_max_uses, config.key_max_age_s) == (5, 60)
    assert "secret-key" not in repr(config) and config.public_key not in repr(config)


def test_the_airflow_connection_wins_over_the_environment() -> None:
    conn = SimpleNamespace(host="platform.example", port=8080, schema="Myhealth", login="visitor-9",
                           password="pw-9", extra_dejson={"org_code": "650000001", "sm2_mode": "C1C2C3",
                                                          "key_max_uses": 50})  # fmt: skip
    config = PlatformConfig.from_connection(conn, fallback=_settings(), spec_options=DEFAULT_OPTIONS)
    assert config.endpoint == "http://platform.example:8080/Myhealth"
    assert (config.credential.org_code, config.credential.visitor_code, config.credential.visitor_key) == (
        "650000001", "visitor-9", "pw-9")  # fmt: skip
    assert (config.crypto_options.mode, config.key_max_uses) == ("C1C2C3", 50)
    conn.host = "https://p.example/ws/Myhealth"
    assert (
        PlatformConfig.from_connection(conn, fallback=_settings(), spec_options=DEFAULT_OPTIONS).endpoint
        == conn.host
    )
    with pytest.raises(PushConfigError, match="sm2_mode|mode"):
        PlatformConfig.from_connection(SimpleNamespace(**{**vars(conn), "extra_dejson": {"sm2_mode": "X"}}),
                                       fallback=_settings(), spec_options=DEFAULT_OPTIONS)  # fmt: skip


# --------------------------------------------------------------------------------------------
# whole runs against a scripted platform (SQLite store, objects in a dict)


class Objects:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get_object(self, bucket: str, name: str) -> Any:
        if name not in self.data:
            raise type("S3Error", (Exception,), {"code": "NoSuchKey"})("no such key")
        body = io.BytesIO(self.data[name])
        return SimpleNamespace(read=body.read, close=lambda: None, release_conn=lambda: None)


class FakePlatform:
    """Answers per report number: a list of answers/exceptions, the last one repeated."""

    def __init__(self, script: Callable[[str, str], Any] | None = None) -> None:
        self.script = script or (lambda method, form: "ok")
        self.calls: list[tuple[str, str]] = []

    def seal(self, body: bytes) -> Any:
        return SimpleNamespace(payload=body.decode("utf-8"), credential="c", key="k")

    def invoke_sealed(self, method: str, sealed: Any) -> str:
        payload = sealed.payload
        found = re.search(r'report_form_no="([^"]*)"', payload) or re.search(
            r"<report_form_no>([^<]*)<", payload
        )
        assert found, payload[:200]
        form = found.group(1)
        self.calls.append((method, form))
        answer = self.script(method, form)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def put_report(db: Engine, objects: Objects, form: str, *, status: int = 1, pdf: bytes | None = None) -> None:
    master, items = samples.lab_report(report_form_no=form, items=2, pdf_size=300)
    data = pdf if pdf is not None else master.pop("pdf")
    master.pop("pdf", None)
    sha = hashlib.sha256(data).hexdigest()
    key = f"reports/{form}.pdf"
    objects.data[key] = data
    master |= {"data_status": status, "pdf_object_key": key, "pdf_sha256": sha, "pdf_size": len(data),
               "etl_content_hash": hashlib.sha256(f"{form}{status}{sha}".encode()).hexdigest()}  # fmt: skip
    lab = store.SPEC_TABLES["labmaster"]
    with db.begin() as conn:
        conn.execute(lab.delete().where(lab.c.report_form_no == form))
        conn.execute(insert(lab).values({k: v for k, v in master.items() if k in lab.c}))
        item_t = store.SPEC_TABLES["lab_subitem"]
        conn.execute(item_t.delete().where(item_t.c.report_form_no == form))
        for it in items:
            conn.execute(insert(item_t).values({**{k: v for k, v in it.items() if k in item_t.c},
                                                "etl_content_hash": "x"}))  # fmt: skip
        outbox.enqueue_reports(conn, LAB, [master], void_data_status=DEFAULT_OPTIONS.void_data_status)


def push(db: Engine, objects: Objects, platform: FakePlatform, profile: spec.SpecOptions | None = None,
         **options: Any) -> Any:  # fmt: skip
    opts = PushOptions.from_mapping({"concurrency": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.02,
                                     "max_wait_s": 1, "max_run_s": 10, **options})  # fmt: skip
    return Pusher(engine=db, client=platform, objects=objects, bucket="b", options=opts,
                  spec_options=profile or spec.SpecOptions()).run()  # fmt: skip


def test_a_run_sends_each_version_once_retries_failures_and_isolates_poison(db: Engine) -> None:
    objects = Objects()
    for i in range(6):
        put_report(db, objects, f"F{i}")
    put_report(db, objects, "BADPDF")
    objects.data["reports/BADPDF.pdf"] = b"%PDF-tampered"
    tries: dict[str, int] = {}

    def script(method: str, form: str) -> Any:
        tries[form] = tries.get(form, 0) + 1
        if form == "F1":
            return "error:患者姓名为空"  # rejected: not retried
        if form == "F2":
            return HTTPStatusError("HTTP 500", status_code=500)  # poison: dead after max_attempts
        if form == "F3" and tries[form] < 3:
            return TimeoutError("slow")  # recovers on the third try
        return "ok"

    result = push(db, objects, FakePlatform(script), max_attempts=4, breaker_threshold=50)
    status = {x["report_form_no"]: (x["status"], x["attempts"]) for x in entries(db)}
    assert status == {"F0": ("acked", 1), "F1": ("rejected", 1), "F2": ("dead", 4), "F3": ("acked", 3),
                      "F4": ("acked", 1), "F5": ("acked", 1), "BADPDF": ("dead", 0)}  # fmt: skip
    assert tries == {"F0": 1, "F1": 1, "F2": 4, "F3": 3, "F4": 1, "F5": 1}
    t = result.total()
    assert (t.acked, t.rejected, t.dead, t.retried, t.sent) == (4, 1, 2, 5, 11)
    assert {d["report_form_no"] for d in result.dead_letters} == {"F2", "BADPDF"}
    assert "SHA-256" in next(d for d in result.dead_letters if d["report_form_no"] == "BADPDF")["last_error"]
    again = FakePlatform()
    push(db, objects, again)
    assert again.calls == []  # nothing acknowledged, rejected or dead is sent again


def test_voids_keep_who_quoted_and_skip_what_the_platform_never_had(db: Engine) -> None:
    objects = Objects()
    put_report(db, objects, "F1")
    put_report(db, objects, "NEVER", status=0)
    platform = FakePlatform(
        lambda method, form: "ok:乙医院 内科 李医生" if method == "DeleteLabInfo" else "ok"
    )
    push(db, objects, platform)
    put_report(db, objects, "F1", status=0)
    result = push(db, objects, platform)
    assert platform.calls == [("ArchiveAutoReport", "F1"), ("DeleteLabInfo", "F1")]
    assert [q["answer"] for q in result.quoted] == ["乙医院 内科 李医生"]
    by_form = {(x["report_form_no"], x["action"]): x for x in entries(db)}
    assert by_form["F1", "void"]["answer_text"] == "乙医院 内科 李医生"
    assert by_form["NEVER", "void"]["status"] == "skipped"


def test_a_platform_that_is_down_is_waited_out_not_hammered(db: Engine) -> None:
    objects = Objects()
    for i in range(20):
        put_report(db, objects, f"F{i}")
    platform = FakePlatform(lambda method, form: ConnectError("refused"))
    result = push(db, objects, platform, breaker_threshold=3, breaker_cooldown_s=0.2, max_run_s=1.0)
    assert result.platform_down and result.breaker_opened == 1
    assert 3 <= len(platform.calls) <= 3 + 2 + 1 + 2  # the threshold (+ in flight), then a few probes
    assert {x["status"] for x in entries(db)} == {"queued"}  # nothing dead: the outage is not theirs
    platform.script = lambda method, form: "ok"
    result = push(db, objects, platform)
    assert not result.platform_down and {x["status"] for x in entries(db)} == {"acked"}


def test_reports_are_claimed_read_and_recorded_many_per_statement(db: Engine) -> None:
    """No store round trip per report: one claim for the run's jobs, two reads and one recording
    per job of report_batch reports (each report still its own call)."""
    objects = Objects()
    for i in range(16):
        put_report(db, objects, f"F{i}")
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(db, "before_cursor_execute", listen)
    try:
        result = push(db, objects, FakePlatform(), concurrency=2, report_batch=8, max_wait_s=0)
    finally:
        event.remove(db, "before_cursor_execute", listen)
    assert result.total().acked == 16 and {x["status"] for x in entries(db)} == {"acked"}
    per_job = [x for x in statements if "FROM lab_subitem" in x or "INSERT INTO push_log" in x]
    assert len(per_job) == 2 * 2  # 2 jobs of 8: their sub-items read once, their push_log rows inserted once
    assert len(statements) <= 30, statements  # 17 here; 101 before (claim, read and record per report)


def test_the_session_key_and_its_wrapped_strkey_are_reused_within_the_window_then_rotated() -> None:
    config = PlatformConfig.from_settings(
        _settings(key_max_uses=3, key_max_age_s=600), spec_options=DEFAULT_OPTIONS
    )
    with config.client(pool_size=1) as client:
        keys = [client.seal(b"<root/>").key for _ in range(7)]
    assert [keys.index(k) for k in keys] == [0, 0, 0, 3, 3, 3, 6]  # one SM2 wrap per 3 calls


def test_a_key_in_flight_in_another_run_waits_and_the_run_ends_without_spinning(db: Engine) -> None:
    objects = Objects()
    put_report(db, objects, "F1")
    claim(db, who="another-run")  # v1 is being sent by another (live) run
    put_report(db, objects, "F1", pdf=b"%PDF-1.4 revised")  # v2 must wait for v1
    platform = FakePlatform()
    result = push(db, objects, platform, max_run_s=30, max_wait_s=30)
    assert platform.calls == [] and result.elapsed_s < 5
    assert [x["status"] for x in entries(db)] == ["sending", "queued"]


# --------------------------------------------------------------------------------------------
# records (accept/quote, daily counts): many rows per call, a refused call split


class RowsPlatform:
    """Answers calls carrying rows: ``error:`` when a row's ``field`` is in ``refuse``; the first
    ``failures`` calls time out. Keeps (method, rows, answer) of every call."""

    def __init__(self, refuse: set[str] = frozenset(), *, field: str = "code", failures: int = 0) -> None:
        self.refuse, self.field, self.failures = refuse, field, failures
        self.calls: list[tuple[str, list[dict[str, Any]], str]] = []

    def seal(self, body: bytes) -> Any:
        return SimpleNamespace(payload=body.decode("utf-8"), credential="c", key="k")

    def invoke_sealed(self, method: str, sealed: Any) -> str:
        from hurren.platform import xml

        rows = [r for group in xml.parse_records(xml.parse_xml(sealed.payload)).values() for r in group]
        if len(self.calls) < self.failures:
            self.calls.append((method, rows, "timeout"))
            raise TimeoutError("slow")
        bad = sorted(r[self.field] for r in rows if r[self.field] in self.refuse)
        answer = f"error:{self.field} {bad[0]} 不存在" if bad else "ok"
        self.calls.append((method, rows, answer))
        return answer


ACCEPT = spec.entity("sehr_accept_record")


def put_records(
    db: Engine, codes: Sequence[str], *, version: str = "v1", queue: bool = True
) -> list[dict[str, Any]]:
    """Accept records in the store (as a load writes them) and, ``queue``, in the outbox."""
    rows = samples.accept_records(codes=tuple(codes))
    for r in rows:
        r["etl_content_hash"] = hashlib.sha256(f"{r['code']}{version}".encode()).hexdigest()
    t = store.SPEC_TABLES["sehr_accept_record"]
    with db.begin() as conn:
        conn.execute(t.delete().where(t.c.code.in_(list(codes))))
        conn.execute(insert(t), [{k: v for k, v in r.items() if k in t.c} for r in rows])
        if queue:
            outbox.enqueue_records(conn, ACCEPT, rows, org_code="ORG")
    return rows


def test_records_go_many_per_call_and_a_refused_call_is_split_until_the_refused_rows_are_isolated(
    db: Engine,
) -> None:
    codes = [f"C{i}" for i in range(10)]
    codes[2], codes[7] = "BAD2", "BAD7"
    put_records(db, codes)
    platform = RowsPlatform({"BAD2", "BAD7"})
    result = push(db, Objects(), platform, batch_size=4)
    status = {json.loads(x["record_key"])[ACCEPT.key.index("code")]: x["status"] for x in entries(db)}
    assert status == {c: "rejected" if c.startswith("BAD") else "acked" for c in codes}
    assert {m for m, _, _ in platform.calls} == {"SubmitAccept"}
    assert max(len(rows) for _, rows, _ in platform.calls) == 4  # batched, not one per call
    acked_in = [r["code"] for _, rows, answer in platform.calls if answer == "ok" for r in rows]
    assert sorted(acked_in) == sorted(c for c in codes if not c.startswith("BAD"))  # each good row once
    assert len(platform.calls) < 2 * len(codes)
    assert {r["report_form_no"] for r in result.rejected} == {"14437173"}
    assert all("不存在" in r["answer"] for r in result.rejected) and len(result.rejected) == 2
    with db.connect() as conn:  # every call an entry was part of is in its push log
        logged = conn.execute(
            select(store.push_log.c.outcome, func.count()).group_by(store.push_log.c.outcome)
        ).all()
    calls_per_outcome = {"ok": 0, "error": 0}
    for _, rows, answer in platform.calls:
        calls_per_outcome["ok" if answer == "ok" else "error"] += len(rows)
    assert dict(logged) == calls_per_outcome
    again = RowsPlatform()
    push(db, Objects(), again)
    assert again.calls == []


def test_a_batch_that_times_out_is_retried_whole_and_a_stale_row_is_not_sent(db: Engine) -> None:
    put_records(db, ["A", "B", "C"])
    put_records(db, ["C"], version="v2", queue=False)  # the store moved on without a queue entry
    platform = RowsPlatform(failures=1)
    push(db, Objects(), platform, breaker_threshold=50)
    by_code = {json.loads(x["record_key"])[ACCEPT.key.index("code")]: x for x in entries(db)}
    assert {c: (x["status"], x["attempts"]) for c, x in by_code.items()} == {
        "A": ("acked", 2), "B": ("acked", 2), "C": ("superseded", 0)}  # fmt: skip
    assert [(sorted(r["code"] for r in rows), answer) for _, rows, answer in platform.calls] == [
        (["A", "B"], "timeout"), (["A", "B"], "ok")]  # fmt: skip
    put_records(db, ["C"], version="v2")  # its load queues it
    push(db, Objects(), platform)
    assert platform.calls[-1][1][0]["code"] == "C" and len(platform.calls) == 3


def test_a_row_queued_again_unchanged_is_not_queued_twice(db: Engine) -> None:
    rows = put_records(db, ["A", "B"])
    with db.begin() as conn:
        assert outbox.enqueue_records(conn, ACCEPT, rows, org_code="ORG") == 0
    rows = put_records(db, ["A"], version="v2")
    assert [(x["status"], x["content_hash"] == rows[0]["etl_content_hash"]) for x in entries(db)] == [
        ("superseded", False), ("queued", False), ("queued", True)]  # fmt: skip


# --------------------------------------------------------------------------------------------
# D20: update vs void


VOID_THEN_REGISTER = spec.SpecOptions(update_mode="void_then_register")


def test_replace_sends_a_changed_report_again_without_a_void_d20(db: Engine) -> None:
    objects, platform = Objects(), FakePlatform()
    put_report(db, objects, "F1")
    push(db, objects, platform)
    put_report(db, objects, "F1", pdf=b"%PDF-1.4 corrected\n%%EOF")
    push(db, objects, platform)
    assert platform.calls == [("ArchiveAutoReport", "F1"), ("ArchiveAutoReport", "F1")]


def test_void_then_register_voids_the_held_version_first_once_each_d20(db: Engine) -> None:
    objects, platform = Objects(), FakePlatform()
    put_report(db, objects, "F1")
    put_report(db, objects, "F2")
    push(db, objects, platform, VOID_THEN_REGISTER)  # new reports: nothing on the platform to void
    put_report(db, objects, "F1", pdf=b"%PDF-1.4 corrected\n%%EOF")
    push(db, objects, platform, VOID_THEN_REGISTER)
    assert platform.calls[2:] == [("DeleteLabInfo", "F1"), ("ArchiveAutoReport", "F1")]
    rows = [(x["report_form_no"], x["action"], x["cause"], x["status"]) for x in entries(db)]
    assert rows[2:] == [("F1", "register", "load", "acked"), ("F1", "void", "update", "acked")]
    again = FakePlatform()
    push(db, objects, again, VOID_THEN_REGISTER)
    assert again.calls == []  # each once: nothing left to send
    put_report(db, objects, "F1")  # back to the first content (v1 -> v2 -> v1): the platform holds v2
    push(db, objects, again, VOID_THEN_REGISTER)
    assert again.calls == [("DeleteLabInfo", "F1"), ("ArchiveAutoReport", "F1")]


def test_a_failing_void_is_never_overtaken_by_its_register_d20(db: Engine) -> None:
    """The void times out, then the platform refuses it: the register stays queued behind it,
    unsent, through both; after the void is requeued and acknowledged, the register goes."""
    objects = Objects()
    put_report(db, objects, "F1")
    push(db, objects, FakePlatform(), VOID_THEN_REGISTER)
    put_report(db, objects, "F1", pdf=b"%PDF-1.4 corrected\n%%EOF")
    answers = iter([TimeoutError("slow"), "error:作废失败", "ok", "ok"])
    platform = FakePlatform(lambda method, form: next(answers))
    result = push(db, objects, platform, VOID_THEN_REGISTER, max_wait_s=0.5)
    assert platform.calls == [("DeleteLabInfo", "F1"), ("DeleteLabInfo", "F1")]  # retried, then refused
    by = {(x["action"], x["cause"]): x for x in entries(db) if x["status"] != "acked"}
    assert by["void", "update"]["status"] == "rejected" and by["register", "load"]["status"] == "queued"
    assert (
        "waits for the void" in by["register", "load"]["last_error"]
        and by["register", "load"]["attempts"] == 0
    )
    assert result.total().rejected == 1
    push(db, objects, platform, VOID_THEN_REGISTER)
    assert len(platform.calls) == 2  # a rejected void holds its register: no claim takes it
    with db.begin() as conn:
        [back] = outbox.requeue(conn, statuses=("rejected",))
    assert back["status"] == "queued" and back["action"] == "void"
    push(db, objects, platform, VOID_THEN_REGISTER)
    assert platform.calls[2:] == [("DeleteLabInfo", "F1"), ("ArchiveAutoReport", "F1")]
    assert {x["status"] for x in entries(db)} == {"acked"}


def test_a_newer_version_supersedes_an_update_void_and_its_register_d20(db: Engine) -> None:
    objects = Objects()
    put_report(db, objects, "F1")
    push(db, objects, FakePlatform(), VOID_THEN_REGISTER)
    put_report(db, objects, "F1", pdf=b"%PDF-1.4 v2\n%%EOF")
    push(db, objects, FakePlatform(lambda method, form: "error:作废失败"), VOID_THEN_REGISTER)
    put_report(db, objects, "F1", pdf=b"%PDF-1.4 v3\n%%EOF")  # the hospital fixed it again
    platform = FakePlatform()
    push(db, objects, platform, VOID_THEN_REGISTER)
    assert platform.calls == [("DeleteLabInfo", "F1"), ("ArchiveAutoReport", "F1")]
    states = [(x["action"], x["cause"], x["status"]) for x in entries(db)]
    assert states == [("register", "load", "acked"), ("register", "load", "superseded"),
                      ("void", "update", "superseded"), ("register", "load", "acked"),
                      ("void", "update", "acked")]  # fmt: skip


def test_a_platform_quoting_the_patient_is_logged_masked_and_kept_verbatim_in_push_log(
    db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A platform's error reason may quote what it was sent: the WARNING line, last_error, the run's
    result (XCom) and the engineer's listings show it masked; push_log.answer keeps the platform's
    words as written (main logged and stored them verbatim)."""
    objects = Objects()
    put_report(db, objects, "F1")
    master, _ = samples.lab_report(report_form_no="F1")
    reason = f"error:患者{master['name']}(身份证号 {master['id_no']}, 卡号 {master['card_no']})已存在"
    caplog.set_level("DEBUG", logger="hurren")
    result = push(db, objects, FakePlatform(lambda method, form: reason))
    clear = (master["name"], master["id_no"], master["card_no"])
    [entry] = entries(db)
    with db.connect() as conn:
        [answer] = conn.execute(select(store.push_log.c.answer)).scalars()
        letters = outbox.letters(conn, statuses=("rejected",))
    assert answer == reason  # the audit copy: the platform's words
    for shown in (
        caplog.text,
        entry["last_error"],
        json.dumps(result.as_dict(), ensure_ascii=False),
        json.dumps(letters, ensure_ascii=False),
    ):
        assert not [c for c in clear if c in shown], shown
    assert "rejected: error:患者样*" in caplog.text and "6500**********0000" in entry["last_error"]


# --------------------------------------------------------------------------------------------
# accept/quote keys without the ID number; sync of records


ID_AT = ACCEPT.key.index("id_no")


def test_the_outbox_keys_of_accept_and_quote_records_hold_no_id_number(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyed hash stands in for the ID number (main kept it in clear); the same row keeps its
    key, another secret gives other keys, and the rows are found again to be sent."""
    rows = put_records(db, ["A", "B"])
    id_no = rows[0]["id_no"]
    keys = [x["record_key"] for x in entries(db)]
    assert keys and not [k for k in keys if id_no in k]
    assert all(json.loads(k)[ID_AT].startswith("h:") and len(json.loads(k)[ID_AT]) == 34 for k in keys)
    assert keys == [outbox.entry_key(ACCEPT, r) for r in rows]
    from hurren.settings import settings

    monkeypatch.setenv("HURREN_OUTBOX_KEY_SECRET", "another-site")
    settings.cache_clear()
    try:
        assert outbox.entry_key(ACCEPT, rows[0]) != keys[0]
    finally:
        monkeypatch.delenv("HURREN_OUTBOX_KEY_SECRET")
        settings.cache_clear()
    platform = RowsPlatform()
    push(db, Objects(), platform)
    sent = [r for _, call_rows, _ in platform.calls for r in call_rows]
    assert sorted(r["code"] for r in sent) == ["A", "B"] and {r["id_no"] for r in sent} == {id_no}
    assert {x["status"] for x in entries(db)} == {"acked"}


def test_an_older_outbox_is_upgraded_in_place_once(db: Engine) -> None:
    """Entries queued by main's code (the key with the ID number in clear) are hashed in place by
    ``upgrade`` (idempotent) and then recognised as the same rows' versions: nothing queued twice."""
    rows = put_records(db, ["A", "B"], queue=False)
    with db.begin() as conn:
        conn.execute(insert(ob), [
            {"entity": ACCEPT.name, "org_code": "ORG", "report_form_no": r["hr_report_form_no"],
             "record_key": store.record_key(ACCEPT, r), "content_hash": r["etl_content_hash"], "action": "register",
             "cause": "load", "status": "queued", "attempts": 0, "created_at": outbox.utcnow(),
             "updated_at": outbox.utcnow()} for r in rows])  # fmt: skip
    assert rows[0]["id_no"] in entries(db)[0]["record_key"]  # as main left it
    assert outbox.upgrade(db)["keys_hashed"] == 2
    assert outbox.upgrade(db)["keys_hashed"] == 0
    assert [x["record_key"] for x in entries(db)] == [outbox.entry_key(ACCEPT, r) for r in rows]
    with db.begin() as conn:
        assert outbox.enqueue_records(conn, ACCEPT, rows, org_code="ORG") == 0  # the same versions
    platform = RowsPlatform()
    push(db, Objects(), platform)
    assert sorted(r["code"] for _, call_rows, _ in platform.calls for r in call_rows) == ["A", "B"]


def test_sync_queues_accept_records_for_the_hospital_that_sent_them(db: Engine) -> None:
    """The load records the sender (etl_org_code) with the rows it queues; sync queues records again
    for it (main refused to sync accept/quote rows); rows that do not say are counted, not guessed,
    until ``upgrade`` finds their sender in the run that loaded them."""
    put_records(db, ["A", "B"])  # queued by their load for hospital ORG
    t = store.SPEC_TABLES["sehr_accept_record"]
    with db.begin() as conn:
        assert set(conn.execute(select(t.c.etl_org_code)).scalars()) == {"ORG"}
        conn.execute(ob.delete())
        [orphan] = samples.accept_records(codes=("C",))
        conn.execute(insert(t).values({**{k: v for k, v in orphan.items() if k in t.c}, "etl_content_hash": "h",
                                       "etl_run_id": "records__x:run1"}))  # fmt: skip
    got = outbox.sync_from_store(db, entities=["sehr_accept_record"], void_data_status=())
    assert got == {"sehr_accept_record": 2, "sehr_accept_record:no_sender": 1}
    assert {(x["org_code"], x["status"]) for x in entries(db)} == {("ORG", "queued")}
    with db.begin() as conn:
        conn.execute(insert(store.run).values(run_id="records__x:run1", dag_id="records__x", source="x",
                                              stream="accept", status="success",
                                              details=json.dumps({"org_code": "ORG2"})))  # fmt: skip
    assert outbox.upgrade(db)["senders_found"] == 1
    assert outbox.sync_from_store(db, entities=["sehr_accept_record"], void_data_status=()) == {
        "sehr_accept_record": 1
    }
    assert outbox.sync_from_store(db, entities=["sehr_accept_record"], void_data_status=()) == {
        "sehr_accept_record": 0
    }
    assert sorted(x["org_code"] for x in entries(db)) == ["ORG", "ORG", "ORG2"]
