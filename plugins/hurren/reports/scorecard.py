"""The daily quality scorecard of one hospital: pass rate by rule over time, as an SVG chart.

Pass rate of a rule on a day = share of the reports/records validated that day (all streams of
the hospital whose checks include the rule) that did not break it; "all rules" = share not held.
The counts come from ``etl_validation_result`` summaries (:mod:`hurren.reports.results`), which
retention keeps. The chart is plain server-rendered SVG (no script, no CDN): one polyline per
rule that failed at least once in the period, gaps where a day has no data, a ``<title>`` on
every point for the exact figures.

The daily-counts reconciliation (hospital's declared daily counts against what reached the
store) is built elsewhere; :func:`daily_counts` shows it when its table is in the store's
metadata and exists, and says "not available yet" otherwise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from html import escape
from typing import Any

from sqlalchemy import Table, func, inspect, select
from sqlalchemy.engine import Connection

from hurren.reports import masking, results

PALETTE = (
    "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip
MAX_LINES = 10
DAILY_COUNT_TABLES = ("daily_count_recon", "etl_daily_counts", "daily_counts", "daily_count")
_DAILY_RE = re.compile(r"(^|_)daily_?(counts?|reconcil)")


@dataclass
class RuleSeries:
    rule: str
    title: str
    severity: str
    checked: dict[date, int] = field(default_factory=dict)  # records the rule applied to
    failed: dict[date, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # severities seen in the summaries

    def rate(self, day: date) -> float | None:
        n = self.checked.get(day, 0)
        return None if not n else 100.0 * (n - self.failed.get(day, 0)) / n

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())


@dataclass
class Scorecard:
    org_code: str
    org_name: str
    days: list[date]
    records: dict[date, int]
    held: dict[date, int]
    rules: list[RuleSeries]

    def overall(self, day: date) -> float | None:
        n = self.records.get(day, 0)
        return None if not n else 100.0 * (n - self.held.get(day, 0)) / n

    @property
    def failing_rules(self) -> list[RuleSeries]:
        return [r for r in self.rules if r.total_failed]


def scorecard(
    conn: Connection, org_code: str, *, until: date, days: int = 30, org_name: str = ""
) -> Scorecard:
    """The scorecard of ``org_code`` for the ``days`` days ending with ``until``."""
    from hurren.rules import load_rulebook

    rb = load_rulebook()
    since = until - timedelta(days=days - 1)
    rows = [r for r in results.day_rows(conn, org_code=org_code, since=since, until=until) if r.is_master]
    records: dict[date, int] = {}
    held: dict[date, int] = {}
    series: dict[str, RuleSeries] = {}
    for r in rows:
        s = r.summary
        n = int(s.get("records", 0))
        records[r.day] = records.get(r.day, 0) + n
        held[r.day] = held.get(r.day, 0) + int(s.get("held", 0))
        org_name = org_name or (r.org_name or "")
        for rule, v in (s.get("record_rules") or {}).items():
            text = rb.rules.get(rule)
            rs = series.setdefault(
                rule,
                RuleSeries(
                    rule,
                    f"{text.title_zh} / {text.title_en}" if text else rule,
                    text.severity if text else "error",
                ),
            )
            if v.get("severity"):
                rs.seen.add(v["severity"])
            rs.checked[r.day] = rs.checked.get(r.day, 0) + n
            rs.failed[r.day] = rs.failed.get(r.day, 0) + int(v.get("records", 0))
    for rs in series.values():
        rs.severity = "error" if "error" in rs.seen else ("warning" if "warning" in rs.seen else rs.severity)
    ordered = sorted(series.values(), key=lambda x: (-x.total_failed, x.rule))
    # the axis starts at the first day with data (a new hospital's chart is not all empty space)
    first = max(min(records, default=since), since)
    first = min(first, until - timedelta(days=1))
    axis = [first + timedelta(days=i) for i in range((until - first).days + 1)]
    return Scorecard(org_code, org_name or org_code, axis, records, held, ordered)


# --- SVG ----------------------------------------------------------------------------------------


def svg_chart(card: Scorecard, *, width: int = 960, height: int = 360) -> str:
    """The pass rate chart: x = day, y = pass rate %, one line per failing rule plus "all rules"."""
    left, right, top, bottom = 56, 220, 16, 48
    pw, ph = width - left - right, height - top - bottom
    days = [d for d in card.days]
    data_days = [d for d in days if card.records.get(d)]
    lines = card.failing_rules[:MAX_LINES]
    values = [v for rs in lines for d in data_days if (v := rs.rate(d)) is not None]
    values += [v for d in data_days if (v := card.overall(d)) is not None]
    lo = min(values) if values else 100.0
    y_min = max(0.0, math.floor((lo - 1) / 10.0) * 10.0) if lo < 100 else 90.0
    n = max(len(days) - 1, 1)

    def x(d: date) -> float:
        return left + pw * (days.index(d) / n)

    def y(v: float) -> float:
        return top + ph * (1 - (v - y_min) / (100.0 - y_min))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="hurren-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(card.org_name)}: 各规则每日通过率 pass rate by rule per day</title>",
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccc"/>',
    ]
    step = 10.0 if 100 - y_min > 20 else 2.0
    v = y_min
    while v <= 100.0001:
        yy = y(v)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#555">{v:.0f}%</text>')
        v += step
    label_every = max(1, math.ceil(len(days) / 12))
    for i, d in enumerate(days):
        xx = x(d)
        if i % label_every == 0 or i == len(days) - 1:
            out.append(
                f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#999"/>'
            )
            out.append(
                f'<text x="{xx:.1f}" y="{top + ph + 18}" text-anchor="middle" fill="#555">{d:%m-%d}</text>'
            )
    out.append(
        f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" fill="#333">数据日期 data day</text>'
    )

    def polyline(
        points: list[tuple[date, float]], color: str, dash: str, w: float, name: str, cls: str
    ) -> None:
        segments: list[list[tuple[date, float]]] = [[]]
        for d in days:
            p = next((pt for pt in points if pt[0] == d), None)
            if p is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(p)
        for seg in segments:
            if len(seg) > 1:
                pts = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in seg)
                out.append(
                    f'<polyline class="{cls}" data-rule="{escape(name)}" points="{pts}" fill="none" '
                    f'stroke="{color}" stroke-width="{w}"{dash}/>'
                )
        for d, v in points:
            out.append(
                f'<circle class="{cls}-point" cx="{x(d):.1f}" cy="{y(v):.1f}" r="3" fill="{color}">'
                f"<title>{escape(name)} {d.isoformat()}: {v:.1f}%</title></circle>"
            )

    overall = [(d, v) for d in data_days if (v := card.overall(d)) is not None]
    polyline(overall, "#000", "", 2.5, "全部规则 all rules (reports passed)", "series-all")
    for i, rs in enumerate(lines):
        pts = [(d, v) for d in data_days if (v := rs.rate(d)) is not None]
        dash = ' stroke-dasharray="5,3"' if rs.severity == "warning" else ""
        polyline(pts, PALETTE[i % len(PALETTE)], dash, 1.8, rs.rule, "series-rule")
    # legend
    lx, ly = left + pw + 14, top + 6
    legend = [("全部规则 all rules", "#000", "")] + [
        (rs.rule + (" (warning)" if rs.severity == "warning" else ""), PALETTE[i % len(PALETTE)],
         ' stroke-dasharray="5,3"' if rs.severity == "warning" else "")
        for i, rs in enumerate(lines)
    ]  # fmt: skip
    for i, (name, color, dash) in enumerate(legend):
        yy = ly + 18 * i
        out.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="{yy}" y2="{yy}" stroke="{color}" stroke-width="2.5"{dash}/>'
        )
        out.append(f'<text x="{lx + 28}" y="{yy + 4}" fill="#222">{escape(name)}</text>')
    if not data_days:
        out.append(
            f'<text x="{left + pw / 2:.0f}" y="{top + ph / 2:.0f}" text-anchor="middle" fill="#888">'
            "此期间无校验数据 no validation data in this period</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


# --- daily counts reconciliation (placeholder until its table exists) ---------------------------


@dataclass
class DailyCounts:
    available: bool
    table: str | None
    note: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


def daily_counts_table() -> Table | None:
    """The daily counts table if the store's metadata defines one (by name), else None."""
    from hurren import store

    tables = store.metadata.tables
    for name in DAILY_COUNT_TABLES:
        if name in tables:
            return tables[name]
    for name, t in tables.items():
        if _DAILY_RE.search(name):
            return t
    return None


