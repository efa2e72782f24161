"""The deployment stack (docker-compose.yml) without a Docker engine.

- **validates**: ``docker-compose config`` (Debian's docker-compose 1.29, which needs no engine)
  renders the file with ``.env.example`` filled in, for every profile; with ``.env.example`` as
  shipped (secrets empty) it refuses and names the variable. ``docker compose`` (v2) is run too
  where it is installed. The tool missing is a failure that says how to install it.
- **agrees with scripts/services**: the facts both sides must share (PostgreSQL major version,
  role and its attributes, store database, buckets, S3 user, host ports, simulator path) are
  extracted from each side by one function per side and compared whole; ``hurren.settings``
  defaults are a third witness.
- **is consistent and documented**: what Airflow is given equals what the init services create;
  every variable compose reads is in ``.env.example`` and ``docs/configuration.md``; every variable
  the library reads is in ``docs/configuration.md``; the Dockerfile's base image is the lock's
  Airflow.
- **its scripts run**: ``docker/postgres/roles.sql`` on a scratch PostgreSQL 15 cluster (twice,
  then with a new password), ``docker/airflow/init.sh`` on a copy of the test metadata DB,
  ``docker/image_requirements.py`` on the lock. ``docker/minio/init.sh`` needs ``mc`` and a MinIO
  server, so only its syntax and bucket names are checked here.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES_SCRIPT = ROOT / "scripts" / "services"
ROLES_SQL = ROOT / "docker" / "postgres" / "roles.sql"
SITE_EXAMPLE = ROOT / "docker" / "site.example"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

INSTALL_HINT = (
    "docker-compose is not installed; it validates docker-compose.yml without a Docker engine. "
    "Install it: apt-get install -y --no-install-recommends docker-compose"
)
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)

# ------------------------------------------------------------------------------------------------
# Compose's variable interpolation, for reading the file's defaults without the tool
# ------------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Required(str):
    """The value of a ``${VAR:?message}`` that is not set: stands in for a secret."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?msg}``, ``$$`` as compose does."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", ":?"):
            unset = not value
        else:
            unset = value is None
        if op in (":-", "-"):
            return arg if unset else value
        if op in (":?", "?"):
            return f"<required {name}>" if unset else value
        return value or ""

    return _VAR.sub(one, text)


def compose_variables(text: str) -> dict[str, dict[str, str | None]]:
    """Every variable the compose file reads: name → {"default": …, "required": message or None}."""
    out: dict[str, dict[str, str | None]] = {}
    for m in _VAR.finditer(text):
        name = m.group(1) or m.group(4)
        if not name:
            continue
        entry = out.setdefault(name, {"default": None, "required": None})
        if m.group(2) in (":-", "-"):
            entry["default"] = m.group(3) or ""
        elif m.group(2) in (":?", "?"):
            entry["required"] = m.group(3) or ""
    return out


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml parsed (YAML anchors and merge keys resolved), values interpolated."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    env = {} if env is None else env

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return interpolate(node, env)
        return node

    return walk(raw)


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value
    return out


# ------------------------------------------------------------------------------------------------
# The facts each side states: scripts/services (+ hurren.settings) and docker-compose.yml
# ------------------------------------------------------------------------------------------------


