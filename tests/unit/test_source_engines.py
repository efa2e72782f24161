"""Hospital engines from Airflow connections: the providers' hooks where they serve, ours elsewhere."""

from __future__ import annotations

import json

import pytest

from hurren import source_engines

PASSWORD = "p@ss/w:rd?#&"  # every character a URL needs escaped


def conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conn_id


@pytest.mark.parametrize(
    ("fields", "driver", "database", "query"),
    [
        pytest.param(
            {"conn_type": "postgres", "schema": "lis"},
            "postgresql+psycopg",
            "lis",
            {},
            id="postgres-provider",
        ),
        pytest.param(
            {"conn_type": "mssql", "schema": "LIS"}, "mssql+pymssql", "LIS", {}, id="mssql-provider"
        ),
        pytest.param(
            {"conn_type": "mysql", "schema": "lis"},
            "mysql+pymysql",
            "lis",
            {"charset": "utf8mb4"},
            id="mysql",
        ),
        pytest.param(
            {"conn_type": "oracle", "extra": {"service_name": "ORCLPDB1"}},
            "oracle+oracledb",
            None,
            {"service_name": "ORCLPDB1"},
            id="oracle",
        ),  # fmt: skip
        pytest.param(
            {"conn_type": "oracle", "extra": {"sid": "ORCL"}}, "oracle+oracledb", "ORCL", {}, id="oracle-sid"
        ),
    ],
)
def test_each_type_gets_its_driver_and_keeps_the_password_whole(
    monkeypatch: pytest.MonkeyPatch, fields: dict, driver: str, database: str | None, query: dict
) -> None:
    cid = conn(
        monkeypatch, "hurren_src_t", host="10.1.2.3", port=1234, login="ro", password=PASSWORD, **fields
    )
    engine = source_engines.source_engine(cid)  # built, not connected
    url = engine.url
    assert (url.drivername, url.host, url.port, url.username, url.password) == (
        driver,
        "10.1.2.3",
        1234,
        "ro",
        PASSWORD,
    )
    assert url.database == database and dict(url.query) == query
    assert PASSWORD not in repr(url) and PASSWORD not in str(url)  # shown with the password hidden
    assert engine.pool._pre_ping  # a dropped hospital connection is replaced, not used


def test_the_oracle_provider_would_break_an_escaped_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why Oracle URLs are ours: the provider writes the password into the URL as it is."""
    from airflow.providers.oracle.hooks.oracle import OracleHook
    from sqlalchemy.engine import make_url

    cid = conn(monkeypatch, "hurren_src_o", conn_type="oracle", host="h", port=1521, login="ro", password=PASSWORD,
               extra={"service_name": "S"})  # fmt: skip
    assert make_url(OracleHook(oracle_conn_id=cid).get_uri()).password != PASSWORD
    assert source_engines.source_engine(cid).url.password == PASSWORD


def test_an_explicit_url_wins_and_an_unknown_type_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    cid = conn(
        monkeypatch, "hurren_src_x", conn_type="postgres", extra={"sqlalchemy_url": "sqlite:////tmp/x.db"}
    )
    assert str(source_engines.source_engine(cid).url) == "sqlite:////tmp/x.db"
    cid = conn(monkeypatch, "hurren_src_y", conn_type="db2", host="h")
    with pytest.raises(source_engines.SourceConnectionError, match="extra.sqlalchemy_url"):
        source_engines.source_engine(cid)
