"""The fault matrix of issue #9, over the real services (README.md in this directory has the table).

One parametrized test. Every case: a fresh store, bucket and emptied simulator; the fault injected
during a real ``pipeline.run_stream`` or a real push run (``hurren.push.tasks.run_push``, or
``python -m hurren.push run`` / a pipeline child process for the SIGKILL cases); the test proves
the fault happened and that the state before recovery is partial (and how); then the same
recovery for every case — the DAG run is retried (``pipeline.run_stream`` for both streams with
the same run id, as Airflow's task retry does) and pushed until nothing is queued — and the same
invariants (:func:`tests.faults.harness.assert_recovered`): extracted = loaded + unchanged + stale +
quarantined for every batch and run, every valid version written exactly once over all runs, the
store and the quarantine equal to a clean reference run, S3 holding exactly the PDFs the store
points at, every version acknowledged exactly once in the outbox, and the platform holding
exactly the reference's reports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from hurren import extract, incremental, load
from hurren.push import outbox, tasks
from hurren.push.exceptions import PlatformUnavailable
from tests.faults import harness

pytestmark = pytest.mark.services

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = "scheduled__2024-03-12"  # the DAG run every load of a case belongs to; the recovery retries it
LOST_CONNECTION = re.compile(r"closed the connection|reset by peer|connection (lost|reset)|terminat", re.I)


@dataclass
class Ctx:
    """What a case gets: fixtures on demand, the world it made, and what it reports back."""

    request: pytest.FixtureRequest
    monkeypatch: pytest.MonkeyPatch
    reference: harness.Reference
    world_: harness.World | None = None
    hooks: harness.Hooks | None = None
    extra_ok: int = 0  # platform answers (ok) that never reached the outbox, counted by the case
    recovery_push: dict[str, Any] = field(default_factory=dict)
    after_recovery: list[Callable[[list[dict[str, Any]]], None]] = field(default_factory=list)

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)

    def world(self, *, store_url: str | None = None) -> harness.World:
        name = self.request.node.callspec.params["case"]
        self.world_ = self.fixture("make_world")(name, store_url=store_url)
        self.hooks = harness.record_batches(self.world_, self.monkeypatch)
        return self.world_

    @property
    def ref_loaded(self) -> int:
        return sum(s["loaded"] for s in self.reference.summaries.values())


def _committed(w: harness.World, stream: str = "lab") -> list[harness.Batch]:
    return [b for b in w.batches if b.stream == stream]


def _last_cursor(batches: list[harness.Batch]) -> str | None:
    cursors = [b.max_cursor for b in batches if b.max_cursor]
    return cursors[-1] if cursors else None


def _assert_partial_load(w: harness.World, ctx: Ctx, *, batches: int, status: str) -> None:
    """What a load fault must leave: exactly the committed batches, their watermark, nothing else."""
    committed = _committed(w)
    assert sum(b.max_cursor is not None for b in committed) == batches, committed
    assert str(w.watermark("lab")) == _last_cursor(
        committed
    )  # the last committed batch's, not the failed one's
    assert w.count("labmaster") == w.committed_loaded("lab") < ctx.reference.summaries["lab"]["loaded"]
    assert w.count("exammaster") == 0
    assert sum(w.outbox_statuses().values()) == w.count("labmaster")  # queued with the rows, nothing more
    row = w.etl_run(RUN, "lab")
    assert row["status"] == status, row
    assert (row["extracted"], row["loaded"]) == (
        sum(b.extracted for b in committed),
        w.committed_loaded("lab"),
    )


# --------------------------------------------------------------------------------------------
# extract and load


def hospital_db_lost(ctx: Ctx) -> None:
    """The hospital database's connections are cut (RST) once batch 2 is read, and it stays
    unreachable: reading batch 3 fails while batch 2 is still in the store's hands (the pipeline's
    store thread), which must commit it whole. (Cut on a commit instead, and whether batch 3 was
    already read would be a race.)"""
    proxy = ctx.fixture("hospital_proxy")
    w = ctx.world()
    cut: list[int] = []
    real = extract.read_reports

    def read_then_cut(*args: Any, **kwargs: Any) -> Any:
        for n, batch in enumerate(real(*args, **kwargs), 1):
            yield batch
            if n == 2:  # the pipeline asks for batch 3
                cut.append(proxy.down())

    ctx.monkeypatch.setattr(extract, "read_reports", read_then_cut)
    with pytest.raises(extract.SourceReadError) as failed:
        w.run("lab", RUN)
    ctx.monkeypatch.setattr(extract, "read_reports", real)
    assert cut and cut[0] >= 1, "the proxy cut no connection: the fault did not happen"
    assert LOST_CONNECTION.search(str(failed.value)), str(failed.value)[:500]
    assert str(failed.value).startswith(f"{w.source.id}/lab: reading the hospital database")
    assert "select" not in str(failed.value).lower()  # the hospital and stream, not the SQL
    _assert_partial_load(w, ctx, batches=2, status="failed")
    before = (w.watermark("lab"), w.count("labmaster"), len(w.batches))
    # Airflow's first retry while the hospital is still unreachable: fails at once, changes nothing
    with pytest.raises(extract.SourceReadError, match="refused"):
        w.run("lab", RUN)
    assert (w.watermark("lab"), w.count("labmaster"), len(w.batches)) == before
    proxy.restore()


class _PutTrigger:
    """The load's S3 client, which takes S3 down (proxy) once ``armed`` and ``after`` PDFs of
    the armed batch are safely stored: the next put and every later one find S3 down."""

    def __init__(self, client: Any, proxy: Any, *, after: int) -> None:
        self.client, self.proxy, self.after = client, proxy, after
        self.armed = threading.Event()
        self.lock = threading.Lock()
        self.started = 0
        self.stored = 0
        self.stored_enough = threading.Event()
        self.downed = threading.Event()

    def put_object(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed.is_set():
            with self.lock:
                self.started += 1
                mine = self.started
            if mine == self.after + 1:
                assert self.stored_enough.wait(30), "the first puts of the batch never finished"
                self.proxy.down()
                self.downed.set()
            elif mine > self.after + 1:
                self.downed.wait(30)
        result = self.client.put_object(*args, **kwargs)
        if self.armed.is_set():
            with self.lock:
                self.stored += 1
                if self.stored >= self.after:
                    self.stored_enough.set()
        return result


def s3_down(ctx: Ctx) -> None:
    """S3 goes down (connections reset, then refused) in the middle of batch 3's PDF puts."""
    proxy = ctx.fixture("s3_proxy")
    w = ctx.world()
    trigger = _PutTrigger(w.pdf_client, proxy, after=4)
    w.pdf_client = trigger
    ctx.hooks.arm(lambda n, b: trigger.armed.set() if n == 2 else None)
    with pytest.raises(load.ObjectStoreError, match="nothing was committed: check S3 and retry"):
        w.run("lab", RUN)
    ctx.hooks.disarm()
    assert trigger.downed.is_set() and trigger.started > 4 and proxy.stats["refusing"] == 1
    _assert_partial_load(w, ctx, batches=2, status="failed")
    # the 4 PDFs stored before S3 went down: objects no committed row points at (yet)
    assert len(w.objects() - w.referenced_objects()) == 4
    proxy.restore()
    w.pdf_client = trigger.client


