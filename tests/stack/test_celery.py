"""Celery for real: ``scripts/airflow up --celery`` (Redis of ``scripts/services``, two Celery
workers on the stack's queue, each under a host name of its own) runs three hospitals' lab and
exam DAGs; one worker is SIGKILLed, with everything it started, in the middle of an extraction.

What must hold: both workers ran tasks; the scheduler notices the lost task (no heartbeat for
``task_instance_heartbeat_timeout``, 30 s here instead of 300), fails that try and the retry runs on
the other worker; and afterwards the fault matrix's invariants hold for every hospital and stream
(tests/faults/README.md): every run's counts balance, every source report is in the store or in
quarantine exactly once, one outbox entry per stored version, the watermark at the source's last
change. The times from the kill to the retry are printed (docs/deploy.md quotes them).

About 4-6 minutes on 2 cores.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from datetime import date

import psutil
import pytest
from sqlalchemy import create_engine, func, select, text

from hurren import spec, store
from tests.fixtures.stack import AirflowStack, running, wait_for

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
IDS = ("c0", "c1", "c2")
VICTIM_DAG = "lab_reports__c0"  # 300 lab reports in batches of 20: long enough to be killed in
EVL = "extract_validate_load"
TIMEOUT = 480
HEARTBEAT = {  # a lost task is noticed within ~30-35 s (the defaults: 300 s, checked every 10 s)
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}


@pytest.fixture(scope="module")
def region(make_region, monkeypatch_module, s3):
    return make_region(
        monkeypatch_module, "celery", seed=41, day=DAY, ids=IDS, peers=False, bucket=s3.bucket_reports,
        generate=[{"lab_reports": lab, "exam_reports": 15, "seed": 41, "lab_items": 6, "pdf_kb": 1, "defect_rate": 0.05}
                  for lab in (300, 30, 30)],
        source=[{"streams": ["lab", "exam"], "schedule": "0 0 * * *", "chunk_size": 20,
                 "pool": {"name": f"hurren_src_{sid}", "slots": 2}} for sid in IDS],
    )  # fmt: skip


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and everything it started, as a lost machine or container would be."""
    parent = psutil.Process(pid)
    victims = [*parent.children(recursive=True), parent]
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    return [p.pid for p in victims]


@pytest.fixture(scope="module")
def killed(region, make_database, tmp_path_factory):
    """The hospitals' DAGs on the Celery stack; the worker running the victim's extraction is
    killed once two of its batches are committed; every run then completes."""
    home = tmp_path_factory.mktemp("celery")
    # an admin password starting with "-", as one generated password in 64 does: `up` must still
    # create the user with it (every API call below signs in with it)
    (home / "admin-password").write_text(f"-{secrets.token_urlsafe(18)}\n")
    (home / "admin-password").chmod(0o600)
    stack = AirflowStack(home, make_database("airflow_celery"), env=HEARTBEAT, retry_delay_s=2)
    dag_ids = [f"{stream}_reports__{sid}" for sid in IDS for stream in ("lab", "exam")]
    store_engine = create_engine(region.store_url)
    with running(stack, celery=True):
        stack.wait_parsed(*dag_ids)
        stack.unpause(*dag_ids)

        def victim_mid_way():
            tis = [t for t in stack.task_instances(VICTIM_DAG, EVL) if t.state == "running" and t.hostname]
            if not tis:
                return None
            with store_engine.connect() as conn:
                done = conn.execute(
                    select(func.sum(store.run.c.extracted)).where(
                        store.run.c.source == "c0", store.run.c.stream == "lab"
                    )
                ).scalar()
            return tis[0] if (done or 0) >= 40 else None

        victim = wait_for(victim_mid_way, timeout=TIMEOUT, what="the victim's extraction to commit two batches",
                          every=0.5, diagnose=stack.logs)  # fmt: skip
        worker = victim.hostname.split("@")[0].rsplit("-", 1)[1].replace("w", "worker")
        pid = int((stack.home / "run" / f"{worker}.pid").read_text())
        killed_at = time.time()
        killed_pids = _kill_tree(pid)

        def all_done():
            runs = [r for d in dag_ids for r in stack.dag_runs(d)]
            return len(runs) >= len(dag_ids) and all(r.state == "success" for r in runs)

        wait_for(all_done, timeout=TIMEOUT, what="every hospital's run to succeed after the kill", every=2,
                 diagnose=lambda: f"{[stack.dag_runs(d) for d in dag_ids]}\n{stack.logs()}")  # fmt: skip
        tis = {d: stack.task_instances(d) for d in dag_ids}
        yield {"stack": stack, "victim": victim, "worker": worker, "killed_at": killed_at, "pids": killed_pids,
               "tis": tis, "dag_ids": dag_ids}  # fmt: skip
    store_engine.dispose()