def native_facts() -> dict[str, Any]:
    """What scripts/services starts: read from the script's own assignments and SQL."""
    script = SERVICES_SCRIPT.read_text(encoding="utf-8")

    def assignment(name: str) -> str:
        m = re.search(rf"^{name}=(.*)$", script, re.M)
        assert m, f"scripts/services no longer assigns {name}"
        return m.group(1).strip().strip('"')

    def default_of(name: str) -> tuple[str, str]:
        """``X=${HURREN_Y:-z}`` → ("HURREN_Y", "z")."""
        m = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", assignment(name))
        assert m, f"scripts/services: {name} is not ${{VAR:-default}}: {assignment(name)}"
        return m.group(1), m.group(2)

    role_sql = re.search(r"CREATE ROLE %I ((?:[A-Z]+ )+)PASSWORD", script)
    assert role_sql, "scripts/services no longer creates the store role with CREATE ROLE %I … PASSWORD"
    listen = re.search(r"^listen_addresses = '([^']+)'", script, re.M)
    assert listen, "scripts/services no longer sets listen_addresses"
    buckets = re.findall(r"\$\{(HURREN_S3_BUCKET_\w+):-([^}]*)\}", assignment("S3_BUCKETS"))
    sim_path = re.search(r"-m hurren_testkit.simulator[^\n]*--path (\S+)", script)
    return {
        "postgres major version": assignment("PG_VERSION"),
        "store host port": default_of("PG_PORT"),
        "store role": default_of("PG_USER"),
        "store role attributes": set(role_sql.group(1).split()),
        "store database": default_of("PG_DB"),
        "s3 host port": default_of("S3_PORT"),
        "s3 access key": default_of("S3_ACCESS_KEY"),
        "buckets": dict(buckets),
        "simulator host port": default_of("SIM_PORT"),
        # the script starts the simulator without --path: the simulator's own default applies
        "simulator path": sim_path.group(1) if sim_path else simulator_default_path(),
        "bind address": listen.group(1),
    }


def simulator_default_path() -> str:
    from hurren_testkit.simulator.config import SimulatorConfig

    return SimulatorConfig.__dataclass_fields__["path"].default


def settings_facts() -> dict[str, Any]:
    """What the library assumes when nothing is set (hurren.settings), in the same terms."""
    from hurren.settings import Settings

    s = Settings.from_env({})
    store = make_url(s.store_url)
    sim = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", s.simulator_url)
    assert sim, s.simulator_url
    return {
        "store host port": str(store.port),
        "store role": store.username,
        "store database": store.database,
        "s3 host port": s.s3_endpoint.rsplit(":", 1)[1],
        "s3 access key": s.s3_access_key,
        "buckets": {
            "HURREN_S3_BUCKET_REPORTS": s.s3_bucket_reports,
            "HURREN_S3_BUCKET_DOCS": s.s3_bucket_docs,
        },
        "simulator host port": sim.group(2),
        "simulator path": sim.group(3),
        "bind address": s.s3_endpoint.rsplit(":", 1)[0],
    }


def _published(service: dict[str, Any], container_port: int, raw_ports: list[str]) -> tuple[str, str, str]:
    """(bind address, host port variable, host port default) of the mapping to ``container_port``."""
    for rendered, raw in zip(service["ports"], raw_ports, strict=True):
        address, host, container = rendered.rsplit(":", 2)
        if int(container.split("/")[0]) == container_port:
            var = re.search(r"\$\{(\w+):-\d+\}:\d+$", raw)
            assert var, f"port mapping {raw!r}: the host port should be ${{VAR:-default}}"
            return address, var.group(1), host
    raise AssertionError(f"no published port maps to {container_port}: {service['ports']}")


def roles_sql_attributes(role_variable: str) -> set[str]:
    """Attributes roles.sql gives the role read from psql variable ``role_variable`` (every statement)."""
    sql = ROLES_SQL.read_text(encoding="utf-8")
    found = re.findall(r"(?:CREATE|ALTER) ROLE %I ((?:[A-Z]+ )+)PASSWORD %L', :'" + role_variable + "'", sql)
    assert found, f"roles.sql has no CREATE/ALTER ROLE for :'{role_variable}'"
    attrs = [set(f.split()) for f in found]
    assert all(a == attrs[0] for a in attrs), f"roles.sql: CREATE and ALTER disagree: {attrs}"
    return attrs[0]


