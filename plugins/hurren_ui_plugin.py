"""Airflow plugin: the analysts' validation reports, in reach of the Airflow UI.

- ``fastapi_apps``: :func:`hurren.reports.web.create_app` mounted by the API server at ``/hurren``
  (quarantine view and exports, daily scorecard, Data Docs from the docs bucket), behind Airflow's
  own sign-in (the UI's session cookie or a bearer token; read access to DAG runs).
- ``external_views``: "Validation reports" in the navigation, and a "Validation reports" tab on
  every DAG and DAG run page; the tab opens the run's counts, rules and held reports, one click
  from the run. Airflow fills ``{DAG_ID}`` / ``{RUN_ID}``; the hrefs are relative to the UI's base
  URL, so a deployment under a sub-path works too.

The library lives in ``plugins/hurren/`` (excluded from plugin scanning by ``plugins/.airflowignore``);
this file only wires it. Importing it touches neither the store nor S3 (every Airflow process
imports plugins).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from hurren.reports.web import airflow_auth, create_app

URL_PREFIX = "/hurren"
ICON = "hurren/static/icon.svg"

app = create_app(auth=airflow_auth)


class HurrenUiPlugin(AirflowPlugin):
    name = "hurren_validation_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "hurren validation reports"}]
    external_views = [
        {
            "name": "Validation reports",
            "href": "hurren/",
            "url_route": "hurren-reports",
            "destination": "nav",
            "icon": ICON,
        },
        {
            "name": "Validation reports",
            "href": "hurren/dag/{DAG_ID}",
            "url_route": "hurren-dag",
            "destination": "dag",
            "icon": ICON,
        },
        {
            "name": "Validation reports",
            "href": "hurren/run/{DAG_ID}/{RUN_ID}",
            "url_route": "hurren-run",
            "destination": "dag_run",
            "icon": ICON,
        },
    ]
