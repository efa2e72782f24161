"""Fixtures of the fault matrix: the hospital, the proxies, the simulator, the reference run.

Everything here is this directory's own: a hospital database and store databases made with the
shared ``make_database`` fixture (dropped at the end of the session), S3 buckets of its own, a
simulator in this process on a free port, proxies on free ports, and — only when a case asks for
it — a throwaway PostgreSQL cluster. The shared services on 55432 / 58333 / 58080 are never
stopped, restarted or slowed down.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from minio.deleteobjects import DeleteObject
from sqlalchemy.engine import make_url

from hurren import crypto, sources
from hurren.clients import minio_client
from hurren.settings import Settings
from hurren_testkit import synthetic
from hurren_testkit.simulator import Simulator, SimulatorConfig
from tests.faults import harness
from tests.faults.pgcluster import ThrowawayCluster
from tests.faults.proxy import FaultProxy

DAY, UNTIL = harness.DAY, harness.UNTIL
LAB, EXAM = 60, 30  # reports in the hospital's day (about 15 % with one defect each)
CHUNK = 12  # masters per batch: the lab stream loads in 5 batches, exam in 3
SEED = 9091


@pytest.fixture(scope="session")
def hospital(services: Settings, make_database: Callable[..., str]) -> dict[str, Any]:
    """One synthetic hospital day in its own database on the shared PostgreSQL (read-only after)."""
    [org] = synthetic.make_hospitals(1, seed=SEED)
    url = make_database("hospital_faults")
    synthetic.generate_hospital_day(
        url, org=org, day=DAY, lab_reports=LAB, exam_reports=EXAM, seed=SEED, defect_rate=0.15, pdf_kb=1,
        lab_items=4,
    )  # fmt: skip
    body = {"id": "faults", "org_code": org.org_code, "org_name": org.name, "conn_id": "hurren_src_faults",
            "dialect": "postgresql", "chunk_size": CHUNK}  # fmt: skip
    text = json.dumps({"defaults": {"initial_value": "2024-01-01 00:00:00"}, "hospitals": [body]})
    return {"org": org, "url": url, "sources_text": text, "source": sources.parse_sources(text).get("faults")}


def _pg_address(settings: Settings) -> tuple[str, int]:
    u = make_url(settings.store_url)
    return (u.host or "127.0.0.1", int(u.port or 5432))


@pytest.fixture(scope="session")
def hospital_proxy(services: Settings) -> Iterator[FaultProxy]:
    """The hospital database's network path: a proxy in front of the shared PostgreSQL."""
    proxy = FaultProxy(_pg_address(services), name="hospital-db")
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def s3_proxy(services: Settings) -> Iterator[FaultProxy]:
    """The load's path to S3: a proxy in front of the shared S3 server."""
    host, _, port = services.s3_endpoint.rpartition(":")
    proxy = FaultProxy((host or "127.0.0.1", int(port)), name="s3")
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def platform(hospital: dict[str, Any]) -> Iterator[harness.Platform]:
    """A platform simulator of our own (in this process, free port, fresh SM2 key pair; any
    well-formed credential passes) behind a proxy."""
    private, _ = crypto.generate_keypair()
    with Simulator(config=SimulatorConfig(port=0, private_key=private)) as sim:
        proxy = FaultProxy((sim.host, sim.port), name="platform")
        yield harness.Platform(
            sim=sim, proxy=proxy, org_code=hospital["org"].org_code, org_name=hospital["org"].name
        )
        proxy.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL cluster of the matrix's own, for the store-restart cases (started on first use)."""
    cluster = ThrowawayCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def buckets(services: Settings) -> Iterator[Callable[[str], str]]:
    """``buckets(case) -> name``: a new S3 bucket; all of them emptied and removed at the end."""
    client = minio_client(services)
    made: list[str] = []
    stem = f"hurren-faults-{secrets.token_hex(3)}"

    def make(case: str) -> str:
        name = f"{stem}-{case.replace('_', '-')}"[:63]
        client.make_bucket(name)
        made.append(name)
        return name

    yield make
    for bucket in made:
        names = [o.object_name for o in client.list_objects(bucket, recursive=True) if o.object_name]
        errors = list(client.remove_objects(bucket, [DeleteObject(n) for n in names]))
        assert not errors, errors[:3]
        client.remove_bucket(bucket)


