"""Validation reports for analysts: quarantine view and exports, daily scorecard, Data Docs.

Modules (each importable without Airflow; only :mod:`hurren.reports.web` needs FastAPI, only
:mod:`hurren.reports.datadocs` rendering needs Great Expectations, imported when used):

- :mod:`~hurren.reports.masking`     how patient identifiers are shown (the one place)
- :mod:`~hurren.reports.results`     the validation results kept per hospital-day (the pipeline hook
  :func:`keep_validation`, and :func:`keep_gx_day` at a run's end), slimmed and merged GX results, per-rule counts
- :mod:`~hurren.reports.quarantine`  held reports per rule with reasons; CSV / XLSX exports
- :mod:`~hurren.reports.scorecard`   pass rate by rule per day, SVG chart; daily counts placeholder
- :mod:`~hurren.reports.datadocs`    GX Data Docs per hospital-day, static site in the docs bucket
- :mod:`~hurren.reports.pages`       HTML templates
- :mod:`~hurren.reports.web`         the FastAPI app the Airflow plugin (plugins/hurren_ui_plugin.py) mounts

``python -m hurren.reports publish`` brings the Data Docs site up to date (build, retention);
``python -m hurren.reports serve`` runs the pages locally without Airflow (no sign-in: dev only).
"""

from __future__ import annotations

from hurren.reports.results import ReportsError, keep_gx_day, keep_validation

__all__ = ["ReportsError", "keep_gx_day", "keep_validation"]
