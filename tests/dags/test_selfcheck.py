"""hurren_selfcheck, run end to end with ``dag.test()`` (tasks in this process, no scheduler)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hurren.settings import settings

DAG_ID = "hurren_selfcheck"


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """hurren.settings.settings() is cached per process; tasks here share the test's process."""
    settings.cache_clear()
    yield
    settings.cache_clear()


def _closed_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.services
def test_selfcheck_passes_and_reports_versions(services, fresh_settings, run_dag):
    result = run_dag(DAG_ID)

    assert result.succeeded, result.summary()
    assert result.task_states == {"check_store": "success", "check_s3": "success", "report": "success"}
    summary = result.return_values["report"]
    store, s3 = summary["store"], summary["s3"]
    assert store["dialect"] == "postgresql"
    assert store["server_version"][0].isdigit()
    assert store["banner"].startswith("PostgreSQL")
    assert services.s3_endpoint in s3["endpoint"]
    assert s3["server"] != "unknown"
    assert set(s3["buckets"]) == {services.s3_bucket_reports, services.s3_bucket_docs}
    assert summary["packages"]["apache-airflow"] == "3.3.2"
    assert services.s3_secret_key not in repr(summary)


def test_selfcheck_fails_with_a_clear_error_when_services_are_unreachable(
    monkeypatch, fresh_settings, run_dag
):
    store_port, s3_port = _closed_port(), _closed_port()
    monkeypatch.setenv(
        "HURREN_STORE_URL", f"postgresql+psycopg://hurren:pw-not-for-logs@127.0.0.1:{store_port}/hurren_store"
    )
    monkeypatch.setenv("HURREN_S3_ENDPOINT", f"127.0.0.1:{s3_port}")

    result = run_dag(DAG_ID)

    assert result.state == "failed", result.summary()
    assert result.task_states == {
        "check_store": "failed",
        "check_s3": "failed",
        "report": "upstream_failed",
    }
    assert result.try_numbers["check_store"] == 1  # run_dag's retries=0: no waiting for retry delays
    store_error = str(result.errors["check_store"])
    assert (
        f"store database postgresql+psycopg://hurren:***@127.0.0.1:{store_port}/hurren_store" in store_error
    )
    assert "unreachable" in store_error and "scripts/services up" in store_error
    assert "pw-not-for-logs" not in store_error
    s3_error = str(result.errors["check_s3"])
    assert f"S3 endpoint http://127.0.0.1:{s3_port} is unreachable" in s3_error
    assert "scripts/services up" in s3_error
