"""Hospital databases from Airflow connections: one SQLAlchemy engine per connection id.

A hospital's connection is an ordinary Airflow connection (UI, CLI, ``AIRFLOW_CONN_<ID>`` or a
secrets backend). Its type picks the driver::

    conn_type            SQLAlchemy URL                                  notes
    oracle               oracle+oracledb://user:pw@host:port/?service_name=…   thin mode; extra
                                                                          service_name or sid
    mssql                mssql+pymssql://user:pw@host:port/database
    postgres|postgresql  postgresql+psycopg://user:pw@host:port/database  KingbaseES/openGauss too
    mysql                mysql+pymysql://… (driver not installed by default)
    sqlite               sqlite:///<host>                                 the demo hospitals

``extra.sqlalchemy_url`` overrides all of it, for a driver this table does not know.
Passwords never leave the URL object (logs show it with the password hidden).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine, make_url

_DRIVERS = {
    "oracle": "oracle+oracledb",
    "mssql": "mssql+pymssql",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
}


class ConnectionLike(Protocol):
    conn_id: str
    conn_type: str
    host: str | None
    port: int | None
    login: str | None
    password: str | None
    schema: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


class SourceConnectionError(ValueError):
    """A hospital's Airflow connection cannot be turned into a database URL."""


def sqlalchemy_url(conn: ConnectionLike) -> URL:
    """The SQLAlchemy URL of a hospital's Airflow connection."""
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return make_url(extra["sqlalchemy_url"])
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        if not conn.host:
            raise SourceConnectionError(f"connection {conn.conn_id}: a sqlite connection needs host = the file path")
        return URL.create("sqlite", database=conn.host)
    if kind not in _DRIVERS:
        raise SourceConnectionError(
            f"connection {conn.conn_id}: type {conn.conn_type!r} is not one of {sorted([*_DRIVERS, 'sqlite'])}; "
            "or set extra.sqlalchemy_url"
        )
    query: dict[str, str] = {}
    database = conn.schema or None
    if kind == "oracle":
        if extra.get("service_name"):
            query["service_name"] = extra["service_name"]
        elif extra.get("sid"):
            database = extra["sid"]
        elif conn.schema:
            query["service_name"] = conn.schema
        database = database if "service_name" not in query else None
    return URL.create(
        _DRIVERS[kind],
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=database,
        query=query,
    )


def source_engine(conn_id: str, **engine_kwargs: Any) -> Engine:
    """An engine for the hospital database behind Airflow connection ``conn_id`` (task time only)."""
    from airflow.sdk import Connection

    return create_engine(sqlalchemy_url(Connection.get(conn_id)), pool_pre_ping=True, **engine_kwargs)