def compose_facts() -> dict[str, Any]:
    """What docker-compose.yml starts with nothing but its defaults (no .env)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    services = load_compose()["services"]
    pg_env = raw["postgres-init"]["environment"]
    minio_env = raw["minio-init"]["environment"]

    def var_default(value: str) -> tuple[str, str]:
        m = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
        assert m, f"{value!r} should be ${{VAR:-default}}"
        return m.group(1), m.group(2)

    pg_address, pg_var, pg_port = _published(services["postgres"], 5432, raw["postgres"]["ports"])
    s3_address, s3_var, s3_port = _published(services["minio"], 9000, raw["minio"]["ports"])
    sim_address, sim_var, sim_port = _published(services["simulator"], 58080, raw["simulator"]["ports"])
    assert pg_address == s3_address == sim_address, "every published service binds the same address"
    command = services["simulator"]["command"]
    image = services["postgres"]["image"]
    return {
        "postgres major version": image.split(":", 1)[1].split(".")[0],
        "store host port": (pg_var, pg_port),
        "store role": var_default(pg_env["HURREN_PG_USER"]),
        "store role attributes": roles_sql_attributes("store_role"),
        "store database": var_default(pg_env["HURREN_STORE_DB"]),
        "s3 host port": (s3_var, s3_port),
        "s3 access key": var_default(minio_env["HURREN_S3_ACCESS_KEY"]),
        "buckets": dict(
            var_default(minio_env[k]) for k in ("HURREN_S3_BUCKET_REPORTS", "HURREN_S3_BUCKET_DOCS")
        ),
        "simulator host port": (sim_var, sim_port),
        "simulator path": command[command.index("--path") + 1],
        "bind address": pg_address,
    }


def test_compose_agrees_with_native_services() -> None:
    assert compose_facts() == native_facts()


def test_settings_defaults_agree_with_native_services() -> None:
    """The library's defaults reach the native services (values only: settings has no variable names)."""
    native = {
        k: (v[1] if isinstance(v, tuple) else v) for k, v in native_facts().items() if k in settings_facts()
    }
    native["buckets"] = native_facts()["buckets"]
    assert settings_facts() == native


def test_simulator_listens_where_the_stack_sends() -> None:
    services = load_compose({"HURREN_PLATFORM_URL": "x"})["services"]
    command = services["simulator"]["command"]
    port, path = command[command.index("--port") + 1], command[command.index("--path") + 1]
    example = read_env_file(ENV_EXAMPLE)
    hint = re.search(r"HURREN_PLATFORM_URL=(http://simulator:\S+)", ENV_EXAMPLE.read_text(encoding="utf-8"))
    assert hint, ".env.example should show the simulator's URL for test environments"
    assert hint.group(1) == f"http://simulator:{port}{path}"
    assert example["HURREN_SIM_PUBLIC_URL"] == f"http://simulator:{port}"
    health = " ".join(services["simulator"]["healthcheck"]["test"])
    assert f"localhost:{port}/_admin/health" in health


# ------------------------------------------------------------------------------------------------
# Consistency inside the stack
# ------------------------------------------------------------------------------------------------


def test_airflow_is_given_what_the_init_services_create() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    pg_init, minio_init = raw["postgres-init"]["environment"], raw["minio-init"]["environment"]
    for name in AIRFLOW_SERVICES:
        env = raw[name]["environment"]
        for key in ("HURREN_PG_USER", "HURREN_PG_PASSWORD", "HURREN_STORE_DB"):
            assert env[key] == pg_init[key], f"{name}: {key}"
        for key in (
            "HURREN_S3_ACCESS_KEY",
            "HURREN_S3_SECRET_KEY",
            "HURREN_S3_BUCKET_REPORTS",
            "HURREN_S3_BUCKET_DOCS",
        ):
            assert env[key] == minio_init[key], f"{name}: {key}"
        conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        for key in ("AIRFLOW_DB_USER", "AIRFLOW_DB_PASSWORD", "AIRFLOW_DB"):
            # the metadata URL is built from the same variables postgres-init creates the role from
            assert pg_init[key].startswith(f"${{{key}:") and f"${{{key}:" in conn, f"{name}: {key}"
        assert env["HURREN_PG_HOST"] == "postgres" and env["HURREN_PG_PORT"] == "5432"
        assert env["HURREN_S3_ENDPOINT"].endswith("minio:9000}")
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["HURREN_SITE_DIR"] == "/opt/airflow/site"  # hurren.site reads sources.json etc. there


