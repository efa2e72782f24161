"""DAG integrity: every file in dags/ parses cleanly, fast and without I/O; every DAG follows our rules.

File checks are parametrised by file (a file that fails to import has no DAG id); DAG checks by
DAG id. The parse-time checks run each file in a fresh interpreter (``_PROBE``), so modules cached
by this process hide nothing, and measure only what the dag processor would pay for the file:
airflow itself is imported first, untimed, as the processor has it loaded already. One more fresh
interpreter loads Airflow's plugins (``_PLUGINS_PROBE``): the library lives under plugins/ too.
All probes start together on first use.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.airflow import DAGS_FOLDER, PROJECT_ROOT, dag_files, load_dagbag

IMPORT_BUDGET_S = 2.0
MIN_RETRIES = 2

_FILES = [pytest.param(path, id=path.relative_to(DAGS_FOLDER).as_posix()) for path in dag_files()]
_DAGS = [pytest.param(dag_id, id=dag_id) for dag_id in sorted(load_dagbag().dags)]


# A fresh interpreter parses one DAG file with Airflow's own importer (as the dag processor does)
# while every way out of the process is blocked and recorded: sockets and DNS (HTTP clients, S3,
# network databases through Python), SQLAlchemy connections (any dialect, Airflow's metadata DB
# included), sqlite3 and the C-socket DB drivers (libpq, Oracle, SQL Server, MySQL), subprocesses,
# and calls to the Airflow API (Variable.get, Connection.get ... at top level). Attempts are recorded
# even when the DAG file catches the error, so ``try: ... except: default`` does not hide them.
_PROBE = r"""
import importlib.abc, importlib.machinery, json, socket, sqlite3, subprocess, sys, time
from pathlib import Path

path, dags_folder, out = sys.argv[1], sys.argv[2], sys.argv[3]
attempts = []

start = time.perf_counter()
import airflow  # noqa: F401
from airflow.dag_processing.importers import get_importer_registry
from airflow.sdk.execution_time import task_runner
import sqlalchemy
import sqlalchemy.engine
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

# Warm-up, untimed and unguarded: a long-running dag processor has Airflow's lazily imported parts
# loaded already (timetables; croniter, which runs `file` on the interpreter at import; decorators).
WARM_UP = '''
from airflow.sdk import dag, task

@dag(schedule="0 3 * * *", catchup=False)
def warm_up():
    task(lambda: None, task_id="noop")()

warm_up()
'''
warm_up = Path(out).with_name("warm_up_dag.py")
warm_up.write_text(WARM_UP)
warmed = get_importer_registry().get_importer(str(warm_up)).import_file(
    file_path=str(warm_up), bundle_path=warm_up.parent, bundle_name="warm-up", safe_mode=False
)
assert warmed.dags and not warmed.errors, [e.stacktrace or e.message for e in warmed.errors]
baseline = time.perf_counter() - start


def blocked(kind, detail):
    entry = f"{kind}: {detail}"
    if entry not in attempts:
        attempts.append(entry)
    return ConnectionRefusedError(f"{kind} at DAG parse time ({detail}) blocked by test_dag_integrity")


def guard(kind, describe=lambda *a, **k: a[:1]):
    def refuse(*args, **kwargs):
        try:
            detail = describe(*args, **kwargs)
        except Exception:
            detail = "?"
        raise blocked(kind, detail)
    return refuse


socket.socket.connect = guard("socket connect", lambda self, address, *a: address)
socket.socket.connect_ex = guard("socket connect", lambda self, address, *a: address)
socket.create_connection = guard("socket connect", lambda address, *a, **k: address)
socket.getaddrinfo = guard("DNS lookup", lambda host, *a, **k: host)
socket.gethostbyname = guard("DNS lookup", lambda host, *a: host)
sqlite3.connect = sqlite3.dbapi2.connect = guard("sqlite3 connect", lambda database, *a, **k: database)
subprocess.Popen.__init__ = guard("subprocess", lambda self, args, *a, **k: args)
sqlalchemy.create_engine = sqlalchemy.engine.create_engine = guard(
    "SQLAlchemy create_engine", lambda url, *a, **k: make_url(url).render_as_string(hide_password=True)
)


@event.listens_for(Engine, "do_connect")
def _no_connect(dialect, conn_rec, cargs, cparams):
    raise blocked("database connect", f"{dialect.name}+{dialect.driver}")