def _via(url: str, proxy: FaultProxy) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def reference(
    services: Settings, hospital: dict[str, Any], make_database: Callable[..., str],
    buckets: Callable[[str], str], platform: harness.Platform,
) -> harness.Reference:  # fmt: skip
    """A clean run, direct to every service (no proxy): load both streams, push everything."""
    platform.reset()
    url = make_database("hurren_faults_ref")
    bucket = buckets("reference")
    s = harness.settings_for(services, store_url=url, bucket=bucket)
    world = harness.World(name="reference", source=hospital["source"], source_url=hospital["url"], store_url=url,
                          settings=s, pdf_settings=s, s3=minio_client(services), bucket=bucket, platform=platform,
                          until=UNTIL)  # fmt: skip
    try:
        summaries = {stream: world.run(stream, "reference").as_dict() for stream in harness.STREAMS}
        from hurren.push import tasks

        result = tasks.run_push(options=world.push_options(), run_id="reference",
                                platform=platform.config(direct=True), settings_=s)  # fmt: skip
        total = result["total"]
        entries = summaries["lab"]["loaded"] + summaries["exam"]["loaded"]
        assert total["acked"] == total["sent"] == entries, result
        ref = harness.Reference(
            summaries=summaries,
            store=harness.store_snapshot(world.engine),
            objects=harness.s3_snapshot(world.s3, bucket),
            outbox=harness.outbox_snapshot(world.engine),
            platform=harness.platform_snapshot(platform.sim),
        )
    finally:
        world.close()
    # the data exercises what the matrix needs: several batches, held reports, PDFs, pushes
    for stream, n in (("lab", LAB), ("exam", EXAM)):
        s_ = summaries[stream]
        assert s_["batches"] >= 3 and s_["quarantined"] > 0 and s_["extracted"] >= n, s_
    assert len(ref.objects) == entries and len(ref.platform) == entries
    return ref


@pytest.fixture
def make_world(
    services: Settings, hospital: dict[str, Any], make_database: Callable[..., str],
    buckets: Callable[[str], str], platform: harness.Platform, hospital_proxy: FaultProxy,
    s3_proxy: FaultProxy, reference: harness.Reference,
) -> Iterator[Callable[..., harness.World]]:  # fmt: skip
    """``make_world(case, store_url=None)``: a fresh store (or the given one), bucket and an
    emptied simulator; the hospital, S3 (for the load's PDFs) and the platform through proxies
    that pass traffic. The proxies are restored afterwards whatever the case did to them."""
    worlds: list[harness.World] = []

    def make(case: str, *, store_url: str | None = None) -> harness.World:
        for proxy in (hospital_proxy, s3_proxy, platform.proxy):
            proxy.restore()
            proxy.stats.clear()
        platform.reset()
        url = store_url or make_database(f"hurren_faults_{case}"[:40])
        bucket = buckets(case)
        s = harness.settings_for(services, store_url=url, bucket=bucket)
        world = harness.World(
            name=case, source=hospital["source"], source_url=_via(hospital["url"], hospital_proxy), store_url=url,
            settings=s, pdf_settings=harness.settings_for(s, store_url=url, bucket=bucket,
                                                          s3_endpoint=f"127.0.0.1:{s3_proxy.port}"),
            s3=minio_client(services), bucket=bucket, platform=platform, until=UNTIL,
        )  # fmt: skip
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()
    for proxy in (hospital_proxy, s3_proxy, platform.proxy):
        proxy.restore()
    platform.reset()