def test_every_secret_is_required_and_none_has_a_default() -> None:
    variables = compose_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
    test_only = {"HURREN_SIM_ADMIN_TOKEN"}  # the simulator's, in test environments only
    secrets = {name for name in variables if re.search(r"PASSWORD|SECRET|FERNET|TOKEN", name)} - test_only
    assert secrets >= {
        "POSTGRES_PASSWORD",
        "HURREN_PG_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "REDIS_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "HURREN_S3_SECRET_KEY",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
    }
    for name in sorted(secrets):
        assert variables[name]["required"], f"{name} must be ${{{name}:?message}} in docker-compose.yml"
        assert variables[name]["default"] is None, f"{name} must have no default"
    example = read_env_file(ENV_EXAMPLE)
    for name in sorted(secrets):
        assert example.get(name) == "", f".env.example must leave {name} empty (no secret in the repository)"


def test_env_example_documents_every_variable_and_agrees_with_the_defaults() -> None:
    variables = compose_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
    example = read_env_file(ENV_EXAMPLE)
    assert sorted(set(variables) - set(example)) == [], (
        "variables docker-compose.yml reads, missing from .env.example"
    )
    assert sorted(set(example) - set(variables) - {"COMPOSE_PROJECT_NAME"}) == [], (
        "variables in .env.example that docker-compose.yml never reads"
    )
    for name, entry in sorted(variables.items()):
        if entry["default"] is not None and example[name] != "":
            assert example[name] == entry["default"], (
                f".env.example {name}={example[name]!r}, compose default {entry['default']!r}"
            )
    assert example["COMPOSE_PROJECT_NAME"] == "hurren"


def test_workers_scale() -> None:
    services = load_compose()["services"]
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker, (
        "a scaled service cannot pin a name or a host port"
    )
    assert worker["command"] == "celery worker"
    assert worker["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}
    for name in AIRFLOW_SERVICES[1:]:
        assert services[name]["depends_on"]["airflow-init"] == {
            "condition": "service_completed_successfully"
        }, name
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert services["simulator"]["profiles"] == ["test"]


def test_minio_init_creates_the_buckets_it_is_given() -> None:
    script = (ROOT / "docker" / "minio" / "init.sh").read_text(encoding="utf-8")
    assert 'for bucket in "$HURREN_S3_BUCKET_REPORTS" "$HURREN_S3_BUCKET_DOCS"' in script
    assert 'mc admin user add stack "$HURREN_S3_ACCESS_KEY" "$HURREN_S3_SECRET_KEY"' in script
    for shell in ("sh", "bash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n", str(ROOT / "docker" / "minio" / "init.sh")], check=True)


# ------------------------------------------------------------------------------------------------
# Documentation: one place for every setting
# ------------------------------------------------------------------------------------------------


def library_variables() -> set[str]:
    """Every HURREN_* variable the library reads (plugins/hurren) and scripts/services reads."""
    names: set[str] = set()
    for path in [*(ROOT / "plugins" / "hurren").rglob("*.py"), SERVICES_SCRIPT]:
        names |= set(re.findall(r"\b(HURREN_[A-Z0-9_]*[A-Z0-9])\b", path.read_text(encoding="utf-8")))
    return {n for n in names if not n.endswith("_")}


