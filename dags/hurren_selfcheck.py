"""
### hurren_selfcheck: can the pipeline reach its store and its object storage?

Trigger it by hand after a deployment, after `scripts/services up`, or when a nightly run fails
with connection errors. No schedule; each check is its own task, so the grid shows at once which
side is down.

| task | checks | returns (XCom) |
|---|---|---|
| `check_store` | connects to the municipal store (`HURREN_STORE_URL`) and asks its version | dialect, driver, server version, database, user |
| `check_s3` | reaches the S3 endpoint (`HURREN_S3_ENDPOINT`), logs in with the configured keys, and looks for the report and docs buckets | server software, buckets found |
| `report` | runs when both pass; adds the Airflow, Python and library versions | the whole summary, also in its log |

A failed check fails its task with a message that names what is unreachable and what to do
(`report` is then `upstream_failed`, and the run fails). Two retries, 30 s apart, ride out a
service that is still starting.

Settings come from the environment through `hurren.settings` (variables and defaults in its
docstring). Nothing is read or connected while the file is parsed; passwords never reach the log.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

log = logging.getLogger("hurren.selfcheck")

_TIMEOUT_S = 5  # per connection attempt: a self-check should answer fast, not hang


class SelfCheckFailed(RuntimeError):
    """A service is unreachable or unusable; the message says which one and how to fix it."""


@task
def check_store() -> dict[str, Any]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from hurren.clients import store_engine
    from hurren.site import site

    s = site().connected_settings()  # the connection hurren_store, else the environment
    url = make_url(s.store_url)
    shown = url.render_as_string(hide_password=True)
    connect_args = {"connect_timeout": _TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
    engine = store_engine(s, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            dialect = conn.dialect
            version = ".".join(str(part) for part in dialect.server_version_info or ())
            banner = (
                conn.execute(text("select version()")).scalar_one() if dialect.name == "postgresql" else ""
            )
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise SelfCheckFailed(
            f"store database {shown} is unreachable: {str(reason).strip()}. "
            "Locally: scripts/services up; elsewhere check the connection hurren_store or HURREN_STORE_URL (or HURREN_PG_*)."
        ) from exc
    finally:
        engine.dispose()

    result = {
        "url": shown,
        "dialect": dialect.name,
        "driver": dialect.driver,
        "server_version": version,
        "banner": banner,
        "database": url.database,
        "user": url.username,
    }
    log.info("store reachable: %s %s at %s", dialect.name, version, shown)
    return result


@task
def check_s3() -> dict[str, Any]:
    import httpx
    from minio.error import S3Error

    from hurren.clients import minio_client
    from hurren.site import site

    s = site().connected_settings()  # the connection hurren_s3, else the environment
    base = f"{'https' if s.s3_secure else 'http'}://{s.s3_endpoint}"
    try:
        # Any HTTP answer (even 403 to an anonymous request) means a server is listening.
        answer = httpx.get(f"{base}/", timeout=_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise SelfCheckFailed(
            f"S3 endpoint {base} is unreachable: {exc!r}. "
            "Locally: scripts/services up; elsewhere check HURREN_S3_ENDPOINT / HURREN_S3_SECURE."
        ) from exc
    server = answer.headers.get("server", "unknown")

    try:
        buckets = sorted(b.name for b in minio_client(s).list_buckets())
    except S3Error as exc:
        raise SelfCheckFailed(
            f"S3 endpoint {base} ({server}) refused the configured keys: {exc.code}: {exc.message}. "
            "Check HURREN_S3_ACCESS_KEY / HURREN_S3_SECRET_KEY."
        ) from exc
    wanted = [s.s3_bucket_reports, s.s3_bucket_docs]
    missing = [name for name in wanted if name not in buckets]
    if missing:
        raise SelfCheckFailed(
            f"S3 endpoint {base} ({server}) has no bucket {', '.join(missing)}. Locally scripts/services up "
            "creates them; elsewhere create them or set HURREN_S3_BUCKET_REPORTS / HURREN_S3_BUCKET_DOCS."
        )

    result = {"endpoint": base, "server": server, "buckets": wanted}
    log.info("S3 reachable: %s at %s, buckets %s present", server, base, wanted)
    return result


@task
def report(store: dict[str, Any], s3: dict[str, Any]) -> dict[str, Any]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    packages = ["apache-airflow", "great-expectations", "sqlalchemy", "psycopg", "minio", "pandas"]
    summary = {
        "store": store,
        "s3": s3,
        "python": platform.python_version(),
        "packages": {name: installed(name) for name in packages},
    }
    log.info(
        "self-check passed: store %s %s, S3 %s, python %s, %s",
        store["dialect"],
        store["server_version"],
        s3["server"],
        summary["python"],
        ", ".join(f"{k} {v}" for k, v in summary["packages"].items()),
    )
    return summary


@dag(
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["hurren", "ops", "selfcheck"],
    max_active_runs=1,
    default_args={
        "owner": "hurren",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=2),
    },
)
def hurren_selfcheck():
    report(store=check_store(), s3=check_s3())


hurren_selfcheck()