def store_restarted_mid_batch(ctx: Ctx) -> None:
    """Our own PostgreSQL cluster holds the store; ``pg_ctl restart -m fast`` inside batch 3's
    transaction (its rows, outbox entries and counts are written, the watermark not yet)."""
    cluster = ctx.fixture("pg_cluster")
    w = ctx.world(store_url=cluster.create_database("store_restart_mid_batch"))
    started, real = cluster.started_at(), incremental.advance_watermark
    calls = {"n": 0}

    def restart_then_advance(conn: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            cluster.restart()
        return real(conn, **kwargs)

    ctx.monkeypatch.setattr(incremental, "advance_watermark", restart_then_advance)
    with pytest.raises(
        load.StoreWriteError, match="nothing was committed and the watermark did not move"
    ) as failed:
        w.run("lab", RUN)
    ctx.monkeypatch.setattr(incremental, "advance_watermark", real)
    assert cluster.started_at() != started, "the store was not restarted"
    assert LOST_CONNECTION.search(str(failed.value)) or "OperationalError" in str(failed.value), str(
        failed.value
    )
    _assert_partial_load(w, ctx, batches=2, status="failed")  # the failure was recorded after the restart


def store_restarted_between_batches(ctx: Ctx) -> None:
    """The store's cluster restarts after batch 2 committed: every pooled connection is dead."""
    cluster = ctx.fixture("pg_cluster")
    w = ctx.world(store_url=cluster.create_database("store_restart_between"))
    started = cluster.started_at()
    seen: dict[str, int] = {}

    def restart(n: int, b: harness.Batch) -> None:
        if n == 2:
            cluster.restart()
            seen["connects"] = w.connects["store"]

    ctx.hooks.arm(restart)
    summary = w.run("lab", RUN)  # pool_pre_ping finds the dead connections and opens new ones
    ctx.hooks.disarm()
    assert cluster.started_at() != started and "connects" in seen, "the store was not restarted"
    assert w.connects["store"] > seen["connects"], "no new store connection after the restart"
    assert summary.counts.loaded == ctx.reference.summaries["lab"]["loaded"]  # the run carried on


def _child_env(w: harness.World, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "plugins"), ROOT]),
        "HURREN_STORE_URL": w.store_url, "HURREN_S3_BUCKET_REPORTS": w.bucket, **extra,
    }  # fmt: skip