def test_configuration_doc_lists_every_variable() -> None:
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", doc))
    compose = set(compose_variables(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert sorted(library_variables() - documented) == [], (
        "read by the library, missing from docs/configuration.md"
    )
    assert sorted(compose - documented) == [], (
        "read by docker-compose.yml, missing from docs/configuration.md"
    )
    for name in ("hurren_sources", "AIRFLOW_CONN_", "AIRFLOW__SECRETS__BACKEND"):
        assert name in doc


def test_deploy_doc_names_every_service_and_step() -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    for service in load_compose()["services"]:
        assert f"`{service}`" in doc, f"docs/deploy.md does not mention {service}"
    for must in (
        "cp .env.example .env",
        "cp -r docker/site.example site",
        "docker compose build",
        "--scale airflow-worker=",
        "pg_dump",
        "mc mirror",
        "HURREN_PLATFORM_PUBLIC_KEY",
    ):
        assert must in doc, f"docs/deploy.md lacks {must!r}"


# ------------------------------------------------------------------------------------------------
# The image
# ------------------------------------------------------------------------------------------------


def lock_pin(name: str) -> str:
    m = re.search(
        rf"^{re.escape(name)}==(\S+)", (ROOT / "requirements.lock").read_text(encoding="utf-8"), re.M
    )
    assert m, f"{name} not pinned in requirements.lock"
    return m.group(1)


def test_image_is_built_on_the_locked_airflow_and_python() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG AIRFLOW_BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert base, "Dockerfile: ARG AIRFLOW_BASE_IMAGE=apache/airflow:<version>-python<x.y>"
    m = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", base.group(1))
    assert m, base.group(1)
    assert m.group(1) == lock_pin("apache-airflow"), "the base image's Airflow is not the lock's"
    requires = re.search(
        r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    )
    assert requires and m.group(2) == requires.group(1)
    variables = compose_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert variables["AIRFLOW_BASE_IMAGE"]["default"] == base.group(1)
    assert read_env_file(ENV_EXAMPLE)["AIRFLOW_BASE_IMAGE"] == base.group(1)


def test_image_requirements_drop_only_developer_tools() -> None:
    sys.path.insert(0, str(ROOT / "docker"))
    try:
        import image_requirements as ir
    finally:
        sys.path.remove(str(ROOT / "docker"))
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    kept = {ir.normalize(line.split("==")[0]) for line in ir.image_requirements(lock)}
    every = {name for name, _, _ in ir.parse_lock(lock)}
    dropped = every - kept
    assert ir.DEV_ONLY <= dropped
    assert {
        "apache-airflow",
        "great-expectations",
        "oracledb",
        "pymssql",
        "psycopg",
        "minio",
        "lxml",
        "zeep",
    } <= kept
    # a dropped package is required by nothing that is kept
    for name, _, via in ir.parse_lock(lock):
        if name in dropped:
            assert via <= dropped | {"-r requirements.in"}, f"{name} dropped but needed by {via - dropped}"
    # every requirement of requirements.in (that the lock has: it may await a re-lock) but the
    # developer tools reaches the image
    wanted = {
        ir.normalize(re.split(r"[=<>\[ ]", line, maxsplit=1)[0])
        for line in (ROOT / "requirements.in").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert sorted((wanted & every) - kept) == sorted(ir.DEV_ONLY)


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    assert lines[lines.index("*")] == "*", ".dockerignore should start from excluding everything"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert not allowed & {".env", "site", ".venv", ".services", ".airflow", ".git"}
    copied = re.findall(
        r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M
    )
    for sources in copied:
        for src in sources.split():
            assert src.rstrip("/") in allowed, f"Dockerfile copies {src}, which .dockerignore excludes"


# ------------------------------------------------------------------------------------------------
# The site example: what docs/configuration.md tells a site to write actually works
# ------------------------------------------------------------------------------------------------


def test_site_example_sources_and_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    from hurren.source_engines import source_engine
    from hurren.sources import load_sources

    sources = load_sources(SITE_EXAMPLE / "sources.json")
    env = read_env_file(SITE_EXAMPLE / "airflow.env")
    urls = {}
    for source in sources:
        value = env.get(f"AIRFLOW_CONN_{source.conn_id.upper()}")
        assert value, f"docker/site.example/airflow.env has no connection for {source.conn_id}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{source.conn_id.upper()}", value)
        urls[source.dialect] = source_engine(source.conn_id).url  # built, not connected
    assert urls["oracle"].drivername == "oracle+oracledb" and urls["oracle"].query == {
        "service_name": "ORCLPDB1"
    }
    assert urls["mssql"].drivername == "mssql+pymssql" and urls["mssql"].database == "LIS"  # by MsSqlHook


def test_pools_for_the_site_example() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "airflow" / "pools.py")],
        env={**os.environ, "HURREN_SOURCES_FILE": str(SITE_EXAMPLE / "sources.json")},
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    pools = json.loads(result.stdout)
    assert set(pools) == {"hurren_src_example_oracle", "hurren_src_example_mssql"}
    assert all(p["slots"] == 2 and p["description"] for p in pools.values())


