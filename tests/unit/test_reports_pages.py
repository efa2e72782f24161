"""The analysts' pages without a server: a synthetic hospital through the pipeline into a SQLite
store (pandas engine, three data days), then the quarantine view, exports, scorecard and every
route of the FastAPI app through TestClient. Data Docs rendering (GX, S3) is covered by
tests/integration/test_reports_site.py and the browser tests."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import create_engine, select, update

from hurren import incremental, load, pipeline, sources, store
from hurren.reports import masking, quarantine, results, scorecard, web
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic

DAYS = [date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 11)]


class FakeS3:
    """The few calls of minio.Minio the pipeline and the site make, in memory."""

    class _Obj:
        def __init__(self, name: str) -> None:
            self.object_name = name

    class _Body(io.BytesIO):
        def release_conn(self) -> None:
            pass

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, bucket_name, object_name, data, length, content_type="", metadata=None):
        self.objects[(bucket_name, object_name)] = data.read(length)

    def get_object(self, bucket_name, object_name):
        return self._Body(self.objects[(bucket_name, object_name)])

    def list_objects(self, bucket_name, prefix=None, recursive=False):
        return [
            self._Obj(k) for b, k in sorted(self.objects) if b == bucket_name and k.startswith(prefix or "")
        ]

    def remove_object(self, bucket_name, object_name):
        self.objects.pop((bucket_name, object_name), None)


def leaks(text_: str, idents: set[str], others: set[str]) -> list[str]:
    return masking.leaks(text_, idents, others)


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    tmp = Path(tmp_path_factory.mktemp("reports_pages"))
    h = synthetic.make_hospitals(1, seed=31)[0]
    src_url, store_url = f"sqlite:///{tmp / 'h.db'}", f"sqlite:///{tmp / 'store.db'}"
    for i, day in enumerate(DAYS):
        synthetic.generate_hospital_day(src_url, org=h, day=day, lab_reports=24, exam_reports=10, seed=31 + i,
                                        defect_rate=0.3, pdf_kb=1, lab_items=3)  # fmt: skip
    src = sources.parse_sources(json.dumps({"defaults": {"initial_value": "2024-01-01 00:00:00"}, "hospitals": [
        {"id": "unit0", "org_code": h.org_code, "org_name": h.name, "conn_id": "c", "dialect": "sqlite", "chunk_size": 1000}]})).get("unit0")  # fmt: skip
    engine, source_engine = create_engine(store_url), create_engine(src_url)
    store.create_all(engine)
    s3 = FakeS3()
    for day in DAYS:
        for stream in ("lab", "exam"):
            pipeline.run_stream(
                source=src, stream=stream, source_engine=source_engine, store_engine=engine,
                pdfs=load.Pdfs(client=s3, bucket="reports"), run_id=f"scheduled__{day}T16:00:00+00:00",
                dag_id=f"{stream}_reports__unit0", until=datetime.combine(day + timedelta(days=1), datetime.min.time()),
                validator="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
            )  # fmt: skip
    idents, others = masking.database_identifiers(source_engine)
    app = web.create_app(engine=engine, s3=s3, bucket="docs", org_names=lambda: {h.org_code: h.name})
    yield {"org": h.org_code, "name": h.name, "engine": engine, "s3": s3, "client": TestClient(app),
           "idents": idents, "others": others}  # fmt: skip
    engine.dispose()
    source_engine.dispose()


def _lines(region, **kw):
    with region["engine"].connect() as conn:
        return quarantine.quarantine_lines(conn, quarantine.Filter(org_code=region["org"], **kw))


def test_every_quarantine_entry_gives_one_line_per_rule_and_field(region):
    with region["engine"].connect() as conn:
        entries = conn.execute(select(store.quarantine)).mappings().all()
    lines = _lines(region, status="all")
    assert entries and {ln.id for ln in lines} == {e["id"] for e in entries}
    for e in entries:
        expected = {(r["rule"], r.get("field") or "") for r in json.loads(e["rules"])}
        assert {(ln.rule, ln.field) for ln in lines if ln.id == e["id"]} == expected
    for ln in lines:
        assert ln.message and ln.report_no and ln.status == "open"
        if ln.entity in ("labmaster", "exammaster") and ln.rule not in ("orphan_item",):
            assert ln.report_date[:10] in {d.isoformat() for d in DAYS}, ln
    # the message is the reason's line about this rule and field, not the whole reason
    by_rule = [ln for ln in lines if ln.rule == "dictionary"]
    assert by_rule and all(
        "\n" not in ln.message and "dictionary" in ln.rule_title.lower() or "字典" in ln.rule_title
        for ln in by_rule
    )


def test_a_rule_filter_lists_only_that_rule(region):
    lines = _lines(region, status="all")
    rule = max({ln.rule for ln in lines}, key=lambda r: sum(ln.rule == r for ln in lines))
    only = _lines(region, status="all", rule=rule)
    assert only and {ln.rule for ln in only} == {rule}
    assert {ln.id for ln in only} == {ln.id for ln in lines if ln.rule == rule}


def test_no_line_shows_a_patient_identifier_in_clear(region):
    lines = _lines(region, status="all")
    assert any(ln.patient for ln in lines)
    for ln in lines:
        blob = json.dumps(
            [ln.cell(c) for c, _ in quarantine.COLUMNS] + [ln.key], ensure_ascii=False, default=str
        )
        assert not leaks(blob, region["idents"], region["others"]), ln
        assert ln.patient == "" or "*" in ln.patient


def test_csv_export_is_excel_friendly_and_carries_every_line(region):
    lines = _lines(region, status="all")
    body = quarantine.to_csv(lines)
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == [h for _, h in quarantine.COLUMNS]
    assert len(rows) == len(lines) + 1
    assert not any(cell.startswith(("=", "+", "@")) for row in rows[1:] for cell in row)


def test_formula_like_cells_are_quoted():
    ln = quarantine.Line(
        id=1, org_code="1", org_name="", source="s", entity="labmaster", report_no="=HYPERLINK(1)", event_no="-1",
        key={}, report_date="", patient="", rule="r", rule_title="", severity="error", field="f", field_name="",
        item="", message="@x", status="open", quarantined_at=None, resolved_at=None, run_id="",
    )  # fmt: skip
    row = list(csv.reader(io.StringIO(quarantine.to_csv([ln]).decode("utf-8-sig"))))[1]
    assert row[3] == "'=HYPERLINK(1)" and row[4] == "'-1" and "'@x" in row


def test_xlsx_export_has_the_lines_and_a_count_per_rule(region):
    lines = _lines(region, status="all")
    wb = load_workbook(io.BytesIO(quarantine.to_xlsx(lines, title="t")))
    held, by_rule = wb.worksheets
    assert held.title == "暂扣 held" and by_rule.title == "按规则 by rule"
    rows = list(held.iter_rows(values_only=True))
    assert list(rows[0]) == [h for _, h in quarantine.COLUMNS] and len(rows) == len(lines) + 1
    counts = {r[0]: r[3] for r in list(by_rule.iter_rows(values_only=True))[1:]}
    assert counts == {
        rule: len({ln.id for ln in lines if ln.rule == rule}) for rule in {ln.rule for ln in lines}
    }


def test_scorecard_rates_are_the_share_of_reports_not_breaking_the_rule(region):
    with region["engine"].connect() as conn:
        card = scorecard.scorecard(conn, region["org"], until=DAYS[-1], days=30)
        masters = [r for r in results.day_rows(conn, org_code=region["org"]) if r.is_master]
    assert card.days[0] == DAYS[0] and card.days[-1] == DAYS[-1]
    d = DAYS[1]
    records = sum(r.summary["records"] for r in masters if r.day == d)
    assert card.records[d] == records
    for rs in card.failing_rules:
        failed = sum(
            r.summary["record_rules"].get(rs.rule, {}).get("records", 0) for r in masters if r.day == d
        )
        checked = sum(
            r.summary["records"] for r in masters if r.day == d and rs.rule in r.summary["record_rules"]
        )
        assert rs.rate(d) == pytest.approx(100.0 * (checked - failed) / checked)
    held = sum(r.summary["held"] for r in masters if r.day == d)
    assert card.overall(d) == pytest.approx(100.0 * (records - held) / records)
    svg = scorecard.svg_chart(card)
    assert svg.startswith("<svg") and svg.count('class="series-rule"') >= 1 and 'class="series-all"' in svg
    assert svg.count("<circle") >= len(DAYS) * (1 + min(len(card.failing_rules), scorecard.MAX_LINES))


def test_daily_counts_say_not_available_when_their_table_is_missing(region, monkeypatch):
    monkeypatch.setattr(scorecard, "daily_counts_table", lambda: None)
    with region["engine"].connect() as conn:
        dc = scorecard.daily_counts(conn, region["org"], since=DAYS[0], until=DAYS[-1])
    assert not dc.available and "no daily counts table" in dc.note
    page = region["client"].get(f"/hospitals/{region['org']}/scorecard").text
    assert "Not available yet" in page and "Daily counts reconciliation" in page


@pytest.mark.skipif(scorecard.daily_counts_table() is None, reason="the store defines no daily counts table")
def test_daily_counts_of_the_store_table_are_summed_per_day(region):
    t = scorecard.daily_counts_table()
    filler = {int: 0, str: "", date: DAYS[-1], datetime: datetime(2024, 3, 12)}
    row = {c.name: filler.get(c.type.python_type, None) for c in t.c if not c.nullable}
    with region["engine"].begin() as conn:
        t.create(conn, checkfirst=True)
        for dept, n in (("A01", 3), ("A02", 4)):
            conn.execute(
                t.insert().values(
                    {
                        **row,
                        "org_code": region["org"],
                        "date_t": DAYS[-1],
                        "dept_code": dept,
                        "lab_counted": n,
                    }
                )
            )
    with region["engine"].connect() as conn:
        dc = scorecard.daily_counts(conn, region["org"], since=DAYS[0], until=DAYS[-1])
    assert dc.available and dc.rows[0][0] == DAYS[-1] and dc.rows[0][dc.columns.index("lab_counted")] == 7
    with region["engine"].begin() as conn:
        conn.execute(t.delete())


ROUTES = [
    ("/", "医院 Hospitals"),
    ("/hospitals/{org}", "Held by rule"),
    ("/hospitals/{org}/quarantine", "Held reports"),
    ("/hospitals/{org}/quarantine?status=all&rule=dictionary", "dictionary"),
    ("/hospitals/{org}/scorecard", "Daily quality scorecard"),
    ("/hospitals/{org}/scorecard?days=7&until=2024-03-11", "<svg"),
    ("/datadocs", "Data Docs"),
    ("/dag/lab_reports__unit0", "Recent runs"),
    ("/run/lab_reports__unit0/scheduled__2024-03-11T16:00:00+00:00", "extracted"),
    ("/run/some_dag/manual__x", "no validation results"),
]


@pytest.mark.parametrize(("path", "expect"), ROUTES, ids=[p for p, _ in ROUTES])
def test_pages_answer(region, path, expect):
    r = region["client"].get(path.format(org=region["org"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert expect in r.text


@pytest.mark.parametrize(
    ("path", "status"),
    [("/hospitals/nope", 404), ("/hospitals/bad%20org/quarantine", 404), ("/hospitals/{org}/quarantine?status=x", 400),
     ("/hospitals/{org}/quarantine?since=yesterday", 400), ("/hospitals/{org}/docs/2030-01-01", 404),
     ("/docs/datadocs/../../etc/passwd", 404), ("/docs/a%2F..%2Fb", 404), ("/static/../web.py", 404)],
)  # fmt: skip
def test_bad_requests_get_a_clear_answer(region, path, status):
    assert region["client"].get(path.format(org=region["org"])).status_code == status


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_exports_download_with_a_file_name(region, fmt):
    r = region["client"].get(f"/hospitals/{region['org']}/quarantine.{fmt}?rule=dictionary&status=all")
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"] and f".{fmt}" in r.headers["content-disposition"]
    if fmt == "xlsx":
        assert zipfile.is_zipfile(io.BytesIO(r.content))
    else:
        assert r.content.decode("utf-8-sig").count("\n") >= 2


def test_resolved_entries_show_as_resolved(region):
    q = store.quarantine
    with region["engine"].begin() as conn:
        first = conn.execute(select(q.c.id).order_by(q.c.id).limit(1)).scalar_one()
        conn.execute(update(q).where(q.c.id == first).values(resolved_at=datetime(2024, 3, 12, 8, 0)))
    try:
        lines = _lines(region, status="resolved")
        assert {ln.id for ln in lines} == {first} and lines[0].resolved_at == datetime(2024, 3, 12, 8, 0)
        assert first not in {ln.id for ln in _lines(region, status="open")}
        page = region["client"].get(f"/hospitals/{region['org']}/quarantine?status=resolved").text
        assert "badge-resolved" in page and "2024-03-12 08:00:00" in page
    finally:
        with region["engine"].begin() as conn:
            conn.execute(update(q).where(q.c.id == first).values(resolved_at=None))


def _crawl(client, start: str, limit: int = 400) -> dict[str, str]:
    seen: dict[str, str] = {}
    todo = [start]
    while todo and len(seen) < limit:
        url = todo.pop()
        if url in seen:
            continue
        r = client.get(url)
        body = r.text if not url.split("?")[0].endswith(".xlsx") else _xlsx_text(r.content)
        seen[url] = body
        if not r.headers.get("content-type", "").startswith("text/html"):
            continue
        for href in re.findall(r'href="([^"#]+)"', r.text):
            href = href.replace("&amp;", "&")
            full = urljoin(url, href)
            parts = urlsplit(full)
            if parts.netloc or "/static/" in parts.path or parts.path.startswith("/docs/"):
                continue
            todo.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return seen


def _xlsx_text(body: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        return " ".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".xml"))


def test_no_served_page_or_export_shows_a_patient_identifier(region):
    pages = _crawl(region["client"], "/")
    assert len(pages) > 15 and any(p.endswith(".xlsx") or ".xlsx?" in p for p in pages)
    for url, body in pages.items():
        assert not leaks(body, region["idents"], region["others"]), url


def test_the_plugin_wires_the_app_and_the_ui_links():
    import hurren_ui_plugin as plugin

    p = plugin.HurrenUiPlugin
    assert p.fastapi_apps == [
        {"app": plugin.app, "url_prefix": "/hurren", "name": "hurren validation reports"}
    ]
    views = {v["destination"]: v for v in p.external_views}
    assert set(views) == {"nav", "dag", "dag_run"}
    assert (
        views["dag_run"]["href"] == "hurren/run/{DAG_ID}/{RUN_ID}"
        and views["dag"]["href"] == "hurren/dag/{DAG_ID}"
    )
    assert all(v["name"] == "Validation reports" and v["url_route"] for v in views.values())


def test_the_plugin_app_asks_for_airflow_sign_in():
    import hurren_ui_plugin as plugin

    r = TestClient(plugin.app).get("/")
    assert r.status_code == 401 and "Sign in" in r.text


@pytest.mark.parametrize(
    "path", ["/", "/datadocs", "/dag/x", "/run/x/y", "/hospitals/123/quarantine", "/hospitals/123/scorecard"]
)
def test_a_store_with_nothing_in_it_yet_still_answers(tmp_path, path):
    app = web.create_app(engine=create_engine(f"sqlite:///{tmp_path / 'empty.db'}"), s3=FakeS3(), bucket="docs",
                         org_names=dict)  # fmt: skip
    r = TestClient(app).get(path)
    assert r.status_code == 200, r.text


def test_an_interrupted_try_and_a_run_left_running_show_as_interrupted(region):
    """A try killed without a word: its run's retry lists it interrupted, with its counts, next to
    the try that finished; a run left running that a later run found over shows interrupted on
    the DAG's and the run's pages (main showed neither: the row stayed running, its try forgotten)."""
    engine, dag = region["engine"], "lab_reports__unit0"
    retried = incremental.start_run(
        engine, run_id="manual__retried", dag_id=dag, source="unit0", stream="lab"
    )
    incremental.start_run(
        engine, run_id="manual__retried", dag_id=dag, source="unit0", stream="lab"
    )  # its retry
    incremental.finish_run(
        engine, retried, status="success", details={"batches": 0, **load.LoadCounts().as_dict()}
    )
    incremental.start_run(engine, run_id="manual__killed", dag_id=dag, source="unit0", stream="exam")
    incremental.start_run(
        engine, run_id="manual__next", dag_id=dag, source="unit0", stream="exam", lease=timedelta(0)
    )
    page = region["client"].get(f"/run/{dag}/manual__retried").text
    tries = page[page.index('id="tries"') :]
    assert (
        tries.count("<tr><td>") == 2
        and "interrupted" in tries
        and "success" in tries
        and "(found over)" in tries
    )
    killed = region["client"].get(f"/run/{dag}/manual__killed").text
    assert "badge-warning-sev" in killed and ">interrupted</span>" in killed
    listing = region["client"].get(f"/dag/{dag}").text
    assert ">interrupted</span>" in listing
