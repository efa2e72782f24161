"""No patient identifier leaves the store: the demo, end to end through the real DAGs, everything
it writes outside the spec tables scanned.

The run (module fixture, ~1.5 min): ``hurren_testkit.demo.generate`` writes the demo hospital of
``include/sources.json`` (SQLite, small volumes, 25 % defective units) with lab and exam
reports, PACS views and accept/quote records; then, with ``dag.test()`` (the ``run_dag``
fixture), every DAG the demo runs, found by dag id in ``dags/`` as parsed with the demo's
configuration: ``lab_reports__*``, ``exam_reports__*``, ``pacs__*``, ``records__*``,
``daily_counts`` and ``push_reports`` (to an in-process platform simulator refusing a fifth of
the reports with ``error:simulated failure``, quoting the report's patient by name and ID number
as a careless platform may, so the refusals' paths are scanned too); then the
Data Docs site is published into a docs bucket of its own, every page of the analysts' app
(``hurren.reports.web``, FastAPI ``TestClient``) reachable by a link from its home page, the
DAG/run pages of every run and the CSV/XLSX exports are requested, and the demo's closing
``summary`` and ``push status`` printed. No task id is relied on.

Scanned (each place must have been scanned, non-empty, or the test fails): the task logs —
``dag.test()`` prints them instead of writing per-task files, so, as scripts/demo files
``airflow dags test`` output in ``.services/demo/log/<dag_id>.log``, each run's output is filed in
``logs/dag_test/<dag_id>.log`` of the test AIRFLOW_HOME, and every file under ``logs/`` is
scanned; every XCom value of the metadata DB (deserialised) and every text value of every other
table of it; the rest of the stdout/stderr pytest captured; every ``hurren`` log record down to
DEBUG; every object of the docs bucket; every served page body and export (XLSX as the text of
its XML parts); ``etl_run.details``; ``etl_quarantine.reason`` / ``.rules``; every text column
of ``push_outbox`` and ``push_log`` (``record_key`` excepted, see below), of the reconciliation
tables and of the validation results table.

Looked for: every ``name``, ``id_no``, ``card_no``, ``birth_date`` and ``PATIENTNAME`` value of
every table of the source database (defective values included; as is, JSON-escaped and
percent-encoded), and every birth date (from ``birth_date`` and from inside 18-character ID
numbers) as ``YYYY-MM-DD``, ``YYYYMMDD``, ``YYYY/MM/DD`` and ``YYYY年MM月DD日`` between
non-digits; plus anything shaped like an 18-character ID number (``masking.ID18``) that is a
valid one (birth date, check character). A name that is also (part of) another field's value in
the source (a doctor with a patient's name) cannot be told from it and is not looked for, as in
``masking.leaks``; the test reports how many.

A canary proves the scanner is not blind: an identifier planted in a task log file, an XCom and a
Data Docs object (served by the app) is found in each, through the same collection code.

Not scanned, by design (the store is patient-data grade): the spec tables, ``etl_quarantine.payload``
(the held rows as extracted), ``etl_quarantine.record_key`` (the store's own key of a held row;
accept/quote records carry ``id_no`` in theirs, D16) and ``push_log.answer`` (the platform's words
as it wrote them, the audit copy: the refusals quote patients). Where they are shown (pages,
exports) or logged, the scan of that output covers them; ``push_log.answer`` is checked to hold
the quoted identifiers, so the masked copies elsewhere were tested on real quotes.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import MetaData, String, Text, create_engine, inspect, select

from hurren import spec, store
from hurren.reports import masking
from hurren.settings import settings
from hurren_testkit import demo, synthetic
from tests.fixtures.airflow import AIRFLOW_HOME, BUNDLE_NAME, DAGS_FOLDER

pytestmark = pytest.mark.services

BEIJING = ZoneInfo("Asia/Shanghai")
# the demo, small: ~1-2 min of DAG runs with Great Expectations on 2 cores
VOLUME = {
    "lab": 40,
    "exam": 16,
    "pacs_instances": 2,
    "accept": 16,
    "quote": 10,
    "defect_rate": 0.25,
    "seed": 7,
}
REPORT_PREFIXES = ("lab_reports__", "exam_reports__", "pacs__", "records__")
MAX_PAGES = 800
# during push_reports: refusals that quote the patient (name, ID number), as a careless platform may
REFUSALS = {"error_rate": 0.2, "seed": 5, "methods": ["ArchiveAutoReport"], "quote_identifiers": True}
RUN_LOGS = AIRFLOW_HOME / "logs" / "dag_test"  # each DAG run's console output (task logs), one file per DAG
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y年%m月%d日")


# --- what is looked for ---------------------------------------------------------------------------


@dataclass
class Identifiers:
    """The clear identifiers of the source database, and a scanner for them."""

    values: dict[str, str] = field(default_factory=dict)  # literal value -> its field
    dates: dict[str, str] = field(default_factory=dict)  # a birth date in some format -> its origin
    ambiguous: set[str] = field(default_factory=set)  # also another field's value: not looked for
    fields: Counter[str] = field(default_factory=Counter)  # field -> distinct values found in the source

    def needles(self) -> dict[str, tuple[str, str]]:
        """Each value as it could be written: as is, JSON-escaped (``ensure_ascii``) and
        percent-encoded (a URL) -> (field, value)."""
        out: dict[str, tuple[str, str]] = {}
        for v, f in self.values.items():
            for spelling in (v, json.dumps(v)[1:-1], quote(v, safe="")):
                out.setdefault(spelling, (f, v))
        return out

    def find(self, body: str, needles: dict[str, tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        """(field, value) of every identifier in ``body``."""
        needles = needles if needles is not None else self.needles()
        found = [hit for n, hit in needles.items() if n in body]
        for v, origin in self.dates.items():
            if v in body and re.search(rf"(?<!\d){re.escape(v)}(?!\d)", body):
                found.append((origin, v))
        found += [("id-shaped", m.group()) for m in masking.ID18.finditer(body) if _id_like(body, m)]
        return found


def _id_like(body: str, m: re.Match[str]) -> bool:
    """An ID-number-shaped match that could be one: a valid GB 11643 number (birth date and check
    character), not the digits of a decimal fraction (``0.055528000000776956`` s in a log line)."""
    return body[m.start() - 1 : m.start()] != "." and synthetic.is_valid_id_no(m.group().upper())


def source_identifiers(url: str, *, near: date) -> Identifiers:
    engine = create_engine(url)
    md = MetaData()
    md.reflect(engine)
    out = Identifiers()
    others: set[str] = set()
    births: dict[date, str] = {}
    seen: set[tuple[str, str]] = set()
    with engine.connect() as conn:
        for t in md.tables.values():
            if t.name == synthetic.LABEL_TABLE:
                continue
            for row in conn.execute(select(t)).mappings():
                for k, v in row.items():
                    if v is None or not str(v).strip():
                        continue
                    value = str(v).strip()
                    if k not in spec.PATIENT_IDENTIFIERS:
                        if len(value) < 64:
                            others.add(value)
                        continue
                    if len(value) >= masking.MIN_SCRUB_LENGTH:
                        out.values.setdefault(value, k)
                        seen.add((k, value))
                    if k == "birth_date":
                        try:
                            births.setdefault(date.fromisoformat(value), "birth_date")
                        except ValueError:
                            pass
                    if k == "id_no" and re.fullmatch(r"\d{17}[\dXx]", value):
                        try:
                            births.setdefault(
                                datetime.strptime(value[6:14], "%Y%m%d").date(), "birth date in id_no"
                            )
                        except ValueError:
                            pass
    engine.dispose()
    out.fields.update(k for k, _ in seen)
    for v, f in list(out.values.items()):
        if f in ("name", "PATIENTNAME") and (v in others or any(v in o for o in others)):
            del out.values[v]
            out.ambiguous.add(v)
    for d, origin in births.items():
        if abs((d - near).days) <= 400:  # a newborn's birth date reads like the data days on every page
            out.ambiguous.add(d.isoformat())
            continue
        for fmt in DATE_FORMATS:
            out.dates.setdefault(d.strftime(fmt), origin)
    return out


# --- the demo run ------------------------------------------------------------------------------


@dataclass
class DemoRun:
    day: date
    source_url: str
    store_url: str
    docs_bucket: str
    client: object  # minio
    sim: object  # hurren_testkit.simulator.Simulator
    runs: dict[str, object] = field(default_factory=dict)  # dag_id -> DagRunResult
    # phase -> stdout/stderr pytest captured (the DAG runs' output goes to RUN_LOGS instead)
    captured: dict[str, str] = field(default_factory=dict)
    published: object = None
    pages: dict[str, str] = field(default_factory=dict)  # path -> body (text) of every served page
    seconds: dict[str, float] = field(default_factory=dict)
    records: list[str] = field(default_factory=list)  # every 'hurren' log record, DEBUG and up


class _Records(logging.Handler):
    """Keeps every record as text: message, arguments, exception."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.texts.append(f"{record.levelname} {record.name} {record.getMessage()} {record.args!r} {exc}")