def _kill_load(ctx: Ctx, where: str) -> tuple[harness.World, list[str]]:
    hospital = ctx.fixture("hospital")
    w = ctx.world()
    args = {"sources": hospital["sources_text"], "source_id": hospital["source"].id, "stream": "lab",
            "source_url": w.source_url, "until": harness.UNTIL.isoformat(), "run_id": RUN, "dag_id": "faults_kill",
            "kill_at": 3, "where": where}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "tests.faults.kill_load", json.dumps(args)], env=_child_env(w),
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert proc.returncode == -9, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    assert lines[-1] == "KILL" and not any(x.startswith("FINISHED") for x in lines)
    w.batches += [harness.Batch.from_line(json.loads(x[6:])) for x in lines if x.startswith("BATCH ")]
    return w, [x.split(" ", 1)[1] for x in lines if x.startswith("WATERMARK ")]


def _killed_try_is_kept(ctx: Ctx, w: harness.World) -> None:
    """After the retry: the killed try is listed interrupted, with what its committed batches
    counted; the retry's try succeeded; the run's details add up over both."""
    killed = _committed(w)  # the batches the killed try committed (recorded before the retry)
    counts = (
        sum(b.extracted for b in killed),
        sum(b.loaded for b in killed),
        sum(b.quarantined for b in killed),
    )

    def check(_results: list[dict[str, Any]]) -> None:
        row = w.etl_run(RUN, "lab")
        details = json.loads(row["details"])
        first, second = details["tries"]
        assert (first["status"], second["status"], row["status"]) == ("interrupted", "success", "success")
        assert (first["extracted"], first["loaded"], first["quarantined"]) == counts
        assert details["extracted"] == row["extracted"] == first["extracted"] + second["extracted"]

    ctx.after_recovery.append(check)


def killed_before_commit(ctx: Ctx) -> None:
    """SIGKILL inside batch 3's transaction, right after its watermark UPDATE, before COMMIT."""
    w, watermarks = _kill_load(ctx, "before_commit")
    assert len(watermarks) == 3  # batch 3 got as far as writing its watermark
    _assert_partial_load(w, ctx, batches=2, status="running")  # never finished: the worker died
    assert str(w.watermark("lab")) == watermarks[1] != watermarks[2]
    # batch 3's PDFs were put before its transaction (so "after the load"); no row points at them
    assert w.objects() - w.referenced_objects()
    _killed_try_is_kept(ctx, w)


def killed_after_commit(ctx: Ctx) -> None:
    """SIGKILL right after batch 3 committed (rows and watermark together), before anything else."""
    w, watermarks = _kill_load(ctx, "after_commit")
    _assert_partial_load(w, ctx, batches=3, status="running")
    assert str(w.watermark("lab")) == watermarks[-1]
    assert w.objects() == w.referenced_objects()
    _killed_try_is_kept(ctx, w)


# --------------------------------------------------------------------------------------------
# push


def _loaded(ctx: Ctx) -> tuple[harness.World, int]:
    w = ctx.world()
    w.load_all(RUN)
    n = sum(w.outbox_statuses().values())
    assert n == ctx.ref_loaded and w.outbox_statuses() == {"queued": n}
    return w, n


def _stored_on_platform(w: harness.World) -> int:
    counts = w.platform.sim.platform.store.counts()
    return counts["labmaster"] + counts["exammaster"]


def _transport_errors(w: harness.World) -> list[str]:
    return [r.answer or "" for r in w.push_log() if r.outcome == "transport"]