def daily_counts(
    conn: Connection, org_code: str, *, since: date, until: date, limit: int = 62
) -> DailyCounts:
    """The reconciliation of one hospital per day (newest first), or why there is none yet.

    With the columns of ``store.daily_count_recon`` (date_t, lab/exam counted, sent, acked,
    push_status, issues) the departments of a day are summed into one line; any other daily
    counts table is shown as it is."""
    t = daily_counts_table()
    if t is None:
        return DailyCounts(False, None, "no daily counts table in the store schema")
    if not inspect(conn).has_table(t.name):
        return DailyCounts(False, t.name, f"table {t.name} is defined but not created in the store yet")
    org_col = next((t.c[n] for n in ("org_code", "hr_org_code") if n in t.c), None)
    day_col = next((t.c[n] for n in ("date_t", "day", "count_date", "data_day", "date") if n in t.c), None)
    known = ("lab_counted", "lab_num", "lab_acked", "exam_counted", "exam_num", "exam_acked")
    if org_col is not None and day_col is not None and all(k in t.c for k in known):
        sums = [func.sum(t.c[k]).label(k) for k in known]
        extra = [func.count().label("depts")]
        stmt = (
            select(day_col.label("day"), *sums, *extra)
            .where(org_col == org_code, day_col >= since, day_col <= until)
            .group_by(day_col)
            .order_by(day_col.desc())
            .limit(limit)
        )
        status = {}
        if "push_status" in t.c and "issues" in t.c:
            q = select(day_col, t.c.push_status, t.c.issues).where(
                org_col == org_code, day_col >= since, day_col <= until
            )
            for d, st, iss in conn.execute(q):
                acc = status.setdefault(d, [set(), set()])
                acc[0].add(st or "")
                acc[1].update(x for x in (iss or "").split(",") if x)
        cols = ["day", *known, "depts", "push_status", "issues"]
        rows = []
        for r in conn.execute(stmt).mappings():
            st, iss = status.get(r["day"], [set(), set()])
            rows.append(
                [
                    r["day"],
                    *(r[k] for k in known),
                    r["depts"],
                    ", ".join(sorted(x for x in st if x)),
                    ", ".join(sorted(iss)),
                ]
            )
        note = f"from table {t.name}, departments summed per day"
        if not rows:
            return DailyCounts(
                False,
                t.name,
                f"no daily counts computed for this hospital in this period ({t.name} is empty for it)",
            )
        return DailyCounts(True, t.name, note, cols, rows)
    cols = [c for c in t.c if c.name not in masking.IDENTIFIER_FIELDS]
    stmt = select(*cols)
    if org_col is not None:
        stmt = stmt.where(org_col == org_code)
    if day_col is not None:
        stmt = stmt.where(day_col >= since, day_col <= until).order_by(day_col.desc())
    rows = [list(r) for r in conn.execute(stmt.limit(limit))]
    if not rows:
        return DailyCounts(False, t.name, f"no rows for this hospital in this period in {t.name}")
    return DailyCounts(True, t.name, f"from table {t.name}", [c.name for c in cols], rows)
