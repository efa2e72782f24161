"""The fault matrix's world: one store, one bucket and the platform per case, the runs, the
snapshots, and the invariants every case must end with.

A :class:`World` is what one fault case works in: a fresh store database (on the shared
PostgreSQL, or on the throwaway cluster for the restart cases), a fresh S3 bucket, the shared
hospital database reached through its :class:`~tests.faults.proxy.FaultProxy`, S3 reached
through its proxy, and the simulator (emptied) reached through its proxy. Engines and clients
are built by the production constructors (``hurren.clients``; the source engine as
``hurren.source_engines.source_engine`` builds it), so pool pre-ping and client retries are the real ones.

:func:`assert_recovered` is the matrix's promise, identical for every case (see README.md).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from minio import Minio
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine

from hurren import load, pipeline, store
from hurren.clients import minio_client, store_engine
from hurren.push.connection import PlatformConfig
from hurren.push.options import PushOptions
from hurren.rules import load_rulebook
from hurren.settings import Settings
from hurren.sources import Source
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit.simulator import Simulator

DAY = date(2024, 3, 11)  # the synthetic hospital day
UNTIL = datetime(2024, 3, 12, tzinfo=ZoneInfo("Asia/Shanghai"))  # every run's data interval end
STREAMS = {"lab": ("labmaster", "lab_subitem"), "exam": ("exammaster", "exam_subitem")}
SPEC_TABLES = ("labmaster", "lab_subitem", "exammaster", "exam_subitem")

# Push options for tests: short backoffs and waits (production waits minutes; the logic is the same).
FAST_PUSH = {"concurrency": 4, "backoff_base_s": 0.2, "backoff_max_s": 0.5, "max_wait_s": 3, "max_run_s": 60,
             "breaker_threshold": 8, "breaker_cooldown_s": 0.2, "breaker_max_cooldown_s": 0.5}  # fmt: skip
# One pass over the queue: every due version is tried once; a failed one is due again only after
# 3-6 s (backoff with jitter), later than such a run lasts (about 1-1.5 s), and the run does not
# wait for it. (Production: 15-30 s after a first failure; the next run 15 min later.)
ONE_PASS = {"max_wait_s": 0, "breaker_threshold": 1000, "backoff_base_s": 6, "backoff_max_s": 6}
# The recovery runs wait for what falls due within 7 s (those retries).
RECOVERY_PUSH = {"max_wait_s": 7}
# A call's time-out in every push (the reference's too) but the one that tests time-outs: ample on a
# loaded machine, since an answer lost to the client's own time-out is an ok that no case counts.
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Batch:
    """One committed batch (a ``load_reports`` call that returned): its counts as committed."""

    run_id: str
    stream: str
    extracted: int
    loaded: int
    unchanged: int
    stale: int
    quarantined: int
    max_cursor: str | None

    @classmethod
    def from_counts(cls, run_id: str, stream: str, counts: Any, max_cursor: datetime | None) -> Batch:
        return cls(run_id, stream, counts.extracted, counts.loaded, counts.unchanged, counts.stale, counts.quarantined,
                   str(max_cursor) if max_cursor else None)  # fmt: skip

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> Batch:
        return cls(line["run_id"], line["stream"], line["extracted"], line["loaded"], line["unchanged"],
                   line["stale"], line["quarantined"], line["max_cursor"])  # fmt: skip


@dataclass
class Platform:
    """The simulator and the proxy in front of it."""

    sim: Simulator
    proxy: Any  # FaultProxy
    org_code: str
    org_name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}{self.sim.config.path}"

    def config(self, *, timeout_s: float = CALL_TIMEOUT_S, direct: bool = False) -> PlatformConfig:
        from hurren.platform import Credential

        credential = Credential(org_code=self.org_code, org_name=self.org_name, visitor_code="faults",
                                visitor_key="faults-key")  # fmt: skip
        return PlatformConfig(endpoint=self.sim.url if direct else self.url, public_key=self.sim.public_key,
                              credential=credential, timeout_s=timeout_s, connect_timeout_s=timeout_s, spec_options=DEFAULT_OPTIONS)  # fmt: skip

    def faults(self, **values: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.sim.admin_url}/faults", json=values, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def reset(self) -> None:
        response = httpx.post(f"{self.sim.admin_url}/reset", json={}, timeout=10)
        assert response.status_code == 200, response.text

    def received(self) -> dict[str, Any]:
        return httpx.get(f"{self.sim.admin_url}/received", timeout=10).raise_for_status().json()

    def injected(self) -> dict[str, int]:
        return httpx.get(f"{self.sim.admin_url}/faults", timeout=10).raise_for_status().json()["injected"]

    def settled_calls(self, method: str = "ArchiveAutoReport") -> int:
        """Calls the simulator handled, once the count stops moving (a killed client's requests
        are still being handled for a moment)."""
        last = -1
        while True:
            now = self.received()["calls"].get(method, 0)
            if now == last:
                return now
            last = now
            time.sleep(0.4)


@dataclass
class World:
    name: str
    source: Source
    source_url: str  # the hospital database, through its proxy
    store_url: str
    settings: Settings  # store, bucket and S3 endpoint of this world (what a task or the CLI reads)
    pdf_settings: Settings  # the same, with S3 through its proxy: what the load writes PDFs with
    s3: Minio  # direct, for inspection
    bucket: str
    platform: Platform
    until: datetime
    batches: list[Batch] = field(default_factory=list)
    summaries: list[tuple[str, str, dict[str, Any]]] = field(
        default_factory=list
    )  # (run_id, stream, summary)
    connects: Counter[str] = field(default_factory=Counter)  # new DBAPI connections per engine
    pdf_client: Any = None  # what load.Pdfs gets (a wrapper of the proxied client, for triggers)

    def __post_init__(self) -> None:
        self.engine = store_engine(self.settings)  # production: pool_pre_ping=True
        self.source_engine = create_engine(
            self.source_url, pool_pre_ping=True
        )  # as hurren.source_engines does
        for name, engine in (("store", self.engine), ("source", self.source_engine)):
            event.listen(engine, "connect", lambda *_a, _n=name: self.connects.update([_n]))
        self.pdf_client = minio_client(self.pdf_settings)
        store.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self.source_engine.dispose()

    # -- runs ---------------------------------------------------------------------------------

    def run(self, stream: str, run_id: str) -> pipeline.RunSummary:
        """One real ``pipeline.run_stream`` (incremental, pandas validator)."""
        summary = pipeline.run_stream(
            source=self.source, stream=stream, source_engine=self.source_engine, store_engine=self.engine,
            pdfs=load.Pdfs(client=self.pdf_client, bucket=self.bucket), run_id=run_id, dag_id=f"faults_{self.name}",
            until=self.until, validator="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
        )  # fmt: skip
        self.summaries.append((run_id, stream, summary.as_dict()))
        return summary

    def load_all(self, run_id: str) -> None:
        for stream in STREAMS:
            self.run(stream, run_id)

    def push_options(self, **overrides: Any) -> PushOptions:
        return PushOptions.from_mapping({**FAST_PUSH, **overrides})

    def push(
        self, run_id: str, *, timeout_s: float = CALL_TIMEOUT_S, raise_when_down: bool = True, **options: Any
    ) -> dict[str, Any]:
        """One real push run, as the push_reports DAG's task does it (``hurren.push.tasks.run_push``)."""
        from hurren.push import tasks

        return tasks.run_push(options=self.push_options(**options), run_id=run_id,
                              platform=self.platform.config(timeout_s=timeout_s), settings_=self.settings,
                              raise_when_down=raise_when_down)  # fmt: skip

    def push_until_done(self, run_id: str, **options: Any) -> list[dict[str, Any]]:
        """Push runs until nothing is queued (at most three): the recovery."""
        results = []
        for i in range(3):
            results.append(self.push(f"{run_id}-{i}", **{**RECOVERY_PUSH, **options}))
            if not self.outbox_statuses().get("queued"):
                break
        return results

    # -- what is in the store, S3 and the platform ------------------------------------------

    def watermark(self, stream: str) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(select(store.watermark.c.last_value).where(
                store.watermark.c.source == self.source.id, store.watermark.c.stream == stream)).scalar_one_or_none()  # fmt: skip

    def etl_runs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(store.run).order_by(store.run.c.id)).mappings()]

    def etl_run(self, run_id: str, stream: str) -> dict[str, Any]:
        [row] = [r for r in self.etl_runs() if r["run_id"] == run_id and r["stream"] == stream]
        return row

    def count(self, entity: str) -> int:
        table = store.SPEC_TABLES[entity]
        with self.engine.connect() as conn:
            return len(conn.execute(select(table.c.etl_content_hash)).all())

    def referenced_objects(self) -> set[str]:
        keys: set[str] = set()
        with self.engine.connect() as conn:
            for master, _ in STREAMS.values():
                table = store.SPEC_TABLES[master]
                keys |= {k for (k,) in conn.execute(select(table.c.pdf_object_key))}
        return keys

    def objects(self) -> set[str]:
        return {o.object_name for o in self.s3.list_objects(self.bucket, recursive=True)}

    def outbox_statuses(self) -> Counter[str]:
        with self.engine.connect() as conn:
            return Counter(s for (s,) in conn.execute(select(store.outbox.c.status)))

    def outbox(self) -> list[Any]:
        with self.engine.connect() as conn:
            return conn.execute(select(store.outbox).order_by(store.outbox.c.id)).all()

    def push_log(self) -> list[Any]:
        with self.engine.connect() as conn:
            return conn.execute(select(store.push_log).order_by(store.push_log.c.id)).all()

    def committed_loaded(self, stream: str) -> int:
        return sum(b.loaded for b in self.batches if b.stream == stream)


