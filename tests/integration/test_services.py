"""The local services really work: S3 objects and PostgreSQL rows round-trip, and the
``scripts/services`` script reports, starts and stops them as it says it does."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from minio import Minio
from minio.error import S3Error
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy.engine import Engine, make_url

from hurren.clients import minio_client
from hurren.settings import Settings
from tests.fixtures.services import ROOT, S3Session, run_services

pytestmark = pytest.mark.services


# --- S3 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 130_000, 6 * 1024 * 1024], ids=["empty", "1B", "130KB", "6MB-multipart"]
)
def test_s3_object_round_trip(s3: S3Session, size: int) -> None:
    data = secrets.token_bytes(size)
    key = f"lab/2024/06/01/report-{size}.pdf"
    written = s3.client.put_object(
        s3.bucket_reports,
        key,
        io.BytesIO(data),
        length=size,
        content_type="application/pdf",
        metadata={"sha256": hashlib.sha256(data).hexdigest()},
        part_size=5 * 1024 * 1024,
    )

    stat = s3.client.stat_object(s3.bucket_reports, key)
    assert stat.size == size
    assert stat.etag == written.etag
    assert stat.content_type == "application/pdf"
    assert stat.metadata.get("x-amz-meta-sha256") == hashlib.sha256(data).hexdigest()

    response = s3.client.get_object(s3.bucket_reports, key)
    try:
        read = response.read()
    finally:
        response.close()
        response.release_conn()
    assert hashlib.sha256(read).hexdigest() == hashlib.sha256(data).hexdigest()

    listed = [
        o.object_name for o in s3.client.list_objects(s3.bucket_reports, prefix="lab/2024/", recursive=True)
    ]
    assert key in listed

    s3.client.remove_object(s3.bucket_reports, key)
    with pytest.raises(S3Error) as excinfo:
        s3.client.stat_object(s3.bucket_reports, key)
    assert excinfo.value.code in {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


def test_s3_session_buckets_are_fresh(s3: S3Session) -> None:
    for bucket in s3.buckets:
        assert s3.client.bucket_exists(bucket)
        assert bucket.startswith("hurren-test-")
    assert list(s3.client.list_objects(s3.bucket_docs, recursive=True)) == []


def test_s3_default_buckets_exist(services: Settings) -> None:
    client = minio_client(services)
    assert client.bucket_exists(services.s3_bucket_reports)
    assert client.bucket_exists(services.s3_bucket_docs)


@pytest.mark.parametrize(
    ("access_key", "secret_key"),
    [("hurren", "not-the-secret"), (None, None)],
    ids=["wrong-secret", "anonymous"],
)
def test_s3_refuses_other_credentials(
    services: Settings, access_key: str | None, secret_key: str | None
) -> None:
    client = Minio(
        services.s3_endpoint, access_key=access_key, secret_key=secret_key, secure=False, region="us-east-1"
    )
    with pytest.raises(S3Error) as excinfo:
        list(client.list_objects(services.s3_bucket_reports))
    assert excinfo.value.code in {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"}


# --- PostgreSQL -----------------------------------------------------------------------------------


def test_store_row_round_trip(store_engine: Engine) -> None:
    metadata = MetaData()
    probe = Table(
        "services_probe",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(50), nullable=False),
        Column("report_time", DateTime, nullable=False),
    )
    metadata.create_all(store_engine)
    row = {"id": 1, "name": "血常规 (CBC)", "report_time": datetime(2024, 6, 1, 8, 30, 15)}
    with store_engine.begin() as conn:
        conn.execute(probe.insert(), [row])
    with store_engine.connect() as conn:
        got = conn.execute(select(probe)).mappings().all()
        database = conn.execute(text("select current_database()")).scalar_one()
    assert [dict(r) for r in got] == [row]
    assert database.startswith("hurren_test_")
    assert store_engine.dialect.driver == "psycopg"


def test_store_role_can_create_hospital_databases(make_database: Callable[..., str]) -> None:
    url = make_database("hospital_probe")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("create table labmaster (report_no varchar(64) primary key)"))
            conn.execute(text("insert into labmaster values (:no)"), {"no": "R-1"})
            assert conn.execute(text("select report_no from labmaster")).scalars().all() == ["R-1"]
            assert conn.execute(text("select current_database()")).scalar_one().startswith("hospital_probe_")
    finally:
        engine.dispose()


def test_test_settings_point_at_session_places(
    test_settings: Settings, store_engine: Engine, s3: S3Session
) -> None:
    assert test_settings.store_url == store_engine.url.render_as_string(hide_password=False)
    assert (test_settings.s3_bucket_reports, test_settings.s3_bucket_docs) == s3.buckets


# --- scripts/services ------------------------------------------------------------------------------


def test_status_says_shared_services_are_up(services: Settings) -> None:
    result = run_services("status", "pg", "s3", timeout=60)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["pg", "up"] for line in lines), result.stdout
    assert any(line.split()[:2] == ["s3", "up"] for line in lines), result.stdout


def test_up_twice_is_idempotent_and_fast(services: Settings) -> None:
    started = time.monotonic()
    result = run_services("up", "pg", "s3", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout
    assert "pg: already running" in result.stdout
    assert "s3: already running" in result.stdout
    assert elapsed < 10, f"second up took {elapsed:.1f}s"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_s3_block() -> int:
    """An S3 port P whose whole weed block (P..P+9 and the admin port P-9991) is free."""
    for _ in range(200):
        base = secrets.randbelow(20_000) + 20_000
        if _ports_free([*range(base, base + 10), base - 9991]):
            return base
    raise RuntimeError("no free block of ports for a second weed mini")


@pytest.fixture
def isolated_services() -> Iterator[dict[str, str]]:
    """Environment for a second, private set of services (own dir and ports); torn down after."""
    services_dir = ROOT / ".services" / f"selftest-{secrets.token_hex(4)}"
    env = {
        "HURREN_SERVICES_DIR": str(services_dir),
        "HURREN_PG_PORT": str(_free_port()),
        "HURREN_S3_PORT": str(_free_s3_block()),
        "HURREN_SIM_PORT": str(_free_port()),
    }
    try:
        yield env
    finally:
        run_services("down", "pg", "s3", env=env)
        shutil.rmtree(services_dir, ignore_errors=True)


def test_lifecycle_up_status_down(isolated_services: dict[str, str]) -> None:
    env = isolated_services
    pg_port, s3_port = env["HURREN_PG_PORT"], env["HURREN_S3_PORT"]

    before = run_services("status", "pg", "s3", env=env)
    assert before.returncode == 1, before.stdout
    assert f"pg   down  port {pg_port}" in before.stdout
    assert f"s3   down  port {s3_port}" in before.stdout

    first = run_services("up", "pg", "s3", env=env)
    assert first.returncode == 0, first.stdout
    assert "pg: started" in first.stdout and "s3: started" in first.stdout

    up = run_services("status", "pg", "s3", env=env)
    assert up.returncode == 0, up.stdout
    assert f"pg   up    port {pg_port}" in up.stdout
    assert f"s3   up    port {s3_port}" in up.stdout

    started = time.monotonic()
    second = run_services("up", "pg", "s3", env=env)
    assert second.returncode == 0, second.stdout
    assert "pg: already running" in second.stdout and "s3: already running" in second.stdout
    assert time.monotonic() - started < 10

    # the private instance works with its own settings
    private = Settings.from_env({**os.environ, **env})
    engine = create_engine(private.store_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select current_database()")).scalar_one() == "hurren_store"
    finally:
        engine.dispose()
    client = minio_client(private)
    assert client.bucket_exists(private.s3_bucket_reports)

    down = run_services("down", "pg", "s3", env=env)
    assert down.returncode == 0, down.stdout
    assert "pg: stopped" in down.stdout and "s3: stopped" in down.stdout

    after = run_services("status", "pg", "s3", env=env)
    assert after.returncode == 1, after.stdout
    assert "pg   down" in after.stdout and "s3   down" in after.stdout

    again = run_services("down", "pg", "s3", env=env)
    assert again.returncode == 0, again.stdout
    assert "not running" in again.stdout


def test_status_exits_1_unless_every_named_service_is_up(
    isolated_services: dict[str, str], services: Settings
) -> None:
    # a private services dir, but pointed at the shared PostgreSQL: pg is up (not started from that
    # dir), the private S3 is not
    env = {**isolated_services, "HURREN_PG_PORT": str(make_url(services.store_url).port)}
    both = run_services("status", "pg", "s3", env=env)
    assert both.returncode == 1, both.stdout
    assert "not started by this script" in both.stdout
    assert "s3   down" in both.stdout
    pg_only = run_services("status", "pg", env=env)
    assert pg_only.returncode == 0, pg_only.stdout


def test_mariadb_lifecycle_up_status_down(isolated_services: dict[str, str]) -> None:
    """MariaDB on its own datadir and port: initialised and started, idempotent, the tests' account
    can create a utf8mb4 database, stopped."""
    env = {**isolated_services, "HURREN_MARIADB_PORT": str(_free_port())}
    port = env["HURREN_MARIADB_PORT"]
    try:
        assert run_services("status", "mariadb", env=env).returncode == 1
        first = run_services("up", "mariadb", env=env)
        assert first.returncode == 0 and "mariadb: started" in first.stdout, first.stdout
        assert "initialising a new datadir" in first.stdout
        second = run_services("up", "mariadb", env=env)
        assert "mariadb: already running" in second.stdout, second.stdout
        up = run_services("status", "mariadb", env=env)
        assert up.returncode == 0 and f"mariadb up    port {port}" in up.stdout, up.stdout
        server = create_engine(
            f"mysql+pymysql://hurren:hurren@127.0.0.1:{port}/information_schema?charset=utf8mb4"
        )
        try:
            with server.connect() as conn:
                conn.execute(text("CREATE DATABASE hurren_selftest CHARACTER SET utf8mb4"))
                assert conn.execute(text("SELECT @@bind_address, @@character_set_server")).one() == (
                    "127.0.0.1",
                    "utf8mb4",
                )
                user = conn.execute(text("SELECT CURRENT_USER()")).scalar_one()
                assert user == "hurren@127.0.0.1"
                conn.execute(text("DROP DATABASE hurren_selftest"))
        finally:
            server.dispose()
        down = run_services("down", "mariadb", env=env)
        assert down.returncode == 0 and "mariadb: stopped" in down.stdout, down.stdout
        assert run_services("status", "mariadb", env=env).returncode == 1
    finally:
        run_services("down", "mariadb", env=env)


def test_redis_lifecycle_up_status_down(isolated_services: dict[str, str]) -> None:
    """Redis (the Celery broker of scripts/airflow up --celery) on its own port: started,
    idempotent, on loopback, refusing a client without its password, stopped."""
    import redis

    env = {
        **isolated_services,
        "HURREN_REDIS_PORT": str(_free_port()),
        "HURREN_REDIS_PASSWORD": "selftest-pw",
    }
    port = int(env["HURREN_REDIS_PORT"])
    try:
        assert run_services("status", "redis", env=env).returncode == 1
        first = run_services("up", "redis", env=env)
        assert first.returncode == 0 and "redis: started" in first.stdout, first.stdout
        second = run_services("up", "redis", env=env)
        assert "redis: already running" in second.stdout, second.stdout
        up = run_services("status", "redis", env=env)
        assert up.returncode == 0 and f"redis up    port {port}" in up.stdout, up.stdout
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        client = redis.Redis(port=port, password="selftest-pw")
        assert client.ping() and client.config_get("bind") == {"bind": "127.0.0.1"}
        client.close()
        down = run_services("down", "redis", env=env)
        assert down.returncode == 0 and "redis: stopped" in down.stdout, down.stdout
        assert run_services("status", "redis", env=env).returncode == 1
    finally:
        run_services("down", "redis", env=env)