def _demo_dags():
    """The DAGs of dags/, parsed now (with the demo's sources configuration in the environment)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name=BUNDLE_NAME)
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _capture(request: pytest.FixtureRequest) -> str:
    """What pytest captured on stdout/stderr since the last call (global capture, fd level)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None or not capman.is_globally_capturing():
        return ""
    out, err = capman.read_global_capture()
    return f"{out}\n{err}"


@pytest.fixture(scope="module")
def demo_run(request, services, make_database, s3, run_dag, tmp_path_factory) -> Iterator[DemoRun]:
    from hurren import crypto
    from hurren_testkit.simulator import Simulator, SimulatorConfig

    t0 = time.monotonic()
    handler = None
    mp = pytest.MonkeyPatch()
    sim = Simulator(config=SimulatorConfig(port=0, private_key=crypto.generate_keypair()[0]))
    sim.__enter__()
    docs_bucket = f"{s3.bucket_docs}-privacy"
    s3.client.make_bucket(docs_bucket)
    try:
        # the demo's own sources configuration (include/sources.json); the platform: the simulator
        for name in ("HURREN_SOURCES_FILE", "AIRFLOW_CONN_HURREN_PLATFORM", "AIRFLOW_VAR_HURREN_SOURCES"):
            mp.delenv(name, raising=False)
        day = demo.demo_day()
        env = demo.generate(directory=tmp_path_factory.mktemp("demo"), day=day, **VOLUME)
        assert len(env) == 1, env  # one SQLite demo hospital
        for k, v in env.items():
            mp.setenv(k, v)
        source_url = f"sqlite:///{json.loads(next(iter(env.values())))['host']}"
        store_url = make_database("hurren_privacy_demo")
        for k, v in {
            "HURREN_STORE_URL": store_url, "HURREN_S3_BUCKET_REPORTS": s3.bucket_reports,
            "HURREN_S3_BUCKET_DOCS": docs_bucket, "HURREN_PLATFORM_URL": sim.url,
            "HURREN_PLATFORM_PUBLIC_KEY": sim.public_key, "HURREN_PLATFORM_ORG_CODE": "270258069",
            "HURREN_PLATFORM_ORG_NAME": "demo", "HURREN_PLATFORM_VISITOR_CODE": "demo",
            "HURREN_PLATFORM_VISITOR_KEY": "demo-local",
        }.items():  # fmt: skip
            mp.setenv(k, v)
        settings.cache_clear()
        run = DemoRun(day=day, source_url=source_url, store_url=store_url, docs_bucket=docs_bucket,
                      client=s3.client, sim=sim)  # fmt: skip
        run.seconds["generate"] = time.monotonic() - t0
        run.captured["generate"] = _capture(request)
        # the library's log records down to DEBUG (the console shows INFO and up), formatted
        hurren_log, handler = logging.getLogger("hurren"), _Records()
        level = hurren_log.level
        hurren_log.setLevel(logging.DEBUG)
        hurren_log.addHandler(handler)
        run.records = handler.texts

        # the DAGs, in the order scripts/demo runs them
        dags = _demo_dags()
        run_at = datetime.combine(day + timedelta(days=1), datetime.min.time(), BEIJING)
        order = [d for p in REPORT_PREFIXES for d in sorted(dags) if d.startswith(p)]
        assert {d.split("__")[0] for d in order} == {"lab_reports", "exam_reports", "pacs", "records"}, order
        order += ["daily_counts", "push_reports"]
        for dag_id in order:
            t = time.monotonic()
            at = run_at + timedelta(hours=3) if dag_id == "daily_counts" else run_at  # counts the day before
            if dag_id == "push_reports":
                sim.platform.faults.update(REFUSALS)  # refusals too: their answers, and what we make of them
            try:
                result = run_dag(dags[dag_id], logical_date=at, timeout=180)
            finally:
                sim.platform.faults.reset()
            assert result.state == "success", result.summary()
            run.runs[dag_id] = result
            run.seconds[dag_id] = time.monotonic() - t
            # dag.test() writes no per-task log files: tasks log to the console. As scripts/demo
            # files `airflow dags test` output in .services/demo/log/<dag_id>.log, file it under logs/.
            output = _capture(request)
            RUN_LOGS.mkdir(parents=True, exist_ok=True)
            (RUN_LOGS / f"{dag_id}.log").write_text(output, encoding="utf-8")

        # Data Docs into the docs bucket, then every page of the analysts' app
        t = time.monotonic()
        from hurren.clients import store_engine
        from hurren.reports import datadocs

        engine = store_engine()
        run.published = datadocs.publish(engine, s3.client, docs_bucket, keep_days=datadocs.DEFAULT_KEEP_DAYS)
        engine.dispose()
        run.seconds["datadocs"] = time.monotonic() - t
        t = time.monotonic()
        run.pages = crawl(run)
        run.seconds["pages"] = time.monotonic() - t
        run.captured["data docs, pages"] = _capture(request)
        # what scripts/demo prints at the end
        from hurren.push.__main__ import main as push_cli

        print(demo.summary())
        assert push_cli(["status"]) == 0
        run.captured["demo summary, push status"] = _capture(request)
        run.seconds["total"] = time.monotonic() - t0
        yield run
    finally:
        if handler is not None:
            hurren_log.removeHandler(handler)
            hurren_log.setLevel(level)
        mp.undo()
        settings.cache_clear()
        sim.__exit__(None, None, None)
        for o in s3.client.list_objects(docs_bucket, recursive=True):
            s3.client.remove_object(docs_bucket, o.object_name)
        s3.client.remove_bucket(docs_bucket)