# --------------------------------------------------------------------------------------------
# recording committed batches in this process


@dataclass
class Hooks:
    """``after(n, batch)``: called once batch n (1-based, batches with masters) has committed."""

    after: Callable[[int, Batch], None] | None = None
    batches_with_masters: int = 0

    def arm(self, after: Callable[[int, Batch], None]) -> None:
        self.after, self.batches_with_masters = after, 0

    def disarm(self) -> None:
        self.after = None


def record_batches(world: World, monkeypatch: Any) -> Hooks:
    """Wrap ``load.load_reports`` (what the pipeline calls per batch): a call that returns has
    committed its batch; record it in ``world.batches``, then call ``hooks.after(n, batch)`` —
    where a case injects its fault "after batch n committed"."""
    real = load.load_reports
    hooks = Hooks()

    def recording(engine: Any, batch: Any, **kwargs: Any) -> Any:
        counts = real(engine, batch, **kwargs)
        b = Batch.from_counts(kwargs["run_id"], batch.stream, counts, batch.max_cursor)
        world.batches.append(b)
        if batch.max_cursor is not None:
            hooks.batches_with_masters += 1
            if hooks.after is not None:
                hooks.after(hooks.batches_with_masters, b)
        return counts

    monkeypatch.setattr(load, "load_reports", recording)
    return hooks