DRIVERS = ("psycopg", "psycopg2", "oracledb", "cx_Oracle", "pymssql", "pyodbc", "pymysql", "MySQLdb")


def patch_driver(module):
    name = module.__name__
    module.connect = guard(f"{name}.connect", lambda *a, **k: k.get("host") or "details not shown")
    if name == "psycopg":
        for cls in (module.Connection, module.AsyncConnection):
            cls.connect = classmethod(
                guard("psycopg.connect", lambda cls, *a, **k: k.get("host") or "details not shown")
            )


class PatchDriversOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in DRIVERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch_driver(module)

        spec.loader.exec_module = exec_and_patch
        return spec


for name in DRIVERS:
    if name in sys.modules:
        patch_driver(sys.modules[name])
sys.meta_path.insert(0, PatchDriversOnImport())


class NoSupervisor:
    # stands in for the dag processor's channel to the API server (Variables, Connections, XComs)
    def send(self, msg, *a, **k):
        raise blocked("Airflow API call", type(msg).__name__)

    def __getattr__(self, name):
        return guard("Airflow API call", lambda *a, **k: name)


task_runner.SUPERVISOR_COMMS = NoSupervisor()

importer = get_importer_registry().get_importer(path)
start = time.perf_counter()
result = importer.import_file(
    file_path=path, bundle_path=Path(dags_folder), bundle_name="dags-folder", safe_mode=True
)
seconds = time.perf_counter() - start

Path(out).write_text(json.dumps({
    "seconds": seconds,
    "baseline_seconds": baseline,
    "dag_ids": sorted(d.dag_id for d in result.dags),
    "errors": [e.stacktrace or e.message for e in result.errors],
    "attempts": attempts,
}))
"""


# Airflow's plugin loader (scheduler, api-server, every task process, dag.test()) imports *every* .py
# file under plugins/, each as a top-level module named after the file: without plugins/.airflowignore
# excluding the library, plugins/hurren/platform/xml.py becomes sys.modules["xml"] and the standard
# library's xml package is gone from that process.
_PLUGINS_PROBE = r"""
import json, os, sys
from pathlib import Path
import xml.etree.ElementTree  # noqa: F401  (minio, zeep ... have it loaded in real processes)
import airflow
from airflow import plugins_manager
from airflow.configuration import conf

folder = os.path.realpath(conf.get("core", "plugins_folder"))
library = os.path.join(folder, "hurren") + os.sep
before = {name: id(module) for name, module in sys.modules.items()}
plugins_manager.ensure_plugins_loaded()


def origin(module):
    return os.path.realpath(getattr(module, "__file__", None) or "")