def _xlsx_text(body: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        return " ".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".xml"))


def _body(response) -> str:  # noqa: ANN001 - an httpx Response
    ctype = response.headers.get("content-type", "")
    if "spreadsheet" in ctype:
        return _xlsx_text(response.content)
    return response.content.decode("utf-8-sig", "replace")


def crawl(run: DemoRun, extra: Iterable[str] = ()) -> dict[str, str]:
    """Every page of the reports app reachable from its home page by links (static files aside),
    the DAG and run pages of every run, and the exports: path -> body."""
    from fastapi.testclient import TestClient

    from hurren.reports import web

    seeds = ["/", "/datadocs", "/docs/index.html", *extra]
    for result in run.runs.values():
        seeds += [f"/dag/{result.dag_id}", f"/run/{result.dag_id}/{quote(result.run_id, safe='')}"]
    orgs = {json.loads(r.details or "{}").get("org_code") for r in _rows(run.store_url, store.run)} - {None}
    for org in orgs:
        seeds += [f"/hospitals/{org}/quarantine?status=all", f"/hospitals/{org}/quarantine.csv?status=all",
                  f"/hospitals/{org}/quarantine.xlsx?status=all", f"/hospitals/{org}/scorecard"]  # fmt: skip
    pages: dict[str, str] = {}
    seen: set[str] = set()
    todo = list(reversed(seeds))
    base = "http://testserver"
    with TestClient(web.create_app(), base_url=base, follow_redirects=True) as c:
        while todo and len(seen) < MAX_PAGES:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            where = r.url.path + (f"?{r.url.query.decode()}" if r.url.query else "")
            pages[where] = _body(r)
            if not r.headers.get("content-type", "").startswith("text/html"):
                continue
            for href in re.findall(r'href="([^"#]+)"', r.text):
                full = urlsplit(urljoin(base + where, href.replace("&amp;", "&")))
                if full.netloc != "testserver" or full.path.startswith("/static/"):
                    continue
                todo.append(full.path + (f"?{full.query}" if full.query else ""))
    assert len(seen) < MAX_PAGES, "the crawl did not finish"
    return pages


