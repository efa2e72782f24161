"""The analysts' pages in a real browser (headless Chromium over the DevTools protocol), reached
from a real Airflow UI.

Set-up (module): the synthetic region of tests/integration/test_reports_site.py (two hospitals,
three days, in PostgreSQL and S3); one more day of hospital 0 through the real
``lab_reports__rep0`` DAG with ``dag.test()`` (Great Expectations validates it); Airflow's API
server with the UI and our plugin (plugins/hurren_ui_plugin.py), in this process, on a free
loopback port, with the simple auth manager's all-admins mode; Chromium with a fresh profile.

What must hold: "Validation reports" is in the Airflow navigation and on the DAG run page, and
one click reaches our pages; every page loads without an error and without anything from the
internet; the scorecard chart draws; Data Docs open from the run; no page served shows a patient
identifier of the demo data. Each page leaves a screenshot in out/screenshots/ for a person to
look at.

Chromium is required, never skipped: without it these tests fail with the command to install it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from hurren import dagfactory
from hurren.reports import masking
from hurren.settings import settings
from hurren_testkit import synthetic
from tests.integration.test_reports_site import SEED, VOLUME, reports_region

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "out" / "screenshots"
INSTALL = "apt-get update && apt-get install -y chromium fonts-wqy-microhei"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)  # fmt: skip
DAY4 = date(2024, 3, 12)
WIDTH = 1400


# --- a small Chrome DevTools Protocol client -------------------------------------------------------


class Browser:
    """One headless Chromium with a fresh profile and one page, driven over CDP."""

    def __init__(self, executable: str) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="hurren-chromium-")
        self.proc = subprocess.Popen(
            [
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={WIDTH},900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                self.close()
                pytest.fail(f"Chromium ({executable}) did not start: {err}", pytrace=False)
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.viewport(900)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        ident = self._id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def _pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def goto(self, url: str, *, timeout: float = 30) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        end = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(f"{url} did not load in {timeout} s")
            self._pump(0.2)

    def js(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(
                f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}"
            )
        return r["result"].get("value")

    def wait(self, expression: str, *, timeout: float = 30, what: str = "") -> Any:
        end = time.monotonic() + timeout
        while True:
            try:
                value = self.js(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"waited {timeout} s for {what or expression}")
            self._pump(0.2)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads since the last navigation."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "exception"))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(
                    f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}"
                )
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        return out

    def viewport(self, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def screenshot(self, name: str, *, full: bool = True) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        if full:
            height = int(
                self.js(
                    "Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)"
                )
                or 900
            )
            self.viewport(min(max(height, 600), 6000))
        data = self.call("Page.captureScreenshot", format="png")["data"]
        if full:
            self.viewport(900)
        path = SHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "ws", None):
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("HURREN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.fail(
            "Chromium is needed for the browser tests (tests/browser) and is not installed. "
            f"Install it (as root): {INSTALL}   (or point HURREN_CHROMIUM at a Chromium/Chrome binary)",
            pytrace=False,
        )
    b = Browser(path)
    yield b
    b.close()


# --- Airflow with our plugin, on the demo region ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(make_database, s3, run_dag, tmp_path_factory, pytestconfig):
    region = reports_region(make_database, s3, pytestconfig)
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("browser") / "sources.json"
    path.write_text(region.sources_json)
    mp.setenv("HURREN_SOURCES_FILE", str(path))
    for sid, url in region.urls.items():
        mp.setenv(
            f"AIRFLOW_CONN_HURREN_SRC_{sid.upper()}",
            json.dumps({"conn_type": "postgres", "extra": {"sqlalchemy_url": url}}),
        )
    mp.setenv("HURREN_STORE_URL", region.store_url)
    mp.setenv("HURREN_S3_BUCKET_REPORTS", s3.bucket_reports)
    mp.setenv("HURREN_S3_BUCKET_DOCS", region.docs_bucket)
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    settings.cache_clear()
    server = thread = None
    try:
        # one more day of hospital 0, through the real DAG (GX validates it: its "validator" is "gx")
        h0 = region.hospitals[0]
        synthetic.generate_hospital_day(region.urls["rep0"], org=h0, day=DAY4, seed=SEED + 3, peers=region.hospitals,
                                        defect_rate=0.3, **VOLUME)  # fmt: skip
        dag = dagfactory.report_dag(region.sources.get("rep0"), "lab", doc_md="browser test")
        end = datetime(2024, 3, 13, tzinfo=ZoneInfo("Asia/Shanghai"))  # the window ends there: data day DAY4
        result = run_dag(dag, logical_date=end, run_after=end)
        assert result.state == "success", result.summary()
        counts = result.xcom("extract_validate_load")
        assert counts["extracted"] > 0, counts

        import uvicorn
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app("all"), host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, log_config=None))  # fmt: skip
        thread = threading.Thread(target=server.run, name="airflow-api-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("Airflow's API server did not start", pytrace=False)
            time.sleep(0.05)
        yield {
            "base": f"http://127.0.0.1:{port}/",
            "region": region,
            "dag_id": dag.dag_id,
            "run_id": result.run_id,
            "org0": h0.org_code,
            "pages": {},  # url -> html of every page the browser showed
        }
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(15)
        mp.undo()
        settings.cache_clear()


IFRAME_TEXT = (
    "(() => { const f = document.querySelector('iframe'); const d = f && f.contentDocument;"
    " return d && d.readyState === 'complete' && d.body ? d.body.innerText : ''; })()"
)


def _iframe_text(b: Browser) -> str:
    return b.js(IFRAME_TEXT) or ""


def _wait_iframe(b: Browser, text_: str, *, timeout: float = 30, what: str = "") -> str:
    b.wait(
        f"{IFRAME_TEXT}.includes({json.dumps(text_)})",
        timeout=timeout,
        what=what or f"{text_!r} in the frame",
    )
    return _iframe_text(b)


def _keep(site, b: Browser, *, iframe: bool = False) -> None:
    url = b.js("location.href")
    site["pages"][url] = b.js("document.documentElement.outerHTML")
    if iframe:
        inner = b.js("(() => { const f = document.querySelector('iframe'); return f ? [f.contentWindow.location.href, "
                     "f.contentDocument.documentElement.outerHTML] : null; })()")  # fmt: skip
        if inner:
            site["pages"][inner[0]] = inner[1]


# --- through the Airflow UI -------------------------------------------------------------------


def test_validation_reports_are_in_the_airflow_navigation(browser, site):
    b = browser
    b.goto(site["base"] + "dags")
    link = "document.querySelector('a[href$=\"plugin/hurren-reports\"]')"
    assert b.wait(f"{link} && {link}.textContent.includes('Validation')", what="the nav entry")
    b.js(f"{link}.click()")
    assert b.wait("location.pathname.endsWith('/plugin/hurren-reports')", what="the plugin page")
    text_ = _wait_iframe(b, "Hospitals", what="our page in the iframe")
    assert "Hospitals" in text_ and site["region"].hospitals[0].name in text_
    _keep(site, b, iframe=True)
    b.screenshot("01_airflow_nav_validation_reports", full=False)


def test_the_dag_run_page_has_a_tab_that_opens_the_run(browser, site):
    b = browser
    run_url = f"{site['base']}dags/{site['dag_id']}/runs/{quote(site['run_id'], safe='')}"
    b.goto(run_url)
    tab = "Array.from(document.querySelectorAll('a')).find(a => (a.getAttribute('href') || '').endsWith('/plugin/hurren-run'))"
    assert b.wait(f"{tab} && {tab}.textContent.includes('Validation reports')", what="the run's tab")
    b.js(f"{tab}.click()")
    text_ = _wait_iframe(b, "extracted", what="the run page")
    assert site["run_id"] in text_ and "rep0" in text_ and "lab" in text_
    src = b.js("document.querySelector('iframe').getAttribute('src')")
    assert src.startswith("hurren/run/" + site["dag_id"] + "/")
    _keep(site, b, iframe=True)
    b.screenshot("02_airflow_dag_run_tab", full=False)

    # one more click: the day's Data Docs (built on first request), inside the same frame
    doc_link = (
        "document.querySelector('iframe').contentDocument.querySelector('a[href*=\"/docs/"
        + DAY4.isoformat()
        + "\"]')"
    )
    assert b.wait(f"!!{doc_link}", what="the Data Docs button")
    b.js(f"{doc_link}.click()")
    text_ = _wait_iframe(b, "validation results", timeout=90, what="the hospital-day Data Docs index")
    assert "labmaster" in text_
    _keep(site, b, iframe=True)
    b.screenshot("03_airflow_run_to_data_docs", full=False)


def test_the_dag_page_has_a_tab_too(browser, site):
    b = browser
    b.goto(f"{site['base']}dags/{site['dag_id']}")
    tab = "Array.from(document.querySelectorAll('a')).find(a => (a.getAttribute('href') || '').endsWith('/plugin/hurren-dag'))"
    assert b.wait(f"!!{tab}", what="the DAG's tab")
    b.js(f"{tab}.click()")
    _wait_iframe(b, "Recent runs", what="the DAG page")
    _keep(site, b, iframe=True)
    b.screenshot("04_airflow_dag_tab", full=False)


# --- the pages themselves ------------------------------------------------------------------------


def _page(site, b: Browser, path: str, name: str, expect: str) -> None:
    b.goto(site["base"] + path)
    assert b.wait(
        f"document.body && document.body.innerText.includes({json.dumps(expect)})",
        what=f"{expect!r} on {path}",
    )
    assert b.js("document.styleSheets.length > 0 && getComputedStyle(document.body).fontFamily.length > 0")
    errors = b.errors()
    assert not errors, f"{path}: {errors}"
    _keep(site, b)
    b.screenshot(name)


def test_home_hospital_and_quarantine_pages(browser, site):
    org = site["org0"]
    _page(site, browser, "hurren/", "10_home", "Hospitals")
    assert browser.js("document.querySelectorAll('#hospitals tbody tr').length") == 2
    _page(site, browser, f"hurren/hospitals/{org}", "11_hospital", "Held by rule")
    rule = browser.js("document.querySelector('#rule-counts tbody td a').textContent")
    _page(
        site,
        browser,
        f"hurren/hospitals/{org}/quarantine?rule={rule}&status=all",
        "12_quarantine_by_rule",
        "Held reports",
    )
    rows = browser.js("Array.from(document.querySelectorAll('#quarantine-lines tbody tr')).map(tr => "
                      "Array.from(tr.cells).map(td => td.innerText))")  # fmt: skip
    assert rows and all(r[6] == rule for r in rows)
    assert all(r[0] and r[7] for r in rows)  # report number and reason on every line
    assert all(("*" in r[3]) or not r[3] for r in rows)  # the patient, masked
    assert browser.js("document.querySelector('#export-xlsx').href.includes('quarantine.xlsx?rule=')")
    _page(site, browser, f"hurren/hospitals/{org}/quarantine?status=all", "13_quarantine_all", "Held reports")


def test_the_scorecard_chart_draws(browser, site):
    b = browser
    _page(site, b, f"hurren/hospitals/{site['org0']}/scorecard", "14_scorecard", "Daily quality scorecard")
    chart = b.js("""(() => { const s = document.querySelector('#chart svg'); const r = s.getBoundingClientRect();
        const lines = Array.from(s.querySelectorAll('polyline'));
        return {w: r.width, h: r.height, lines: lines.length,
                drawn: lines.filter(l => l.getBBox().width > 0).length,
                points: s.querySelectorAll('circle').length}; })()""")
    assert chart["w"] > 500 and chart["h"] > 200, chart
    assert chart["lines"] >= 2 and chart["drawn"] == chart["lines"] and chart["points"] >= 8, chart
    assert b.js("document.querySelector('#scorecard-table tbody tr').cells.length") >= 5  # 4 days of data
    assert "Daily counts reconciliation" in b.js("document.body.innerText")


def test_data_docs_open_offline(browser, site):
    b = browser
    org = site["org0"]
    _page(site, b, "hurren/datadocs", "20_datadocs_grid", "Data Docs")
    _page(
        site,
        b,
        f"hurren/hospitals/{org}/docs/{DAY4.isoformat()}",
        "21_datadocs_day_index",
        "validation results",
    )
    assert b.js("location.pathname").endswith(f"/docs/datadocs/{org}/{DAY4.isoformat()}/index.html")
    b.js(
        "Array.from(document.querySelectorAll('a')).find(a => a.getAttribute('href') === 'rep0.labmaster.html').click()"
    )
    b.wait("document.body && document.body.innerText.includes('Expectation Validation Result')", timeout=60)
    assert not b.errors(), b.errors()
    # Bootstrap and jQuery came from the bucket, not a CDN: the filter button works
    shown = "Array.from(document.querySelectorAll('.hide-succeeded-validation-target-child')).filter(e => e.offsetParent !== null).length"
    before = b.js(shown)
    assert before > 10
    b.js(
        "Array.from(document.querySelectorAll('label.btn')).find(l => l.textContent.includes('Failed Only')).click()"
    )
    b._pump(1.0)
    assert b.wait(f"{shown} < {before}", what="'Failed Only' to hide the succeeded expectations")
    _keep(site, b)
    b.screenshot("22_datadocs_gx_labmaster_failed_only")
    _page(site, b, "hurren/docs/index.html", "23_datadocs_site_index", "all hospitals")


def test_the_run_page(browser, site):
    _page(
        site, browser, f"hurren/run/{site['dag_id']}/{quote(site['run_id'], safe='')}", "30_run", "extracted"
    )


def test_exports_for_the_hospital(site):
    org = site["org0"]
    with httpx.Client(base_url=site["base"], timeout=60) as c:
        x = c.get(f"hurren/hospitals/{org}/quarantine.xlsx?status=all")
        v = c.get(f"hurren/hospitals/{org}/quarantine.csv?status=all")
    assert x.status_code == 200 and zipfile.is_zipfile(io.BytesIO(x.content))
    assert v.status_code == 200 and v.content.startswith("\ufeff".encode()) and v.content.count(b"\n") > 5
    site["pages"]["export.xlsx"] = _xlsx_text(x.content)
    site["pages"]["export.csv"] = v.content.decode("utf-8-sig")


def _xlsx_text(body: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        return " ".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".xml"))


def test_no_served_page_shows_a_patient_identifier(site):
    """Every page the browser showed, and every page reachable by a link from the home page
    (Data Docs and exports included), scanned for the demo data's clear identifiers."""
    region = site["region"]
    pages = dict(site["pages"])
    seen: set[str] = set()
    todo = ["/hurren/"]
    with httpx.Client(base_url=site["base"], timeout=120, follow_redirects=True) as c:
        while todo and len(seen) < 600:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code)
            path = r.url.path + (f"?{r.url.query.decode()}" if r.url.query else "")
            ctype = r.headers.get("content-type", "")
            pages[path] = _xlsx_text(r.content) if "spreadsheet" in ctype else r.text
            if not ctype.startswith("text/html"):
                continue
            for href in re.findall(r'href="([^"#]+)"', r.text):
                full = urlsplit(urljoin(site["base"].rstrip("/") + path, href.replace("&amp;", "&")))
                if full.netloc != urlsplit(site["base"]).netloc or not full.path.startswith("/hurren/"):
                    continue
                if full.path.startswith("/hurren/static/"):
                    continue
                todo.append(full.path + (f"?{full.query}" if full.query else ""))
    assert len(pages) > 40 and any("/docs/datadocs/" in p for p in pages) and any(".xlsx" in p for p in pages)
    assert region.idents
    for url, body in pages.items():
        found = masking.leaks(body, region.idents, region.others)
        assert not found, f"{url} shows {found[:5]}"


def test_without_airflow_sign_in_the_pages_are_refused(site, monkeypatch):
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    purge_cached_app()
    with TestClient(create_app("all")) as c:
        refused = c.get(f"/hurren/hospitals/{site['org0']}/quarantine")
        assert refused.status_code == 401 and "Sign in" in refused.text
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="analyst", role="viewer"))
        ok = c.get(
            f"/hurren/hospitals/{site['org0']}/quarantine", headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200 and "Held reports" in ok.text
        ok = c.get("/hurren/", cookies={"_token": token})
        assert ok.status_code == 200
    purge_cached_app()
