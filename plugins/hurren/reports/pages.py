"""HTML of the reports: Jinja2 templates (``templates/``), autoescaped, no script, no CDN.

Pure functions from data to text. The plugin's pages (:mod:`hurren.reports.web`) and the static
Data Docs site (:mod:`hurren.reports.datadocs`) both render here; every value shown went through
:mod:`hurren.reports.masking` before it got here (the quarantine lines, the key parts) or is a
count, a code, a rule id or a date of a report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from hurren.reports import results

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def env() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    e = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    e.filters["dt"] = fmt_dt
    e.filters["pct"] = pct
    e.filters["rate_class"] = rate_class
    return e


def render(template: str, **context: Any) -> str:
    return env().get_template(template).render(**context)


def fmt_dt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}%"


def rate_class(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 99.0:
        return "rate-good"
    if value >= 90.0:
        return "rate-mid"
    return "rate-bad"


# --- the static Data Docs site ----------------------------------------------------------------


@dataclass(frozen=True)
class DayEntry:
    """One (source, entity) of a hospital-day index."""

    row: results.DayRow
    page: str | None  # the GX page's file name, None when the day has no GX result for it
    statistics: Mapping[str, Any]

    @property
    def failing_rules(self) -> list[tuple[str, int]]:
        rules = self.row.summary.get("rules") or {}
        return sorted(
            ((r, int(v.get("rows") or 0)) for r, v in rules.items() if v.get("rows")), key=lambda x: -x[1]
        )


def day_index_html(*, org_code: str, org_name: str, day: date, entries: Sequence[DayEntry]) -> str:
    return render(
        "day_index.html",
        static="../../../static/",
        home="../../../index.html",
        org_code=org_code,
        org_name=org_name or org_code,
        day=day,
        entries=entries,
    )


def site_index_html(hospital_days: Sequence[results.HospitalDay], *, keep_days: int, on: date) -> str:
    days = sorted({hd.day for hd in hospital_days}, reverse=True)
    orgs: dict[str, str] = {}
    cells: dict[tuple[str, date], results.HospitalDay] = {}
    for hd in hospital_days:
        orgs.setdefault(hd.org_code, hd.org_name or hd.org_code)
        cells[(hd.org_code, hd.day)] = hd
    return render(
        "site_index.html",
        static="static/",
        days=days,
        orgs=sorted(orgs.items()),
        cells=cells,
        keep_days=keep_days,
        on=on,
    )