Path(sys.argv[1]).write_text(json.dumps({
    "errors": plugins_manager.get_import_errors(),
    "replaced": sorted(n for n, m in sys.modules.items() if n in before and id(m) != before[n]),
    "library_out_of_package": sorted(
        f"{n} <- {origin(m)}" for n, m in list(sys.modules.items())
        if origin(m).startswith(library) and n != "hurren" and not n.startswith("hurren.")
    ),
}))
"""


PLUGINS = "plugins"


def _run_probe(code: str, *args: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="airflow-probe-") as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run(
            [sys.executable, "-c", code, *args, str(out)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            return {"crashed": f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"}
        return json.loads(out.read_text())


@functools.cache
def _probes() -> dict[Path | str, dict[str, Any]]:
    """Every probe, one fresh interpreter each, all started together on first use (~3 s each)."""
    jobs: dict[Path | str, tuple[str, ...]] = {PLUGINS: (_PLUGINS_PROBE,)}
    jobs.update({path: (_PROBE, str(path), str(DAGS_FOLDER)) for path in dag_files()})
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {key: pool.submit(_run_probe, *job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def _probe(key: Path | str, hint: str = "") -> dict[str, Any]:
    result = _probes()[key]
    if "crashed" in result:
        pytest.fail(f"probe for {key} crashed the interpreter ({hint}) {result['crashed']}", pytrace=False)
    return result


def test_plugins_folder_loads_cleanly():
    hint = (
        "Airflow's plugin loader imports every .py under plugins/ as a top-level module (a package's "
        "__main__.py as __main__, so its `if __name__ == '__main__'` block runs); keep the library "
        "out of it with a plugins/.airflowignore that lists `hurren/`."
    )
    result = _probe(PLUGINS, hint)
    assert not result["replaced"], f"modules replaced by plugin loading: {result['replaced']}. {hint}"
    assert not result["library_out_of_package"], (
        "library modules imported outside their package:\n  "
        + "\n  ".join(result["library_out_of_package"])
        + f"\n{hint}"
    )
    assert not result["errors"], f"plugin import errors: {result['errors']}. {hint}"


# ---------------------------------------------------------------------------------------------- files


def test_dags_folder_is_not_empty(dagbag):
    assert dagbag.dags, (
        f"no DAG found in {DAGS_FOLDER}: at least one is expected (an empty folder means a broken "
        f"checkout, a wrong [core] dags_folder or an .airflowignore that hides everything); "
        f"import errors: {dict(dagbag.import_errors)}"
    )


@pytest.mark.parametrize("path", _FILES)
def test_dag_file_imports_without_errors(path: Path, dagbag):
    relative = path.relative_to(DAGS_FOLDER).as_posix()
    assert relative not in dagbag.import_errors, f"{relative}:\n{dagbag.import_errors[relative]}"


@pytest.mark.parametrize("path", _FILES)
def test_dag_file_imports_fast(path: Path):
    result = _probe(path)
    assert not result["errors"], "\n".join(result["errors"])
    assert result["seconds"] < IMPORT_BUDGET_S, (
        f"{path.name} took {result['seconds']:.2f} s to parse (budget {IMPORT_BUDGET_S} s, airflow "
        "itself excluded): the dag processor re-parses it every 30 s. Import heavy libraries "
        "(great_expectations, pandas, hurren modules that use them) inside tasks, not at top level."
    )


@pytest.mark.parametrize("path", _FILES)
def test_dag_file_does_no_io_at_parse_time(path: Path):
    result = _probe(path)
    assert not result["attempts"], (
        f"{path.name} reaches out while being parsed (the dag processor parses it every 30 s, "
        "everywhere): move this into a task:\n  " + "\n  ".join(result["attempts"])
    )


# ----------------------------------------------------------------------------------------------- DAGs


@pytest.mark.parametrize("dag_id", _DAGS)
def test_dag_has_tags(dag_id: str, dagbag):
    assert dagbag.dags[dag_id].tags, f"{dag_id}: give it tags=[...] so it can be found in the UI"


@pytest.mark.parametrize("dag_id", _DAGS)
def test_dag_has_docs(dag_id: str, dagbag):
    doc = dagbag.dags[dag_id].doc_md
    assert doc and doc.strip(), f"{dag_id}: give it a module docstring and doc_md=__doc__"


@pytest.mark.parametrize("dag_id", _DAGS)
def test_dag_has_an_owner(dag_id: str, dagbag):
    unowned = sorted(t.task_id for t in dagbag.dags[dag_id].tasks if (t.owner or "airflow") == "airflow")
    assert not unowned, f"{dag_id}: set default_args={{'owner': ...}} (not 'airflow'); tasks: {unowned}"


@pytest.mark.parametrize("dag_id", _DAGS)
def test_dag_retries_at_least_twice(dag_id: str, dagbag):
    few = {t.task_id: t.retries for t in dagbag.dags[dag_id].tasks if (t.retries or 0) < MIN_RETRIES}
    assert not few, f"{dag_id}: tasks with fewer than {MIN_RETRIES} retries: {few}"


@pytest.mark.parametrize("dag_id", _DAGS)
def test_dag_does_not_catch_up(dag_id: str, dagbag):
    assert dagbag.dags[dag_id].catchup is False, f"{dag_id}: set catchup=False"


@pytest.mark.parametrize("dag_id", _DAGS)
def test_no_task_outlives_the_run_lease(dag_id: str, dagbag):
    """A run's etl_run row left running longer than ``incremental.RUN_LEASE`` is taken for interrupted
    by the next run of its stream: that holds only if every task ends (execution_timeout) before."""
    from hurren.incremental import RUN_LEASE

    # the callables that start etl_run rows
    recording = {"extract_validate_load", "load_stream", "reconcile_pacs"}
    tasks = [t for t in dagbag.dags[dag_id].tasks if getattr(t, "python_callable", None) is not None
             and t.python_callable.__name__ in recording]  # fmt: skip
    long = {t.task_id: t.execution_timeout for t in tasks
            if t.execution_timeout is None or t.execution_timeout >= RUN_LEASE}  # fmt: skip
    assert not long, f"{dag_id}: tasks without an execution_timeout below {RUN_LEASE}: {long}"
