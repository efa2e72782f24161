"""The quarantine as analysts read it: per hospital and rule, the held reports and why.

:func:`quarantine_lines` reads ``etl_quarantine`` and gives one :class:`Line` per held report,
rule and field (a report that broke three rules is three lines), with the report number, the
report's date, the field, the rule, the message of that rule for that field (the matching line
of the validator's reason), and whether the entry is still open or was resolved (``resolved_at``
is set by ``hurren.load`` when a corrected version of the same report loads). Patient identifiers
are masked (:mod:`hurren.reports.masking`); the report's payload is read server-side for its date
and patient name only (PostgreSQL JSON operators; other stores parse it here).

:func:`to_csv` and :func:`to_xlsx` export the same lines for the hospital (UTF-8 with BOM so
Excel reads the Chinese text; cells that a spreadsheet would take for a formula are quoted).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.engine import Connection

from hurren import spec, store
from hurren.reports import masking

Status = Literal["open", "resolved", "all"]

DATE_FIELDS = (
    "authenticator_dtime",
    "record_time",
    "STUDYTIME",
    "CREATEDTIME",
    "date_t",
    "last_update_dtime",
)
"""Which field of the held master/record is 'the report's date', first present wins."""

NAME_FIELDS = ("name", "PATIENTNAME")

COLUMNS: tuple[tuple[str, str], ...] = (
    ("org_code", "机构编码 org_code"),
    ("org_name", "医院 hospital"),
    ("entity", "表 entity"),
    ("report_no", "报告单号 report no."),
    ("event_no", "事件号 event no."),
    ("report_date", "报告日期 report date"),
    ("patient", "患者(已脱敏) patient (masked)"),
    ("rule", "规则 rule"),
    ("rule_title", "规则说明 rule title"),
    ("severity", "级别 severity"),
    ("field", "字段 field"),
    ("field_name", "字段名称 field name"),
    ("item", "子项 sub-item"),
    ("message", "原因 reason"),
    ("status", "状态 status"),
    ("quarantined_at", "暂扣时间 quarantined at"),
    ("resolved_at", "解决时间 resolved at"),
    ("run_id", "运行 run"),
)
"""Export columns: (attribute, bilingual header)."""

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Filter:
    """What to list: one hospital (org_code), optionally one rule, entity, source, run, status,
    quarantine date range (inclusive)."""

    org_code: str | None = None
    rule: str | None = None
    entity: str | None = None
    source: str | None = None
    run_id: str | None = None
    status: Status = "open"
    since: date | None = None
    until: date | None = None

    def query_string(self, **changes: Any) -> str:
        from urllib.parse import urlencode

        values = {
            k: getattr(self, k) for k in ("rule", "entity", "source", "run_id", "status", "since", "until")
        }
        values.update(changes)
        return urlencode({k: str(v) for k, v in values.items() if v not in (None, "")})


@dataclass(frozen=True)
class Line:
    """One held report × rule × field, as shown and exported (identifiers masked)."""

    id: int
    org_code: str
    org_name: str
    source: str
    entity: str
    report_no: str
    event_no: str
    key: Mapping[str, str]
    report_date: str
    patient: str
    rule: str
    rule_title: str
    severity: str
    field: str
    field_name: str
    item: str
    message: str
    status: str
    quarantined_at: datetime | None
    resolved_at: datetime | None
    run_id: str

    def cell(self, name: str) -> Any:
        v = getattr(self, name)
        if isinstance(v, datetime):
            return v.strftime("%Y-%m-%d %H:%M:%S")
        return "" if v is None else v


@dataclass
class RuleCount:
    rule: str
    title: str
    severity: str
    open: int = 0
    resolved: int = 0
    reports: set[int] = field(default_factory=set)


def has_quarantine(conn: Connection) -> bool:
    """Whether the store has its quarantine table yet (a fresh store before the first run has not)."""
    from sqlalchemy import inspect

    return inspect(conn).has_table(store.quarantine.name)