def test_airflow_init_script(airflow_db: Path, tmp_path: Path) -> None:
    """docker/airflow/init.sh against a copy of the test metadata DB (SimpleAuthManager: no user)."""
    db = tmp_path / "airflow.db"
    shutil.copy(airflow_db, db)
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
        "HURREN_SOURCES_FILE": str(SITE_EXAMPLE / "sources.json"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "docker" / "airflow" / "init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Uploaded 2 pool(s)" in result.stdout
    with sqlite3.connect(db) as conn:
        pools = dict(conn.execute("select pool, slots from slot_pool"))
    assert pools["hurren_src_example_oracle"] == pools["hurren_src_example_mssql"] == 2


# ------------------------------------------------------------------------------------------------
# docker/postgres/roles.sql on a scratch PostgreSQL 15 (the compose image's major version)
# ------------------------------------------------------------------------------------------------

PG_BIN = Path(os.environ.get("HURREN_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture(scope="module")
def scratch_postgres() -> Iterator[dict[str, str]]:
    """A throw-away cluster on a unix socket only (no TCP port), as the postgres OS user when root."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(
            f"PostgreSQL 15 server binaries not found in {PG_BIN}: run scripts/services up pg "
            "(it installs them) or apt-get install -y postgresql-15"
        )
    root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="hurren-roles-", dir="/tmp"))  # short: unix socket path limit

    def as_pg(*cmd: str) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", "postgres", "--", *cmd] if root else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, check=False, timeout=120)

    try:
        if root:
            shutil.chown(base, "postgres", "postgres")
        base.chmod(0o700)
        done = as_pg(
            str(PG_BIN / "initdb"),
            "-D",
            str(base / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        options = f"-k {base} -c listen_addresses='' -p 5432 -c fsync=off"
        done = as_pg(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(base / "data"),
            "-o",
            options,
            "-l",
            str(base / "log"),
            "-w",
            "start",
        )
        assert done.returncode == 0, done.stdout + done.stderr + (base / "log").read_text()
        yield {"PGHOST": str(base), "PGPORT": "5432", "PGUSER": "postgres"}
    finally:
        if (base / "data" / "postmaster.pid").exists():
            as_pg(str(PG_BIN / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _run_roles(pg: dict[str, str], **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{PG_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        **pg,
        **settings,
    }
    return subprocess.run(
        ["bash", str(ROOT / "docker" / "postgres" / "init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _psql(pg: dict[str, str], sql: str) -> str:
    env = {"PATH": f"{PG_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", **pg}
    return subprocess.run(
        ["psql", "-X", "-At", "-d", "postgres", "-c", sql],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_roles_sql_creates_both_databases_idempotently(scratch_postgres: dict[str, str]) -> None:
    settings = {
        "HURREN_PG_USER": "hurren",
        "HURREN_PG_PASSWORD": "it's a store; password",
        "HURREN_STORE_DB": "hurren_store",
        "AIRFLOW_DB_USER": "airflow",
        "AIRFLOW_DB_PASSWORD": "x" * 40,
        "AIRFLOW_DB": "airflow",
    }
    for _ in range(2):
        done = _run_roles(scratch_postgres, **settings)
        assert done.returncode == 0, done.stdout + done.stderr
    roles = _psql(
        scratch_postgres,
        "select rolname, rolcanlogin, rolcreatedb, rolsuper from pg_roles "
        "where rolname in ('hurren', 'airflow') order by rolname",
    )
    assert roles.splitlines() == ["airflow|t|f|f", "hurren|t|t|f"]
    assert roles_sql_attributes("store_role") == native_facts()["store role attributes"]
    owners = _psql(
        scratch_postgres,
        "select datname, pg_get_userbyid(datdba) from pg_database "
        "where datname in ('hurren_store', 'airflow') order by datname",
    )
    assert owners.splitlines() == ["airflow|airflow", "hurren_store|hurren"]
    # neither application role may connect to the other's database
    denied = _psql(
        scratch_postgres,
        "select has_database_privilege('airflow', 'hurren_store', 'CONNECT'), "
        "has_database_privilege('hurren', 'airflow', 'CONNECT')",
    )
    assert denied == "f|f"

    before = _psql(scratch_postgres, "select rolpassword from pg_authid where rolname = 'hurren'")
    done = _run_roles(scratch_postgres, **{**settings, "HURREN_PG_PASSWORD": "rotated"})
    assert done.returncode == 0, done.stderr
    after = _psql(scratch_postgres, "select rolpassword from pg_authid where rolname = 'hurren'")
    assert before.startswith("SCRAM-SHA-256$") and after != before, "a changed password must be applied"


def test_roles_sql_refuses_missing_settings(scratch_postgres: dict[str, str]) -> None:
    done = _run_roles(scratch_postgres, HURREN_PG_USER="hurren", HURREN_STORE_DB="hurren_store")
    assert done.returncode != 0
    assert "set HURREN_PG_USER, HURREN_PG_PASSWORD" in done.stderr


# ------------------------------------------------------------------------------------------------
# The compose tool itself
# ------------------------------------------------------------------------------------------------


def _tools() -> list[list[str]]:
    """Compose implementations to validate with: docker-compose (required), docker compose (if any)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(INSTALL_HINT)
    tools = [[exe]]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        tools.append([docker, "compose"])
    return tools


def _filled_env(tmp_path: Path) -> Path:
    """.env.example with every empty value filled with a placeholder, the site example as site."""
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"([A-Z0-9_]+)=(.*)", line)
        if m and m.group(1) == "HURREN_SITE_DIR":
            line = f"HURREN_SITE_DIR={SITE_EXAMPLE}"
        elif m and m.group(1) == "HURREN_PLATFORM_URL":
            line = "HURREN_PLATFORM_URL=http://simulator:58080/Myhealth"
        elif m and m.group(2) == "" and m.group(1) not in ("HURREN_STORE_URL",):
            line = f"{m.group(1)}=test-{m.group(1).lower().replace('_', '-')}"
        lines.append(line)
    path = tmp_path / "filled.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _compose(tool: list[str], env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # a clean environment: a developer's exported variables must not fill in what .env lacks
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [
            *tool,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE_FILE),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_file_validates(tmp_path: Path) -> None:
    env_file = _filled_env(tmp_path)
    for tool in _tools():
        done = _compose(tool, env_file, "--profile", "test", "--profile", "flower", "config")
        assert done.returncode == 0, f"{' '.join(tool)} config: {done.stderr}"
        rendered = yaml.safe_load(done.stdout)
        assert set(rendered["services"]) == {
            *AIRFLOW_SERVICES,
            "postgres",
            "postgres-init",
            "redis",
            "minio",
            "minio-init",
            "flower",
            "simulator",
        }
        # without the profiles (docker-compose 1.29 lists profiled services all the same)
        default = _compose(tool, env_file, "config", "--quiet")
        assert default.returncode == 0, default.stderr


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    for tool in _tools():
        done = _compose(tool, ENV_EXAMPLE, "config", "--quiet")
        assert done.returncode != 0, f"{' '.join(tool)}: .env.example as shipped must not start a stack"
        assert re.search(r"set [A-Z_0-9]+ in \.env", done.stderr), done.stderr[-2000:]
