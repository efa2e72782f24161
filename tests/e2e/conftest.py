"""Fixtures the end-to-end tests share."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from hurren import crypto
from hurren_testkit.simulator import Simulator, SimulatorConfig


@pytest.fixture(scope="module")
def monkeypatch_module():
    """``monkeypatch`` for module-scoped fixtures (a region's env vars live as long as the region)."""
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def sim():
    """A platform simulator of the module's own, in-process on a free port, with a fresh key pair
    (any well-formed credential passes)."""
    private, _ = crypto.generate_keypair()
    with Simulator(config=SimulatorConfig(port=0, private_key=private)) as s:
        yield s


def configure_region(
    mp: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    hospitals: Sequence[Mapping[str, Any]],
    urls: Mapping[str, str],
    *,
    store_url: str,
    bucket: str | None = None,
    sim: Simulator | None = None,
) -> Any:
    """Point hurren at a test region and return its resolved sources: each hospital (``id``,
    ``org_code``, ``org_name`` and any other source key; ``dialect`` defaults to postgresql) in a
    sources.json, whose Airflow connection ``hurren_src_<id>`` (AIRFLOW_CONN_*, host, port, login,
    password and schema of ``urls[id]``: the engine is built as in production) reaches its
    database; the store; the reports bucket; with ``sim``, the platform (HURREN_PLATFORM_*)."""
    from sqlalchemy.engine import make_url

    from hurren.settings import settings
    from hurren.sources import resolve_sources

    sources = []
    for h in hospitals:
        h = {"dialect": "postgresql", **h}
        u = make_url(urls[h["id"]])
        conn = {"conn_type": CONN_TYPES[h["dialect"]], "host": u.host, "port": u.port, "login": u.username,
                "password": u.password, "schema": u.database}  # fmt: skip
        mp.setenv(f"AIRFLOW_CONN_HURREN_SRC_{h['id'].upper()}", json.dumps(conn))
        sources.append({"conn_id": f"hurren_src_{h['id']}", **h})
    path = tmp_path_factory.mktemp("sources") / "sources.json"
    path.write_text(json.dumps({"defaults": {"initial_value": "2024-01-01 00:00:00"}, "hospitals": sources}))
    env = {"HURREN_SOURCES_FILE": str(path), "HURREN_STORE_URL": store_url}
    if bucket:
        env["HURREN_S3_BUCKET_REPORTS"] = bucket
    if sim is not None:
        env |= {"HURREN_PLATFORM_URL": sim.url, "HURREN_PLATFORM_PUBLIC_KEY": sim.public_key,
                "HURREN_PLATFORM_ORG_CODE": "650000001", "HURREN_PLATFORM_ORG_NAME": "市级平台",
                "HURREN_PLATFORM_VISITOR_CODE": "city", "HURREN_PLATFORM_VISITOR_KEY": "city-key"}  # fmt: skip
    for name, value in env.items():
        mp.setenv(name, value)
    settings.cache_clear()
    return resolve_sources()


CONN_TYPES = {"postgresql": "postgres", "mysql": "mysql"}  # source dialect -> Airflow connection type