def push_killed_after_answer(ctx: Ctx) -> None:
    """``python -m hurren.push run`` SIGKILLs itself after the 20th answer, before recording it
    (``tests.faults.kill_push``: the CLI's run with the runner's ``after_answer`` hook)."""
    w, n = _loaded(ctx)
    p = w.platform
    env = _child_env(w, HURREN_PLATFORM_URL=p.url, HURREN_PLATFORM_PUBLIC_KEY=p.sim.public_key,
                     HURREN_PLATFORM_ORG_CODE=p.org_code, HURREN_PLATFORM_VISITOR_CODE="faults",
                     HURREN_PLATFORM_VISITOR_KEY="faults-key")  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "tests.faults.kill_push", "20", "run", "--concurrency", "3", "--set",
                           "backoff_base_s=0.2", "--set", "max_wait_s=1", "--set", "report_batch=2"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert proc.returncode == -9, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    statuses = w.outbox_statuses()
    in_flight = statuses["sending"]
    assert 1 <= in_flight <= 2 * 3 * 2, statuses  # at most two claims of `concurrency` jobs of `report_batch`
    assert 20 - 3 * 2 <= statuses["acked"] < 20 and statuses["acked"] + in_flight + statuses["queued"] == n, (
        statuses
    )
    calls = p.settled_calls()  # the dead process's last requests are handled too
    ctx.extra_ok = calls - statuses["acked"]  # handled by the platform, answer never recorded
    assert 1 <= ctx.extra_ok <= in_flight
    ctx.recovery_push = {"lease_s": 0}  # the dead run's lease has expired (production: lease_s=600)

    def lost_then_resent(results: list[dict[str, Any]]) -> None:
        assert results[0]["total"]["lost"] == in_flight  # taken back from the dead run and sent again

    ctx.after_recovery.append(lost_then_resent)


def store_restarted_mid_push(ctx: Ctx) -> None:
    """The store's cluster restarts while a push run records its 4th job's answers: that
    transaction (and any other in flight) dies; the calls it recorded had been handled by the platform."""
    cluster = ctx.fixture("pg_cluster")
    w = ctx.world(store_url=cluster.create_database("store_restart_mid_push"))
    w.load_all(RUN)
    n = sum(w.outbox_statuses().values())
    started, real, lock, calls = cluster.started_at(), outbox.record, threading.Lock(), {"n": 0}

    def restart_then_record(conn: Any, recordings: Any, **kwargs: Any) -> Any:
        with lock:
            calls["n"] += 1
            mine = calls["n"]
        if mine == 4:
            cluster.restart()
        return real(conn, recordings, **kwargs)

    ctx.monkeypatch.setattr(outbox, "record", restart_then_record)
    with pytest.raises(OperationalError) as failed:
        w.push("restart")
    ctx.monkeypatch.setattr(outbox, "record", real)
    assert cluster.started_at() != started, "the store was not restarted"
    # the recording transaction dies with the server, or another worker finds it still down
    assert re.search("shutting down|Connection refused", str(failed.value)) or LOST_CONNECTION.search(
        str(failed.value)
    ), str(failed.value)[:500]
    statuses = w.outbox_statuses()
    assert statuses["sending"] >= 1 and statuses["acked"] < n, statuses  # answers that could not be recorded
    ctx.extra_ok = w.platform.settled_calls() - statuses["acked"]
    assert 1 <= ctx.extra_ok <= statuses["sending"]
    ctx.recovery_push = {"lease_s": 0}  # the dead run's lease has expired (production: lease_s=600)


def platform_down(ctx: Ctx) -> None:
    """Nothing listens at the platform's address (connection refused) for a whole push run."""
    w, n = _loaded(ctx)
    w.platform.proxy.refuse()
    with pytest.raises(PlatformUnavailable, match="did not answer .* nothing is lost"):
        w.push("down", max_run_s=2.5, breaker_threshold=3, breaker_cooldown_s=0.3)
    assert w.platform.received()["calls"] == {} and w.platform.proxy.stats["accepted"] == 0
    assert w.outbox_statuses() == {"queued": n}
    errors = _transport_errors(w)
    assert errors and all("ConnectError" in e for e in errors), errors[:3]
    assert len(errors) <= 3 + 12, f"{len(errors)} calls to a platform that is down: it was hammered"
    w.platform.proxy.restore()


def platform_resets_before_processing(ctx: Ctx) -> None:
    """The platform resets (RST) every call after reading it, handling nothing (simulator ``down``)."""
    w, n = _loaded(ctx)
    w.platform.faults(down=True)
    with pytest.raises(PlatformUnavailable, match="did not answer"):
        w.push("resets", max_run_s=2.5, breaker_threshold=3, breaker_cooldown_s=0.3)
    assert w.platform.injected().get("down", 0) >= 3 and _stored_on_platform(w) == 0
    assert w.outbox_statuses() == {"queued": n}
    errors = _transport_errors(w)
    assert errors and all(
        re.search(r"reset|disconnect|aborted|RemoteProtocol|ConnectError", e, re.I) for e in errors
    ), errors[:3]
    w.platform.faults(down=False)


