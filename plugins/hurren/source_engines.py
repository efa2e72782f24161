"""Hospital databases from Airflow connections: one SQLAlchemy engine per connection id.

A hospital's connection is an ordinary Airflow connection (UI, CLI, ``AIRFLOW_CONN_<ID>`` or a
secrets backend). Its type picks who builds the engine::

    conn_type            built by                                   SQLAlchemy URL
    postgres|postgresql  the postgres provider (PostgresHook)       postgresql+psycopg://user:pw@host:port/database
                                                                    (KingbaseES/openGauss too; the provider's
                                                                    extra.sqlalchemy_scheme / sqlalchemy_query apply)
    mssql                the mssql provider (MsSqlHook)             mssql+pymssql://user:pw@host:port/database
                                                                    (other extra keys become pymssql arguments)
    oracle               here                                       oracle+oracledb://user:pw@host:port/?service_name=…
                                                                    (thin mode; extra service_name or sid)
    mysql                here                                       mysql+pymysql://user:pw@host:port/database?charset=utf8mb4
                                                                    (MySQL and MariaDB)
    sqlite               here                                       sqlite:///<host> (the demo hospitals)

Both providers build the engine with common-sql's ``DbApiHook.get_sqlalchemy_engine``. The rest
is ours where no provider serves:

- **oracle**: the oracle provider's ``get_uri`` writes login and password into the URL unescaped
  (a password with ``@``, ``/`` or ``:`` breaks it) and reads a bare ``schema`` as a SID, where a
  hospital names a service; thin mode needs no more than the URL.
- **mysql**: the mysql provider's clients are mysqlclient (a C build against libmysqlclient) and
  mysql-connector-python; pymysql (pure Python) is not among them, and mysqlclient turns a zero
  date (``0000-00-00``) into None, which would pass a nullable field unseen: pymysql returns the
  text, which validation refuses. ``utf8mb4`` so 4-byte characters arrive intact; a GBK column is
  converted by the server.
- **sqlite**: no provider in the lock; the demo's hospitals are files.

``extra.sqlalchemy_url`` overrides all of it, for a driver this table does not know.
Passwords never leave the URL object (logs show it with the password hidden).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine, make_url

_DRIVERS = {"oracle": "oracle+oracledb", "mysql": "mysql+pymysql"}
PROVIDER_TYPES = ("postgres", "postgresql", "mssql")


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
    """The SQLAlchemy URL of a hospital's Airflow connection of a type no provider builds
    (oracle, mysql, sqlite), or its ``extra.sqlalchemy_url``."""
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return make_url(extra["sqlalchemy_url"])
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        if not conn.host:
            raise SourceConnectionError(
                f"connection {conn.conn_id}: a sqlite connection needs host = the file path"
            )
        return URL.create("sqlite", database=conn.host)
    if kind not in _DRIVERS:
        raise SourceConnectionError(
            f"connection {conn.conn_id}: type {conn.conn_type!r} is not one of "
            f"{sorted([*_DRIVERS, *PROVIDER_TYPES, 'sqlite'])}; or set extra.sqlalchemy_url"
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
    if kind == "mysql":
        query["charset"] = extra.get("charset", "utf8mb4")
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

    conn = Connection.get(conn_id)
    engine_kwargs = {"pool_pre_ping": True, **engine_kwargs}
    kind = (conn.conn_type or "").lower()
    if kind in PROVIDER_TYPES and not (conn.extra_dejson or {}).get("sqlalchemy_url"):
        if kind == "mssql":
            from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

            return MsSqlHook(mssql_conn_id=conn_id).get_sqlalchemy_engine(engine_kwargs=engine_kwargs)
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=conn_id).get_sqlalchemy_engine(engine_kwargs=engine_kwargs)
    return create_engine(sqlalchemy_url(conn), **engine_kwargs)