def _payload_columns(conn: Connection, q: Any) -> tuple[list[Any], bool]:
    """Server-side extraction of the payload's date and name (PostgreSQL), or the payload itself."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        doc = cast(q.c.payload, JSONB)
        dates = [doc["master"][f].astext for f in DATE_FIELDS]
        dates.append(doc["items"][0]["last_update_dtime"].astext)
        names = [doc["master"][f].astext for f in NAME_FIELDS]
        return [func.coalesce(*dates).label("p_date"), func.coalesce(*names).label("p_name")], True
    return [q.c.payload], False


def _where(q: Any, flt: Filter) -> list[Any]:
    conds: list[Any] = []
    if flt.org_code:
        conds.append(q.c.org_code == flt.org_code)
    if flt.entity:
        conds.append(q.c.entity == flt.entity)
    if flt.source:
        conds.append(q.c.source == flt.source)
    if flt.run_id:
        conds.append(q.c.run_id == flt.run_id)
    if flt.status == "open":
        conds.append(q.c.resolved_at.is_(None))
    elif flt.status == "resolved":
        conds.append(q.c.resolved_at.is_not(None))
    if flt.since:
        conds.append(q.c.quarantined_at >= datetime.combine(flt.since, datetime.min.time()))
    if flt.until:
        conds.append(
            q.c.quarantined_at < datetime.combine(flt.until + timedelta(days=1), datetime.min.time())
        )
    if flt.rule:
        # a cheap pre-filter on the JSON text; the exact match is made on the parsed rules
        conds.append(cast(q.c.rules, String).like(f'%"rule":"{flt.rule}"%'))
    return conds


def quarantine_lines(
    conn: Connection,
    flt: Filter,
    *,
    limit: int | None = None,
    org_names: Mapping[str, str] | None = None,
) -> list[Line]:
    """The held reports of ``flt`` as lines (newest quarantine first). ``limit`` caps the
    quarantine entries read (each gives one line per rule and field)."""
    from hurren.rules import load_rulebook

    if not has_quarantine(conn):
        return []
    rb = load_rulebook()
    q = store.quarantine
    payload_cols, server_side = _payload_columns(conn, q)
    stmt = (
        select(
            q.c.id, q.c.run_id, q.c.source, q.c.org_code, q.c.entity, q.c.record_key, q.c.rules, q.c.reason,
            q.c.quarantined_at, q.c.resolved_at, *payload_cols,
        )
        .where(and_(*_where(q, flt)))
        .order_by(q.c.quarantined_at.desc(), q.c.id.desc())
    )  # fmt: skip
    if limit is not None:
        stmt = stmt.limit(limit)
    names = dict(org_names or {})
    out: list[Line] = []
    for r in conn.execute(stmt):
        if server_side:
            p_date, p_name, idents = r.p_date, r.p_name, set()
        else:
            p_date, p_name, idents = _from_payload(r.payload)
        ent = spec.entity(r.entity)
        key = masking.mask_key(ent, r.record_key)
        if p_name:
            idents.add(str(p_name))
        patient = masking.mask("name", p_name) if p_name else ""
        base = {
            "id": int(r.id), "org_code": r.org_code or "", "org_name": names.get(r.org_code or "", ""),
            "source": r.source, "entity": r.entity,
            "report_no": key.get("report_form_no") or key.get("hr_report_form_no") or _key_text(key),
            "event_no": key.get("event_no") or key.get("new_event_no") or "", "key": key,
            "report_date": (str(p_date)[:19] if p_date else ""), "patient": patient,
            "status": "resolved" if r.resolved_at is not None else "open",
            "quarantined_at": r.quarantined_at, "resolved_at": r.resolved_at, "run_id": r.run_id,
        }  # fmt: skip
        try:
            broken = json.loads(r.rules)
        except ValueError:
            broken = []
        seen: set[tuple[str, str, str, str]] = set()
        for b in broken or [{}]:
            rule = str(b.get("rule") or "?")
            if flt.rule and rule != flt.rule:
                continue
            fld, ent_name, item = (
                str(b.get("field") or ""),
                str(b.get("entity") or r.entity),
                str(b.get("item") or ""),
            )
            sig = (rule, ent_name, item, fld)
            if sig in seen:
                continue
            seen.add(sig)
            text = rb.rules.get(rule)
            message = _message_for(
                r.reason, rule=rule, entity=ent_name, item=item, field_name=fld, by=b.get("by")
            )
            out.append(
                Line(
                    **base,
                    rule=rule,
                    rule_title=f"{text.title_zh} / {text.title_en}" if text else rule,
                    severity=str(b.get("severity") or (text.severity if text else "error")),
                    field=fld,
                    field_name=_field_label(ent_name, fld),
                    item=masking.scrub(item, idents),
                    message=masking.scrub(message, idents),
                )
            )
    return out


def _key_text(key: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items() if k != "org_code")


def _from_payload(raw: str | None) -> tuple[str | None, str | None, set[str]]:
    try:
        doc = json.loads(raw or "{}")
    except ValueError:
        return None, None, set()
    master = doc.get("master") or {}
    items = doc.get("items") or []
    p_date = next((master.get(f) for f in DATE_FIELDS if master.get(f)), None)
    if p_date is None and items:
        p_date = items[0].get("last_update_dtime")
    p_name = next((master.get(f) for f in NAME_FIELDS if master.get(f)), None)
    return p_date, p_name, masking.identifier_values([master, *items])


def _field_label(entity: str, field_name: str) -> str:
    if not field_name:
        return ""
    try:
        ent = spec.entity(entity)
    except Exception:  # noqa: BLE001 - an entity name from an older spec: show the raw name
        return ""
    parts = [p for p in field_name.split(",") if p]
    if parts and all(p in ent.names for p in parts):
        return "、".join(ent.field(p).zh_name for p in parts)
    return ""


def _message_for(reason: str, *, rule: str, entity: str, item: str, field_name: str, by: Any) -> str:
    """The line of the validator's reason that is about this rule and field (format of
    ``Verdicts.reason``: ``- [sev] <entity><item>.<field> (<label>) <rule>: <message>``); load's
    own holds and anything unexpected give the whole reason."""
    where = f"] {entity}{item}.{field_name} ("
    tag = f") {rule}: "
    for line in (reason or "").splitlines():
        if line.startswith("- [") and where in line and tag in line:
            return line.split(tag, 1)[1].strip()
    if by == "load" or not reason:
        return (reason or "").strip()
    return " ".join((reason or "").split())


def rule_counts(conn: Connection, flt: Filter) -> list[RuleCount]:
    """Per rule: how many quarantine entries of the hospital are open / resolved (all statuses,
    ``flt.status`` ignored), most open first."""
    from hurren.rules import load_rulebook

    if not has_quarantine(conn):
        return []
    rb = load_rulebook()
    q = store.quarantine
    stmt = select(q.c.id, q.c.rules, q.c.resolved_at).where(
        and_(*_where(q, Filter(**{**flt.__dict__, "status": "all", "rule": None})))
    )
    counts: dict[str, RuleCount] = {}
    for r in conn.execute(stmt):
        try:
            broken = json.loads(r.rules)
        except ValueError:
            continue
        for rule in {str(b.get("rule") or "?") for b in broken}:
            sevs = {str(b.get("severity")) for b in broken if b.get("rule") == rule}
            text = rb.rules.get(rule)
            default = text.severity if text else "error"
            sev = "error" if "error" in sevs else ("warning" if "warning" in sevs else default)
            title = f"{text.title_zh} / {text.title_en}" if text else rule
            c = counts.setdefault(rule, RuleCount(rule, title, sev))
            if r.id in c.reports:
                continue
            c.reports.add(r.id)
            if r.resolved_at is None:
                c.open += 1
            else:
                c.resolved += 1
    return sorted(counts.values(), key=lambda c: (-c.open, -c.resolved, c.rule))


# --- exports ----------------------------------------------------------------------------------


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(lines: Iterable[Line]) -> bytes:
    """The lines as CSV, UTF-8 with BOM, bilingual header."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([h for _, h in COLUMNS])
    for ln in lines:
        w.writerow([_safe(ln.cell(c)) for c, _ in COLUMNS])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(lines: Sequence[Line], *, title: str = "") -> bytes:
    """The lines as an Excel workbook: sheet 1 the lines (filter, frozen header), sheet 2 the
    count per rule."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("暂扣 held")
    widths = {"message": 80, "rule_title": 36, "org_name": 24, "run_id": 40, "field_name": 20}
    for i, (c, _) in enumerate(COLUMNS):
        ws.column_dimensions[_col_letter(i)].width = widths.get(c, 18)
    ws.freeze_panes = "A2"
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
    header = []
    for _, h in COLUMNS:
        cell = WriteOnlyCell(ws, value=h)
        cell.font, cell.fill = bold, fill
        header.append(cell)
    ws.append(header)
    wrap = Alignment(wrap_text=True, vertical="top")
    for ln in lines:
        row = []
        for c, _ in COLUMNS:
            cell = WriteOnlyCell(ws, value=_safe(ln.cell(c)))
            if c == "message":
                cell.alignment = wrap
            row.append(cell)
        ws.append(row)
    ws.auto_filter.ref = f"A1:{_col_letter(len(COLUMNS) - 1)}{len(lines) + 1}"

    by_rule = wb.create_sheet("按规则 by rule")
    by_rule.append(
        [
            "规则 rule",
            "规则说明 rule title",
            "级别 severity",
            "报告数 reports",
            "未解决 open",
            "已解决 resolved",
        ]
    )
    counts: dict[str, list[Any]] = {}
    seen: set[tuple[str, int]] = set()
    for ln in lines:
        c = counts.setdefault(ln.rule, [ln.rule, ln.rule_title, ln.severity, 0, 0, 0])
        if (ln.rule, ln.id) in seen:
            continue
        seen.add((ln.rule, ln.id))
        c[3] += 1
        c[4 if ln.status == "open" else 5] += 1
    for c in sorted(counts.values(), key=lambda c: -c[3]):
        by_rule.append(c)
    if title:
        wb.properties.title = title
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _col_letter(i: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(i + 1)


def open_counts(conn: Connection, org_codes: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
    """org_code -> (open, resolved) quarantine entries."""
    if not has_quarantine(conn):
        return {}
    q = store.quarantine
    stmt = select(q.c.org_code, func.count(), func.count(q.c.resolved_at)).group_by(q.c.org_code)
    if org_codes:
        stmt = stmt.where(or_(*(q.c.org_code == o for o in org_codes)))
    return {r[0]: (int(r[1]) - int(r[2]), int(r[2])) for r in conn.execute(stmt)}