def test_both_workers_ran_tasks(killed):
    hosts = {t.hostname for tis in killed["tis"].values() for t in tis if t.state == "success"}
    queue = killed["stack"].queue
    assert {h.split("@")[0] for h in hosts} == {f"{queue}-w1", f"{queue}-w2"}, hosts


def test_the_killed_task_reran_on_the_other_worker(killed):
    victim, stack = killed["victim"], killed["stack"]
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in killed["pids"]
    )
    tries = [t for t in killed["tis"][VICTIM_DAG] if t.task_id == EVL and t.run_id == victim.run_id]
    assert [(t.try_number, t.state) for t in tries] == [(1, "failed"), (2, "success")], tries
    first, second = tries
    assert first.hostname == victim.hostname and second.hostname != victim.hostname
    assert second.hostname.startswith(f"{stack.queue}-w")
    killed_at = killed["killed_at"]
    print(  # the figures docs/deploy.md quotes
        f"\nlost worker: try 1 failed by the scheduler {first.end_date.timestamp() - killed_at:.0f} s after the kill, "
        f"try 2 started on {second.hostname} after {second.start_date.timestamp() - killed_at:.0f} s and "
        f"finished after {second.end_date.timestamp() - killed_at:.0f} s"
    )
    assert first.end_date.timestamp() - killed_at < 120


def test_the_killed_try_is_kept_interrupted_with_its_committed_batches(killed, region):
    """The run's etl_run row: the killed try marked interrupted by the retry, with the batches it
    committed before the kill (two batches of 20 or more); the run's counts are both tries'."""
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        row = conn.execute(
            select(store.run).where(store.run.c.run_id == killed["victim"].run_id, store.run.c.source == "c0",
                                    store.run.c.stream == "lab")
        ).one()  # fmt: skip
    engine.dispose()
    details = json.loads(row.details)
    first, second = details["tries"]
    assert (first["status"], second["status"], row.status) == ("interrupted", "success", "success"), details
    assert first["extracted"] >= 40 and first["extracted"] + second["extracted"] == row.extracted


def test_nothing_lost_or_duplicated(killed, region):
    """The fault matrix's invariants (tests/faults/README.md), against the source."""
    q, outbox = store.quarantine, store.outbox
    engine = create_engine(region.store_url)
    with engine.connect() as conn:
        runs = conn.execute(select(store.run)).all()  # every run, the killed one with both its tries
        for r in runs:
            assert r.status == "success", r
            assert r.extracted == r.loaded + json.loads(r.details)["unchanged"] + r.stale + r.quarantined, r
        for sid in IDS:
            org = region.orgs[sid]
            for entity in ("labmaster", "exammaster"):
                stream = entity.removesuffix("master")
                source = create_engine(region.urls[sid])
                with source.connect() as src:
                    in_source, last_change = src.execute(
                        text(f"SELECT count(*), max(last_update_dtime) FROM {entity}")
                    ).one()
                source.dispose()
                table = store.SPEC_TABLES[entity]
                rows = conn.execute(select(table).where(table.c.org_code == org)).mappings().all()
                stored = {store.record_key(spec.entity(entity), row) for row in rows}
                held = set(
                    conn.execute(
                        select(q.c.record_key).where(
                            q.c.entity == entity, q.c.org_code == org, q.c.resolved_at.is_(None),
                            q.c.rules.not_like("%orphan_item%"),  # sub-items without a master: not a source report
                        )
                    ).scalars()
                )  # fmt: skip
                where = (sid, entity)
                assert len(rows) == len(stored) and not stored & held, where
                assert len(stored) + len(held) == in_source, (where, len(stored), len(held), in_source)
                assert sum(r.loaded for r in runs if (r.source, r.stream) == (sid, stream)) == len(stored), (
                    where
                )
                queued = conn.execute(
                    select(outbox.c.record_key).where(outbox.c.entity == entity, outbox.c.org_code == org)
                ).scalars().all()  # fmt: skip
                assert sorted(queued) == sorted(stored), where  # one outbox entry per stored version
                wm = conn.execute(
                    select(store.watermark.c.last_value).where(
                        store.watermark.c.source == sid, store.watermark.c.stream == stream)
                ).scalar_one()  # fmt: skip
                assert wm == last_change, where
    engine.dispose()
