"""What a new user sees: ``scripts/demo``, then ``scripts/airflow up``, then the printed URL in a
browser (headless Chromium), signed in as the README says.

Set-up (module): the real ``scripts/demo`` (small volumes: ``--lab 30 --exam 10``) and the real
``scripts/airflow up`` (LocalExecutor, FAB sign-in), with a store database, buckets, metadata
database, Airflow home, demo directory and platform simulator of the test's own (the same
environment variables a user could set; nothing of the developer's ``.airflow/`` or
``.services/demo`` is touched).

What must hold: the URL ``up`` prints opens the sign-in page; ``admin`` with the password from the
file ``up`` names signs in; the demo's DAG runs are there (every DAG the demo ran, succeeded), its
Assets with their events, and the Validation reports (nav entry) with the demo hospital's counts
as the store holds them. The screenshots go to docs/screenshots/ (the README shows them).
About 3-5 minutes on 2 cores (the demo's ``airflow dags test`` runs dominate).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from hurren import store
from tests.browser.test_pages import IFRAME_TEXT, browser  # noqa: F401 (fixture)
from tests.e2e.conftest import sim  # noqa: F401 (fixture)
from tests.fixtures.stack import ROOT, AirflowStack, running

pytestmark = pytest.mark.services

SHOTS = ROOT / "docs" / "screenshots"
DEMO_DAGS = (
    "lab_reports__demo",
    "exam_reports__demo",
    "pacs__demo",
    "records__demo",
    "daily_counts",
    "push_reports",
)
ASSETS = ("hurren://store/lab_reports", "hurren://store/exam_reports", "hurren://store/pacs")
DEMO_HOSPITAL = ("270258069", "库尔勒市妇幼保健院")  # include/sources.json


@pytest.fixture(scope="module")
def demo(make_database, s3, sim, tmp_path_factory):  # noqa: F811
    """scripts/demo then scripts/airflow up, in an environment of the test's own."""
    home = tmp_path_factory.mktemp("ui")
    env = {
        "HURREN_STORE_URL": make_database("hurren_ui_store"),
        "HURREN_S3_BUCKET_REPORTS": s3.bucket_reports,
        "HURREN_S3_BUCKET_DOCS": s3.bucket_docs,
        "HURREN_DEMO_DIR": str(home / "demo"),
        "HURREN_PLATFORM_URL": sim.url,
    }
    stack = AirflowStack(home / "airflow", make_database("airflow_ui"), env=env)
    demo_run = subprocess.run(
        ["scripts/demo", "--lab", "30", "--exam", "10", "--pacs-instances", "1", "--accept", "3", "--quote", "2"],
        cwd=ROOT, env=stack.environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
    )  # fmt: skip
    assert demo_run.returncode == 0, demo_run.stdout[-5000:]
    assert "scripts/airflow up" in demo_run.stdout
    with running(stack):
        output = stack.script("up").stdout  # again: idempotent, and what the user reads
        yield {"stack": stack, "output": output, "store_url": env["HURREN_STORE_URL"]}


def _shot(b, name: str, height: int = 720) -> Path:
    b.viewport(height)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(b.call("Page.captureScreenshot", format="png")["data"]))
    b.viewport(900)
    return path


def _text(b) -> str:
    return b.js("document.body ? document.body.innerText : ''") or ""


def test_the_printed_url_and_the_readme_sign_in(browser, demo):  # noqa: F811
    b, out = browser, demo["output"]
    url = re.search(r"Airflow is up \(LocalExecutor\): (http://127\.0\.0\.1:\d+/)", out).group(1)
    password_file = Path(re.search(r"Sign in as admin with the password in (\S+)", out).group(1))
    assert url == demo["stack"].url and password_file.stat().st_mode & 0o077 == 0  # mode 600
    b.goto(url)
    b.wait("!!document.querySelector('input[name=password]')", what="the sign-in page")
    assert "/auth/login" in b.js("location.pathname")
    password = password_file.read_text().strip()
    b.js(
        "document.querySelector('input[name=username]').value = 'admin';"
        f"document.querySelector('input[name=password]').value = {json.dumps(password)};"
        "document.querySelector('input[type=submit]').click()"
    )
    b.wait("location.pathname === '/' && document.body.innerText.includes('Validation reports')", timeout=60,
           what="the Airflow home page after signing in")  # fmt: skip


def test_the_demos_dag_runs(browser, demo):  # noqa: F811
    b = browser
    b.goto(demo["stack"].url + "dag_runs")
    b.wait(
        f"document.body.innerText.includes('{len(DEMO_DAGS)} Dag Runs')", what="the demo's runs", timeout=60
    )
    text = _text(b)
    for dag_id in DEMO_DAGS:
        assert dag_id in text, dag_id
    assert text.count("Success") >= len(DEMO_DAGS) and "Failed" not in text
    _shot(b, "airflow-dag-runs", 560)


def test_the_demos_assets(browser, demo):  # noqa: F811
    b = browser
    b.goto(demo["stack"].url + "assets")
    b.wait("document.body.innerText.includes('hurren://store/lab_reports')", what="the Assets", timeout=60)
    rows = b.js(
        "Array.from(document.querySelectorAll('tbody tr')).map(tr => Array.from(tr.cells).map(td => td.innerText))"
    )
    last_event = {r[0].strip(): r[1].strip() for r in rows if r}
    for uri in ASSETS:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", last_event.get(uri, "")), (uri, last_event)
    _shot(b, "airflow-assets", 480)


def test_the_validation_reports_with_the_demos_data(browser, demo):  # noqa: F811
    b = browser
    b.goto(demo["stack"].url + "dags")
    link = "document.querySelector('a[href$=\"plugin/hurren-reports\"]')"
    b.wait(f"!!{link}", what="the Validation reports nav entry")
    b.js(f"{link}.click()")
    b.wait(f"{IFRAME_TEXT}.includes({json.dumps(DEMO_HOSPITAL[1])})", timeout=60, what="the demo hospital")
    row = b.js(
        "Array.from(document.querySelector('iframe').contentDocument.querySelectorAll('#hospitals tbody tr'))"
        ".map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))"
    )
    engine = create_engine(demo["store_url"])
    with engine.connect() as conn:
        lab = conn.execute(select(func.count()).select_from(store.SPEC_TABLES["labmaster"])).scalar_one()
    engine.dispose()
    [hospital] = row
    assert hospital[0] == DEMO_HOSPITAL[1] and hospital[1] == DEMO_HOSPITAL[0]
    assert int(hospital[3]) >= lab > 0  # validated: every report and record the demo checked
    _shot(b, "airflow-validation-reports", 420)
