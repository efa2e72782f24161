"""The store's and S3's credentials from Airflow connections (``hurren_store``, ``hurren_s3``), the
environment's where there are none: real PostgreSQL, real S3, real Airflow connection lookups
(``AIRFLOW_CONN_…``, the environment secrets backend)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from hurren.clients import minio_client, store_engine
from hurren.settings import Settings
from hurren.site import Site, SiteError

pytestmark = pytest.mark.services


@pytest.fixture
def wrong_env(services: Settings) -> dict[str, str]:
    """The environment of a site whose own variables hold stale credentials."""
    return {
        "HURREN_STORE_URL": make_url(services.store_url)
        .set(password="stale")
        .render_as_string(hide_password=False),
        "HURREN_S3_ENDPOINT": services.s3_endpoint,
        "HURREN_S3_ACCESS_KEY": services.s3_access_key,
        "HURREN_S3_SECRET_KEY": "stale",
    }


def _store_conn(services: Settings, **over: object) -> str:
    url = make_url(services.store_url)
    return json.dumps({"conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username,
                       "password": url.password, "schema": url.database, **over})  # fmt: skip


def _s3_conn(services: Settings) -> str:
    return json.dumps({"conn_type": "aws", "login": services.s3_access_key, "password": services.s3_secret_key,
                       "extra": {"endpoint_url": f"http://{services.s3_endpoint}", "region_name": "us-east-1"}})  # fmt: skip


def test_the_store_and_s3_come_from_their_connections_where_they_exist(
    services: Settings, s3, wrong_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = Site.from_env(wrong_env)
    # no connections: the environment's credentials, which are stale here, are used and refused
    plain = here.connected_settings()
    assert plain == here.settings
    engine = store_engine(plain)
    with pytest.raises(OperationalError, match="password"):
        engine.connect().close()
    engine.dispose()
    assert not _s3_works(plain, s3.bucket_reports)

    monkeypatch.setenv("AIRFLOW_CONN_HURREN_STORE", _store_conn(services))
    monkeypatch.setenv("AIRFLOW_CONN_HURREN_S3", _s3_conn(services))
    connected = here.connected_settings()
    engine = store_engine(connected)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(text("select current_user")).scalar_one()
                == make_url(services.store_url).username
            )
    finally:
        engine.dispose()
    assert _s3_works(connected, s3.bucket_reports)
    assert connected.s3_bucket_reports == here.settings.s3_bucket_reports  # buckets stay the site's
    assert "stale" not in repr(connected) and services.s3_secret_key not in repr(connected)


def test_connection_ids_are_the_sites_and_a_wrong_connection_is_named(
    services: Settings, wrong_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = Site.from_env({**wrong_env, "HURREN_STORE_CONN_ID": "municipal_store"})
    assert (here.store_conn_id, here.s3_conn_id) == ("municipal_store", "hurren_s3")
    monkeypatch.setenv("AIRFLOW_CONN_HURREN_STORE", _store_conn(services))  # not the site's id: unused
    assert here.connected_settings().store_url == wrong_env["HURREN_STORE_URL"]
    monkeypatch.setenv("AIRFLOW_CONN_MUNICIPAL_STORE", _store_conn(services, conn_type="mysql"))
    with pytest.raises(SiteError, match="'municipal_store'.*type postgres"):
        here.connected_settings()
    # a connection that gives only the password: the rest of the environment's URL stays
    monkeypatch.setenv(
        "AIRFLOW_CONN_MUNICIPAL_STORE", json.dumps({"conn_type": "postgres", "password": "p@ss/w:rd"})
    )
    url = make_url(here.connected_settings().store_url)
    assert url.password == "p@ss/w:rd" and url.host == make_url(services.store_url).host
    assert url.drivername == "postgresql+psycopg"


def test_an_s3_connection_with_a_path_or_no_host_is_refused_naming_it(
    services: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = Site.from_env({})
    monkeypatch.setenv(
        "AIRFLOW_CONN_HURREN_S3",
        json.dumps({"conn_type": "aws", "extra": {"endpoint_url": "https://s3.example:9000/reports"}}),
    )
    with pytest.raises(SiteError, match="'hurren_s3'.*http\\(s\\)://host"):
        here.connected_settings()
    monkeypatch.setenv(
        "AIRFLOW_CONN_HURREN_S3",
        json.dumps({"conn_type": "aws", "extra": {"endpoint_url": "https://s3.example"}}),
    )
    s = here.connected_settings()
    assert (s.s3_endpoint, s.s3_secure, s.s3_access_key) == ("s3.example", True, here.settings.s3_access_key)


def _s3_works(settings: Settings, bucket: str) -> bool:
    try:
        return minio_client(settings).bucket_exists(bucket)
    except Exception:  # the server refuses the signature of a wrong secret
        return False