# --------------------------------------------------------------------------------------------
# snapshots


def store_snapshot(engine: Engine) -> dict[str, Any]:
    """Every spec table's rows (without load times and run ids), the quarantine, the watermarks."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for name in SPEC_TABLES:
            t = store.SPEC_TABLES[name]
            cols = [c for c in t.c if c.name not in ("etl_loaded_at", "etl_run_id")]
            out[name] = sorted(tuple(map(str, r)) for r in conn.execute(select(*cols)))
        q = store.quarantine
        out["quarantine"] = sorted(
            (r.entity, r.record_key, r.content_hash, r.rules, str(r.resolved_at is None))
            for r in conn.execute(select(q))
        )
        wm = store.watermark
        out["watermark"] = sorted((r.source, r.stream, str(r.last_value)) for r in conn.execute(select(wm)))
    return out


def s3_snapshot(client: Minio, bucket: str) -> list[tuple[str, int, str]]:
    return sorted((o.object_name, o.size, o.etag) for o in client.list_objects(bucket, recursive=True))


def outbox_snapshot(engine: Engine) -> list[tuple[str, str, str, str, str]]:
    with engine.connect() as conn:
        return sorted((r.entity, r.record_key, r.content_hash, r.action, r.status)
                      for r in conn.execute(select(store.outbox)))  # fmt: skip


def platform_snapshot(sim: Simulator) -> dict[tuple[str, tuple[str, ...]], Any]:
    """Every report the simulator holds: its fields, sub-items, PDF digest, whether voided."""
    out = {}
    for kind in STREAMS:
        for r in sim.platform.store.report_keys(kind):
            key = tuple(r["key"].values())
            got = sim.platform.store.report(kind, key)
            items = sorted(json.dumps(i, sort_keys=True, ensure_ascii=False) for i in got.items)
            out[kind, key] = (json.dumps(got.master, sort_keys=True, ensure_ascii=False), tuple(items),
                              r["pdf_sha256"], r["pdf_bytes"], r["voided_at"])  # fmt: skip
    return out


@dataclass
class Reference:
    """What a clean run (no proxies, no faults) leaves: every case must end exactly like this."""

    summaries: dict[str, dict[str, Any]]  # stream -> the run's summary
    store: dict[str, Any]
    objects: list[tuple[str, int, str]]
    outbox: list[tuple[str, str, str, str, str]]
    platform: dict[tuple[str, tuple[str, ...]], Any]


# --------------------------------------------------------------------------------------------
# the invariants


def _diff(name: str, got: Any, want: Any) -> str:
    got_set, want_set = set(got), set(want)
    return (f"{name}: {len(got)} vs {len(want)} expected; extra {sorted(got_set - want_set)[:3]}, "
            f"missing {sorted(want_set - got_set)[:3]}")  # fmt: skip


def assert_recovered(world: World, ref: Reference, *, extra_ok: int) -> None:
    """The promise after recovery and re-run, the same for every case.

    ``extra_ok``: calls the platform handled (answered ok) whose answer never reached the outbox
    (dropped, too late, reset, or the pusher was killed before recording it) — counted by the case
    from its own fault. The platform may process a version twice; it must hold it once.
    """
    # 1. counts: every committed batch and every finished run adds up; the run rows hold exactly
    #    the committed batches; each valid version was written exactly once over all runs
    for b in world.batches:
        assert b.extracted == b.loaded + b.unchanged + b.stale + b.quarantined, b
    for run_id, stream, s in world.summaries:
        assert s["extracted"] == s["loaded"] + s["unchanged"] + s["stale"] + s["quarantined"], (
            run_id,
            stream,
            s,
        )
    rows = world.etl_runs()
    for r in rows:
        mine = [b for b in world.batches if (b.run_id, b.stream) == (r["run_id"], r["stream"])]
        got = (r["extracted"], r["loaded"], r["stale"], r["quarantined"])
        want = tuple(
            sum(getattr(b, k) for b in mine) for k in ("extracted", "loaded", "stale", "quarantined")
        )
        assert got == want, f"etl_run {r['run_id']}/{r['stream']} holds {got}, its committed batches {want}"
        if r["details"]:
            d = json.loads(r["details"])
            assert d["extracted"] == d["loaded"] + d["unchanged"] + d["stale"] + d["quarantined"], d
    for stream in STREAMS:
        last = [r for r in rows if r["stream"] == stream][-1]
        assert last["status"] == "success", last
        loaded = world.committed_loaded(stream)
        assert loaded == ref.summaries[stream]["loaded"], (
            f"{stream}: {loaded} versions written over all runs, a clean run writes "
            f"{ref.summaries[stream]['loaded']}: something was written twice or never"
        )
    # 2. extracted = loaded + quarantined: the store holds every valid report once and the
    #    quarantine every held one once, exactly as after a clean run (no duplicates, no gaps)
    snap = store_snapshot(world.engine)
    for part, want in ref.store.items():
        assert snap[part] == want, _diff(part, snap[part], want)
    for stream, (master, _) in STREAMS.items():
        held = {(q[1], q[2]) for q in snap["quarantine"] if q[0] == master}
        s = ref.summaries[stream]
        assert len(snap[master]) + len(held) == s["extracted"] == s["loaded"] + s["quarantined"], stream
    # 3. S3: exactly the PDFs the store points at (content-addressed keys; no orphans)
    objects = s3_snapshot(world.s3, world.bucket)
    assert objects == ref.objects, _diff("objects", objects, ref.objects)
    assert {o[0] for o in objects} == world.referenced_objects()
    # 4. the outbox: one entry per stored version, every one acknowledged, one ok each, no call after it
    entries = world.outbox()
    assert outbox_snapshot(world.engine) == ref.outbox, _diff(
        "outbox", outbox_snapshot(world.engine), ref.outbox
    )
    assert len(entries) == len(snap["labmaster"]) + len(snap["exammaster"])
    logs = world.push_log()
    oks = Counter(r.outbox_id for r in logs if r.outcome == "ok")
    assert set(oks) == {e.id for e in entries} and set(oks.values()) == {1}, oks
    ok_at = {r.outbox_id: r.id for r in logs if r.outcome == "ok"}
    assert not [r for r in logs if r.id > ok_at[r.outbox_id]], "a call after the acknowledgement"
    # 5. the platform holds every valid version once, field by field as after a clean run, and
    #    said ok once per acknowledgement plus once per answer that was lost
    held_now = platform_snapshot(world.platform.sim)
    assert held_now == ref.platform, _diff("platform", held_now, ref.platform)
    answers = world.platform.received()["answers"]
    transport = [(r.outbox_id, r.answer) for r in logs if r.outcome == "transport"]
    assert answers.get("ok", 0) == len(entries) + extra_ok, (answers, len(entries), extra_ok, transport)


def new_bucket(client: Minio, name: str) -> str:
    client.make_bucket(name)
    return name


def settings_for(base: Settings, *, store_url: str, bucket: str, s3_endpoint: str | None = None) -> Settings:
    return dataclasses.replace(base, store_url=store_url, s3_bucket_reports=bucket,
                               s3_endpoint=s3_endpoint or base.s3_endpoint)  # fmt: skip