def _rows(url: str, table) -> list:  # noqa: ANN001 - a Table
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(table.name):
                return []
            return list(conn.execute(select(table)))
    finally:
        engine.dispose()


# --- collecting what was written ----------------------------------------------------------------


def task_logs(home: Path = AIRFLOW_HOME) -> dict[str, str]:
    return {
        str(p.relative_to(home)): p.read_bytes().decode("utf-8", "replace")
        for p in sorted((home / "logs").rglob("*"))
        if p.is_file()
    }


def xcom_values() -> dict[str, str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    out = {}
    with create_session() as session:
        for x in session.scalars(select(XComModel)):
            key = f"{x.dag_id}/{x.run_id}/{x.task_id}[{x.map_index}]/{x.key}"
            try:
                value = json.dumps(XComModel.deserialize_value(x), ensure_ascii=False, default=str)
            except Exception:  # noqa: BLE001 - not ours to read: scan what is stored
                value = str(x.value)
            out[key] = value
    return out


def metadata_db_text() -> dict[str, str]:
    """Every text value of every table of the Airflow metadata DB but the XComs, by table."""
    from airflow.settings import engine

    md = MetaData()
    md.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for t in md.tables.values():
            if t.name == "xcom":
                continue
            parts = []
            for row in conn.execute(select(t)):
                for v in row:
                    if isinstance(v, bytes):
                        v = v.decode("utf-8", "replace")
                    if v is not None:
                        parts.append(str(v))
            if parts:
                out[t.name] = "\n".join(parts)
    return out


def docs_objects(client, bucket: str) -> dict[str, str]:  # noqa: ANN001 - minio
    from hurren.reports import datadocs

    out = {}
    for o in client.list_objects(bucket, recursive=True):
        body = datadocs.read_object(client, bucket, o.object_name) or b""
        out[o.object_name] = body.decode("utf-8", "replace")
    return out


SKIPPED_COLUMNS = {
    # the store's own key of a held row (accept/quote records carry id_no in theirs, D16), the held
    # rows as extracted and the platform's answers as written: patient-data grade by design, like
    # the spec tables. push_outbox.record_key is scanned: its accept/quote keys are opaque.
    store.quarantine.name: {"record_key", "payload"},
    store.push_log.name: {"answer"},
}


def store_texts(url: str) -> dict[str, str]:
    """Text columns of the store's operational tables (spec tables aside), by table.column."""
    from hurren.reports import results

    tables = [store.run, store.quarantine, store.outbox, store.push_log, store.pacs_recon,
              store.daily_count_recon, results.validation_result]  # fmt: skip
    out = {}
    engine = create_engine(url)
    with engine.connect() as conn:
        for t in tables:
            if not inspect(conn).has_table(t.name):
                continue
            cols = [
                c
                for c in t.c
                if isinstance(c.type, String | Text) and c.name not in SKIPPED_COLUMNS.get(t.name, ())
            ]
            rows = list(conn.execute(select(*cols)))
            for i, c in enumerate(cols):
                values = [str(r[i]) for r in rows if r[i] is not None]
                out[f"{t.name}.{c.name}"] = "\n".join(values)
    engine.dispose()
    return out


def collect(run: DemoRun) -> dict[str, dict[str, str]]:
    """Place -> {item -> text}: everything the demo run wrote outside the spec tables."""
    stored = store_texts(run.store_url)
    pages = {p: b for p, b in run.pages.items() if not re.search(r"/quarantine\.(csv|xlsx)", p)}
    exports = {p: b for p, b in run.pages.items() if p not in pages}
    return {
        "task logs": task_logs(),
        "xcom": xcom_values(),
        "airflow metadata db": metadata_db_text(),
        "stdout/stderr": dict(run.captured),
        "hurren log records (DEBUG)": {f"record {i}": r for i, r in enumerate(run.records)},
        "data docs (docs bucket)": docs_objects(run.client, run.docs_bucket),
        "served pages": pages,
        "exports (csv, xlsx)": exports,
        "etl_run.details": {"etl_run.details": stored.pop("etl_run.details", "")},
        "etl_quarantine.reason/rules": {
            k: stored.pop(k, "") for k in ("etl_quarantine.reason", "etl_quarantine.rules")
        },
        "push_outbox": {k: v for k, v in stored.items() if k.startswith("push_outbox.")},
        "push_log": {k: v for k, v in stored.items() if k.startswith("push_log.")},
        "other store columns": {
            k: v for k, v in stored.items() if not k.startswith(("push_outbox.", "push_log."))
        },
    }


def scan(places: dict[str, dict[str, str]], ids: Identifiers) -> list[tuple[str, str, str, str]]:
    """(place, item, field, value) of every identifier found."""
    needles = ids.needles()
    return [(place, item, f, v) for place, items in places.items() for item, body in items.items()
            for f, v in ids.find(body, needles)]  # fmt: skip


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identifiers(demo_run) -> Identifiers:
    return source_identifiers(demo_run.source_url, near=demo_run.day)


@pytest.fixture(scope="module")
def places(demo_run) -> dict[str, dict[str, str]]:
    return collect(demo_run)


def test_the_demo_ran_every_stream_and_pushed(demo_run):
    r = demo_run.runs
    loads = {
        k: v
        for res in r.values()
        for k, v in res.return_values.items()
        if isinstance(v, dict) and "extracted" in v
    }
    streams = {(res.dag_id.split("__")[0], k) for res in r.values() for k, v in res.return_values.items()
               if isinstance(v, dict) and v.get("extracted")}  # fmt: skip
    assert len(streams) >= 6, streams  # lab, exam, pacs_study, pacs_instance, accept, quote
    assert sum(v["quarantined"] for v in loads.values()) > 0 and sum(v["loaded"] for v in loads.values()) > 0
    for name, counts in loads.items():
        assert (
            counts["extracted"]
            == counts["loaded"] + counts["unchanged"] + counts["stale"] + counts["quarantined"]
        ), (
            name,
            counts,
        )
    on_platform = demo_run.sim.platform.store.counts()  # push_reports (and the records' pushes) reached it
    assert on_platform["labmaster"] > 0 and on_platform["exammaster"] > 0, on_platform
    assert on_platform.get("sehr_accept_record", 0) > 0 and on_platform.get("lab_exam_report", 0) > 0, (
        on_platform
    )
    assert demo_run.published.built, "no hospital-day of Data Docs was built"
    refused = [r for r in _rows(demo_run.store_url, store.outbox) if r.status == "rejected"]
    assert refused and all("simulated failure" in (r.last_error or "") for r in refused)
    print(f"timings (s): {json.dumps({k: round(v, 1) for k, v in demo_run.seconds.items()})}")


def test_the_demo_summary_reports_every_stream(demo_run):
    summary = demo_run.captured["demo summary, push status"]
    for stream in ("lab", "exam", "pacs_study", "pacs_instance", "accept", "quote"):
        assert re.search(rf"^demo\s+{stream}\s+\d+\s+\d+\s+\d+", summary, re.M), (stream, summary)
    assert "pacs reconciliation demo:" in summary and f"daily counts 270258069 {demo_run.day}:" in summary, (
        summary
    )
    assert "sehr_accept_record" in summary and "v_web_jcjg" in summary and "lab_exam_report" in summary, (
        summary
    )


def test_every_place_was_scanned(places, identifiers, demo_run):
    """Nothing passes vacuously: each place holds text, from this run where that can be told."""
    counts = {place: (len(items), sum(len(b) for b in items.values())) for place, items in places.items()}
    print("scanned (items, characters):", json.dumps(counts, ensure_ascii=False))
    for place, (n, size) in counts.items():
        assert n > 0 and size > 0, f"nothing scanned in {place}: {counts}"
    logs = places["task logs"]
    for result in demo_run.runs.values():  # each run's task logs, the hurren lines included
        log = logs.get(str((RUN_LOGS / f"{result.dag_id}.log").relative_to(AIRFLOW_HOME)), "")
        assert "[DAG TEST] end task" in log and result.run_id in log, f"no task log of {result.dag_id}"
    assert any("[hurren." in b for b in logs.values())
    xcoms = places["xcom"]
    for result in demo_run.runs.values():
        assert any(k.startswith(f"{result.dag_id}/{result.run_id}/") for k in xcoms), (
            f"no XCom of {result.dag_id}"
        )
    assert any("/docs/datadocs/" in p for p in places["served pages"])
    assert any(".xlsx" in p for p in places["exports (csv, xlsx)"])
    assert any(".csv" in p for p in places["exports (csv, xlsx)"])
    assert sum(1 for k in places["data docs (docs bucket)"] if k.endswith(".html")) >= 6
    assert places["etl_quarantine.reason/rules"]["etl_quarantine.reason"]
    # the patient column was shown, masked ('张*')
    for place in ("served pages", "exports (csv, xlsx)"):
        assert re.search(r"[\u4e00-\u9fff]\*", "\n".join(places[place].values())), place
    assert places["push_log"]["push_log.method"]
    # what is looked for
    assert set(identifiers.fields) == {"name", "id_no", "card_no", "birth_date", "PATIENTNAME"}, (
        identifiers.fields
    )
    assert len(identifiers.values) > 60 and len(identifiers.dates) > 100, (
        len(identifiers.values),
        len(identifiers.dates),
    )
    print(f"looked for {len(identifiers.values)} identifier values ({dict(identifiers.fields)}) and "
          f"{len(identifiers.dates)} birth-date spellings; {len(identifiers.ambiguous)} ambiguous values not looked for")  # fmt: skip


def test_no_identifier_appears_anywhere(places, identifiers):
    leaks = scan(places, identifiers)
    assert not leaks, "\n".join(f"{p} | {i} | {f}: {v}" for p, i, f, v in sorted(set(leaks))[:40])


def test_the_platforms_quotes_are_kept_in_the_audit_copy_only(demo_run, places, identifiers):
    """The refusals quoted patients (name, ID number): push_log.answer, not scanned, holds them as
    the platform wrote them; last_error, the logs and the run's XCom (scanned above) show them
    masked."""
    answers = "\n".join(
        r.answer or "" for r in _rows(demo_run.store_url, store.push_log) if r.outcome == "error"
    )
    quoted = {f for _p, _i, f, _v in scan({"push_log.answer": {"answers": answers}}, identifiers)}
    assert {"name", "id_no"} <= quoted, quoted
    refused = [r.last_error for r in _rows(demo_run.store_url, store.outbox) if r.status == "rejected"]
    assert refused and all(re.search(r"患者 \S\*+ 身份证号 \d{4}\*{10}[\dX]{4}", e) for e in refused), (
        refused[:3]
    )
    assert any("身份证号 " in r for r in places["hurren log records (DEBUG)"].values())


def test_a_planted_identifier_is_found(demo_run, identifiers, run_dag):
    """The canary: a known identifier put into a task log file, an XCom and a Data Docs object
    (served by the app) is found in each place, by the same collection and scan code."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    name = next(v for v, f in identifiers.values.items() if f == "name")
    id_no = next(v for v, f in identifiers.values.items() if f == "id_no" and len(v) == 18)
    birth = next(v for v in identifiers.dates if re.fullmatch(r"\d{8}", v))
    log = AIRFLOW_HOME / "logs" / "canary" / "attempt=1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"patient {name} seen\n", encoding="utf-8")
    result = next(iter(demo_run.runs.values()))
    key = "privacy_canary"
    with create_session() as session:
        XComModel.set(key=key, value={"note": f"id {id_no}"}, dag_id=result.dag_id, task_id=next(iter(result.task_states)),
                      run_id=result.run_id, session=session)  # fmt: skip
    doc = "datadocs/canary/page.html"
    body = f"<html><body>born {birth}</body></html>".encode()
    demo_run.client.put_object(
        demo_run.docs_bucket, doc, io.BytesIO(body), len(body), content_type="text/html"
    )
    try:
        places = {
            "task logs": task_logs(),
            "xcom": xcom_values(),
            "data docs (docs bucket)": docs_objects(demo_run.client, demo_run.docs_bucket),
            "served pages": crawl(demo_run, extra=[f"/docs/{doc}"]),
        }
        found = {(p, v) for p, _item, _f, v in scan(places, identifiers)}
        assert ("task logs", name) in found, found
        assert ("xcom", id_no) in found, found
        assert ("data docs (docs bucket)", birth) in found, found
        assert ("served pages", birth) in found, found
        assert len(found) == 4, found  # nothing else
        # and on real data: the held rows as extracted (not scanned above, by design) are full of them
        payload = {r.id: r.payload for r in _rows(demo_run.store_url, store.quarantine)}
        held = {
            f
            for _p, _i, f, _v in scan(
                {"etl_quarantine.payload": {str(k): v for k, v in payload.items()}}, identifiers
            )
        }
        assert {"name", "id_no"} <= held, held
    finally:
        log.unlink()
        log.parent.rmdir()
        with create_session() as session:
            session.execute(XComModel.__table__.delete().where(XComModel.key == key))
        demo_run.client.remove_object(demo_run.docs_bucket, doc)