def platform_resets_answers(ctx: Ctx) -> None:
    """The connection is reset (RST) as the answer comes back, 10 times: the platform handled and
    stored those calls, the pusher never learns it (the ambiguous failure)."""
    w, n = _loaded(ctx)
    w.platform.proxy.reset_answers(10)
    total = w.push("reset-answers", **harness.ONE_PASS)["total"]
    assert w.platform.proxy.stats["answers_reset"] == 10
    assert (total["acked"], total["retried"], total["sent"]) == (n - 10, 10, n), total
    assert w.outbox_statuses() == {"acked": n - 10, "queued": 10}
    assert _stored_on_platform(w) == n  # all stored, 10 of them unacknowledged
    assert len(_transport_errors(w)) == 10
    ctx.extra_ok = 10


def platform_slow(ctx: Ctx) -> None:
    """Every answer 20 ms late; 15 % only after the client's 0.4 s time-out (handled and stored anyway)."""
    w, n = _loaded(ctx)
    w.platform.faults(latency_ms=20, timeout_rate=0.15, timeout_s=0.8, seed=11)
    total = w.push("slow", timeout_s=0.4, **{**harness.ONE_PASS, "concurrency": 8})["total"]
    late = w.platform.injected().get("timeout", 0)
    assert late > 0 and (total["acked"], total["retried"], total["sent"]) == (n - late, late, n), (
        total,
        late,
    )
    assert w.outbox_statuses() == {"acked": n - late, "queued": late}
    assert _stored_on_platform(w) == n  # the late ones were stored too
    assert all("Timeout" in e for e in _transport_errors(w)), _transport_errors(w)[:3]
    w.platform.faults(latency_ms=0, timeout_rate=0)
    ctx.extra_ok = late


def platform_error(ctx: Ctx) -> None:
    """The platform answers ``error:simulated failure`` to 30 % of the calls (nothing stored)."""
    w, n = _loaded(ctx)
    w.platform.faults(error_rate=0.3, seed=7)
    total = w.push("errors", **harness.ONE_PASS)["total"]
    rejected = total["rejected"]
    assert rejected > 0 and total["sent"] == n and total["acked"] == n - rejected, total
    assert _stored_on_platform(w) == n - rejected and w.outbox_statuses()["rejected"] == rejected
    w.platform.faults(error_rate=0)
    assert (
        w.push("after-fix")["total"]["sent"] == 0
    )  # a rejection is not retried blindly: it waits for a human
    out = tasks.requeue_entries(
        status="rejected", error_contains="simulated failure", dry_run=False, engine=w.engine
    )
    assert out["requeued"] == rejected


def platform_http500(ctx: Ctx) -> None:
    """The platform answers HTTP 500 (an HTML page) to 40 % of the calls (nothing stored)."""
    w, n = _loaded(ctx)
    w.platform.faults(http500_rate=0.4, seed=5)
    total = w.push("http500", **harness.ONE_PASS)["total"]
    failed = w.platform.injected().get("http500", 0)
    acked = total["acked"]
    # every 500 is a retry, and only a retry; a pass that outlasts the 6 s backoff (a slow machine)
    # may already send some of them again, and those count once more as sent (and maybe acked)
    assert failed > 0 and total["retried"] == failed and total["sent"] == acked + failed, (total, failed)
    assert n - failed <= acked < n, (total, failed)
    assert w.outbox_statuses() == {"acked": acked, "queued": n - acked}
    assert _stored_on_platform(w) == acked
    assert all("HTTP 500" in e for e in _transport_errors(w)), _transport_errors(w)[:3]
    w.platform.faults(http500_rate=0)


CASES: dict[str, Callable[[Ctx], None]] = {
    f.__name__: f
    for f in (
        hospital_db_lost, s3_down, store_restarted_mid_batch, store_restarted_between_batches,
        killed_before_commit, killed_after_commit, push_killed_after_answer, store_restarted_mid_push, platform_down,
        platform_resets_before_processing, platform_resets_answers, platform_slow, platform_error,
        platform_http500,
    )
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_fault_then_recovery_then_rerun(
    case: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, reference: harness.Reference
) -> None:
    ctx = Ctx(request=request, monkeypatch=monkeypatch, reference=reference)
    CASES[case](ctx)  # the fault, proof that it happened, the partial state, the fault removed
    w = ctx.world_
    assert w is not None
    # recovery, the same for every case: Airflow retries the DAG run (both streams), then the
    # push runs until nothing is queued
    w.load_all(RUN)
    results = w.push_until_done("recovery", **ctx.recovery_push)
    for check in ctx.after_recovery:
        check(results)
    harness.assert_recovered(w, reference, extra_ok=ctx.extra_ok)
