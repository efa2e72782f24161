"""Daily counts (检查检验日报上传, spec §1.2.2.5): per hospital and day, the audited reports by
ordering department, lab and exam merged into one row per department, computed from the store.

What is counted for hospital ``org`` on day ``D`` (decision D18 in docs/spec-decisions.md):

- reports **in the store** (they passed validation and were loaded: what the municipal platform
  submits; a report held in quarantine is not counted until a corrected version loads);
- **audited on D**: ``authenticator_dtime`` (审核者审核时间) in ``[D 00:00:00, D+1 00:00:00)``,
  Beijing time, naive, as every spec time;
- **not void**: ``data_status`` not one of ``SpecOptions.void_data_status`` (D15);
- exam reports only in an audited state: ``state`` 3 审核完成 or 4 修订完成, and ``checked_status``
  (是否审核) not ``0``;
- grouped by the ordering department ``participant_dept_code`` (开单科室, the table's note on
  ``dept_code``); its name and standard code are the ones most of that day's reports of the
  department carry (ties: the latest report's).

Counts above ``NUMBER(4)`` follow D8 (``SpecOptions.daily_count_max`` / ``daily_count_overflow``):
``clamp`` (default) sends the maximum and records the true count and the overflow in
``store.daily_count_recon``; ``error`` raises :class:`DailyCountOverflow` and stores nothing.

Re-running a day replaces that day's rows (``store.lab_exam_report``, key org_code + date_t +
dept_code), never adds to them; a department that had a row for the day and now has no report
keeps its row with zero counts, so the platform's own copy (it upserts by the same key) is
overwritten rather than left stale. A day whose rows come out the same (ignoring
``last_update_dtime``, the time they were computed) is left alone and not sent again.

Pushing: each row written is queued in the push outbox (``hurren.push``) in the same transaction,
one entry per department row; the push sends a hospital's queued rows with ArchiveAutoReport, many
per call, with the outbox's retries, backoff and dead letters. :func:`reconcile_day` then compares,
per department, the counts with what the platform acknowledged: the outbox's state of the row's
current version (``push_status``), and the reports of that day the outbox holds as ``acked``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, true, update
from sqlalchemy.engine import Connection, Engine

from hurren import spec, store
from hurren.push import outbox

__all__ = [
    "ISSUES",
    "DailyCountError",
    "DailyCountOverflow",
    "DayCounts",
    "DeptCount",
    "compute_day",
    "count_reports",
    "days_to_count",
    "merge",
    "reconcile_day",
    "report_day",
    "row_hash",
    "to_rows",
]

log = logging.getLogger(__name__)

BEIJING = ZoneInfo("Asia/Shanghai")
ENTITY = "lab_exam_report"
EXAM_AUDITED_STATES = ("3", "4")  # ENUM_EXAM_STATE 审核完成, 修订完成
NOT_CHECKED = "0"  # ENUM_CHECKED_STATUS 否

Issue = Literal["overflow", "not_sent", "push_error", "lab_not_acked", "exam_not_acked"]
ISSUES: tuple[Issue, ...] = ("overflow", "not_sent", "push_error", "lab_not_acked", "exam_not_acked")
_IN_GROUP = 500


class DailyCountError(RuntimeError):
    """Daily counts could not be computed or sent; the message says what to do."""


class DailyCountOverflow(DailyCountError):
    """A count exceeds NUMBER(4) and ``daily_count_overflow`` is ``error`` (D8): nothing was stored."""


# --------------------------------------------------------------------------------------------
# which day


def report_day(at: datetime) -> date:
    """The day a run at ``at`` counts: the Beijing calendar day before ``at`` (a naive ``at`` is
    taken as Beijing time). The 03:00 run of 2024-05-30 counts 2024-05-29."""
    local = at.astimezone(BEIJING) if at.tzinfo is not None else at
    return local.date() - timedelta(days=1)


def days_to_count(last_day: date, recount_days: int) -> list[date]:
    """``last_day`` and the ``recount_days - 1`` days before it, oldest first (late reports)."""
    if recount_days < 1:
        raise DailyCountError(f"recount_days must be at least 1, got {recount_days}")
    return [last_day - timedelta(days=n) for n in range(recount_days - 1, -1, -1)]


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, datetime.min.time())
    return start, start + timedelta(days=1)


# --------------------------------------------------------------------------------------------
# counting


@dataclass(frozen=True, slots=True)
class DeptCount:
    """One ordering department's reports of a day, lab and exam merged."""

    dept_code: str
    dept_name: str | None
    dept_std_code: str | None
    dept_std_name: str | None
    lab: int = 0
    exam: int = 0


_Group = tuple[str | None, str | None, str | None, str | None, int, datetime | None]
"""(dept_code, dept_name, dept_std_code, dept_std_name, reports, latest authenticator_dtime)"""


def _counted(table: Table, *, org_code: str, day: date, options: spec.SpecOptions) -> list[Any]:
    """The WHERE clauses that pick the reports of ``table`` counted for ``org_code`` on ``day``."""
    since, until = _bounds(day)
    void = [int(v) for v in options.void_data_status if str(v).lstrip("-").isdigit()]
    where = [
        table.c.org_code == org_code,
        table.c.authenticator_dtime >= since,
        table.c.authenticator_dtime < until,
        or_(table.c.data_status.is_(None), table.c.data_status.not_in(void)) if void else true(),
    ]
    if table.name == "exammaster":
        where += [
            table.c.state.in_(EXAM_AUDITED_STATES),
            or_(table.c.checked_status.is_(None), table.c.checked_status != NOT_CHECKED),
        ]
    return where


def _groups(
    conn: Connection, entity: str, *, org_code: str, day: date, options: spec.SpecOptions
) -> list[_Group]:
    t = store.SPEC_TABLES[entity]
    cols = (
        t.c.participant_dept_code,
        t.c.participant_dept_name,
        t.c.participant_dept_std_code,
        t.c.participant_dept_std_name,
    )
    stmt = (
        select(*cols, func.count(), func.max(t.c.authenticator_dtime))
        .where(*_counted(t, org_code=org_code, day=day, options=options))
        .group_by(*cols)
    )
    return [tuple(r) for r in conn.execute(stmt)]


def merge(lab: Iterable[_Group], exam: Iterable[_Group]) -> list[DeptCount]:
    """Lab and exam groups merged into one count per department code, sorted by code.

    A department's name and standard code are those of the variant most of its reports carry
    (lab and exam together); ties go to the variant with the latest report."""
    totals: dict[str, list[int]] = {}
    variants: dict[str, dict[tuple[Any, ...], list[Any]]] = {}
    for kind, groups in ((0, lab), (1, exam)):
        for code, name, std, std_name, n, latest in groups:
            if code is None:
                log.warning("daily counts: %s report(s) without participant_dept_code skipped", n)
                continue
            totals.setdefault(code, [0, 0])[kind] += int(n)
            v = variants.setdefault(code, {}).setdefault((name, std, std_name), [0, None])
            v[0] += int(n)
            if latest is not None and (v[1] is None or latest > v[1]):
                v[1] = latest
    out = []
    for code in sorted(totals):
        (name, std, std_name), _ = max(
            variants[code].items(), key=lambda kv: (kv[1][0], kv[1][1] or datetime.min, kv[0] != (None,) * 3)
        )
        out.append(DeptCount(code, name, std, std_name, lab=totals[code][0], exam=totals[code][1]))
    return out


def count_reports(
    conn: Connection, *, org_code: str, day: date, options: spec.SpecOptions
) -> list[DeptCount]:
    """The day's counts of ``org_code`` from the store, one per ordering department."""
    return merge(
        _groups(conn, "labmaster", org_code=org_code, day=day, options=options),
        _groups(conn, "exammaster", org_code=org_code, day=day, options=options),
    )


def row_hash(row: Mapping[str, Any]) -> str:
    """The version of a daily-count row: every spec field but ``last_update_dtime`` (when it was
    computed), so an unchanged day is recognised as such."""
    body = {
        k: None if row.get(k) is None else str(row[k])
        for k in spec.entity(ENTITY).names
        if k != "last_update_dtime"
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def to_rows(
    counts: Sequence[DeptCount], *, org_code: str, day: date, computed_at: datetime, options: spec.SpecOptions
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, ...]]]:
    """``lab_exam_report`` rows (spec field names, store types) and, per department, the fields
    that exceeded ``daily_count_max`` (D8: clamped, or :class:`DailyCountOverflow` under ``error``)."""
    limit = options.daily_count_max
    rows, overflow = [], {}
    for c in counts:
        over = tuple(name for name, n in (("lab_num", c.lab), ("exam_num", c.exam)) if n > limit)
        if over:
            if options.daily_count_overflow == "error":
                raise DailyCountOverflow(
                    f"{org_code} {day} department {c.dept_code}: {', '.join(over)} above {limit} "
                    f"(lab {c.lab}, exam {c.exam}); NUMBER(4) cannot carry it (D8). Set "
                    "daily_count_overflow to 'clamp' to send the maximum and record the overflow"
                )
            overflow[c.dept_code] = over
        rows.append(
            {
                "last_update_dtime": computed_at,
                "org_code": org_code,
                "date_t": day,
                "dept_code": c.dept_code,
                "dept_name": c.dept_name,
                "dept_std_code": c.dept_std_code,
                "dept_std_name": c.dept_std_name,
                "lab_num": min(c.lab, limit),
                "exam_num": min(c.exam, limit),
            }
        )
    return rows, overflow


# --------------------------------------------------------------------------------------------
# the day in the store


@dataclass(slots=True)
class DayCounts:
    """One hospital-day as computed: the rows stored (and to send), whether they changed."""

    org_code: str
    day: date
    rows: list[dict[str, Any]]
    changed: bool
    counted: dict[str, tuple[int, int]] = field(default_factory=dict)  # dept -> (lab, exam), unclamped
    overflow: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (XCom): totals, no patient data."""
        return {
            "org_code": self.org_code,
            "day": self.day.isoformat(),
            "departments": len(self.rows),
            "lab": sum(lab for lab, _ in self.counted.values()),
            "exam": sum(exam for _, exam in self.counted.values()),
            "lab_sent": sum(r["lab_num"] for r in self.rows),
            "exam_sent": sum(r["exam_num"] for r in self.rows),
            "overflow": {k: list(v) for k, v in sorted(self.overflow.items())},
            "changed": self.changed,
        }


_fields = spec.entity(ENTITY).names


def _stored(conn: Connection, org_code: str, day: date) -> dict[str, dict[str, Any]]:
    t = store.SPEC_TABLES[ENTITY]
    rows = conn.execute(select(t).where(t.c.org_code == org_code, t.c.date_t == day)).mappings()
    return {r["dept_code"]: dict(r) for r in rows}


def compute_day(
    engine: Engine,
    *,
    org_code: str,
    day: date,
    options: spec.SpecOptions,
    run_id: str | None = None,
    now: datetime | None = None,
) -> DayCounts:
    """Count ``org_code``'s reports of ``day`` from the store and replace the day's rows in
    ``store.lab_exam_report`` (and ``daily_count_recon``) when they changed, in one transaction.

    ``now`` (naive Beijing time; default the clock) becomes ``last_update_dtime`` of changed rows.
    """
    now = (now or datetime.now(BEIJING).replace(tzinfo=None)).replace(microsecond=0)
    t, recon = store.SPEC_TABLES[ENTITY], store.daily_count_recon
    with engine.begin() as conn:
        counts = count_reports(conn, org_code=org_code, day=day, options=options)
        before = _stored(conn, org_code, day)
        seen = {c.dept_code for c in counts}
        gone = [
            DeptCount(code, r["dept_name"], r["dept_std_code"], r["dept_std_name"])
            for code, r in before.items()
            if code not in seen
        ]
        counts = sorted([*counts, *gone], key=lambda c: c.dept_code)
        rows, overflow = to_rows(counts, org_code=org_code, day=day, computed_at=now, options=options)
        for r in rows:
            r["etl_content_hash"] = row_hash(r)
            r["etl_run_id"] = run_id
        changed = {r["dept_code"]: r["etl_content_hash"] for r in rows} != {
            k: v["etl_content_hash"] for k, v in before.items()
        }
        result = DayCounts(
            org_code, day, rows, changed, {c.dept_code: (c.lab, c.exam) for c in counts}, overflow
        )
        if not changed:
            result.rows = [
                {k: v[k] for k in (*_fields, "etl_content_hash", "etl_run_id")} for v in before.values()
            ]
            result.rows.sort(key=lambda r: r["dept_code"])
            _refresh_recon(conn, result, run_id=run_id, now=now)
            outbox.enqueue_records(
                conn, spec.entity(ENTITY), result.rows
            )  # no-op unless the outbox lacks them
            return result
        conn.execute(delete(t).where(t.c.org_code == org_code, t.c.date_t == day))
        if rows:
            conn.execute(insert(t), rows)
        conn.execute(delete(recon).where(recon.c.org_code == org_code, recon.c.date_t == day))
        if rows:
            conn.execute(insert(recon), [_recon_row(result, r, run_id=run_id, now=now) for r in rows])
            outbox.enqueue_records(
                conn, spec.entity(ENTITY), rows
            )  # changed rows only: the rest are acked or queued
    log.info(
        "daily counts %s %s: %s department(s), lab %s, exam %s%s",
        org_code,
        day,
        len(rows),
        result.as_dict()["lab"],
        result.as_dict()["exam"],
        f"; clamped (D8) {result.overflow}" if result.overflow else "",
    )
    return result


def _recon_row(
    result: DayCounts, row: Mapping[str, Any], *, run_id: str | None, now: datetime
) -> dict[str, Any]:
    lab, exam = result.counted.get(row["dept_code"], (0, 0))
    over = result.overflow.get(row["dept_code"], ())
    return {
        "org_code": result.org_code,
        "date_t": result.day,
        "dept_code": row["dept_code"],
        "lab_counted": lab,
        "exam_counted": exam,
        "lab_num": row["lab_num"],
        "exam_num": row["exam_num"],
        "overflow": ",".join(over),
        "lab_acked": None,
        "exam_acked": None,
        "push_status": "not_sent",
        "push_answer": None,
        "pushed_at": None,
        "issues": ",".join(["overflow", "not_sent"] if over else ["not_sent"]),
        "run_id": run_id,
        "checked_at": now,
    }


def _refresh_recon(conn: Connection, result: DayCounts, *, run_id: str | None, now: datetime) -> None:
    """An unchanged day: make sure every row has its reconciliation row (kept as it is)."""
    recon = store.daily_count_recon
    have = set(
        conn.execute(
            select(recon.c.dept_code).where(recon.c.org_code == result.org_code, recon.c.date_t == result.day)
        ).scalars()
    )
    missing = [
        _recon_row(result, r, run_id=run_id, now=now) for r in result.rows if r["dept_code"] not in have
    ]
    if missing:
        conn.execute(insert(recon), missing)


def stored_rows(engine: Engine, *, org_code: str, day: date) -> list[dict[str, Any]]:
    """The day's ``lab_exam_report`` rows as stored (spec fields), by department code."""
    with engine.connect() as conn:
        before = _stored(conn, org_code, day)
    return [{k: before[d][k] for k in _fields} for d in sorted(before)]


# --------------------------------------------------------------------------------------------
# reconciliation against what the platform acknowledged


def _acked_reports(
    conn: Connection, entity: str, *, org_code: str, day: date, options: spec.SpecOptions
) -> dict[str, int] | None:
    """Per department, the counted reports of the day that the outbox holds as acknowledged (any
    version); None when the outbox has never held a report of this hospital (no push yet)."""
    ob = store.outbox
    if (
        conn.execute(select(ob.c.id).where(ob.c.entity == entity, ob.c.org_code == org_code).limit(1)).first()
        is None
    ):
        return None
    t = store.SPEC_TABLES[entity]
    ent = spec.entity(entity)
    reports = conn.execute(
        select(t.c.participant_dept_code, *(t.c[k] for k in ent.key)).where(
            *_counted(t, org_code=org_code, day=day, options=options)
        )
    ).all()
    by_key = {store.record_key(ent, dict(zip(ent.key, r[1:], strict=True))): r[0] for r in reports}
    acked: set[str] = set()
    stmt = select(ob.c.record_key).where(
        ob.c.entity == entity, ob.c.status == "acked", ob.c.record_key.in_(bindparam("keys", expanding=True))
    )
    keys = sorted(by_key)
    for i in range(0, len(keys), _IN_GROUP):
        acked.update(conn.execute(stmt, {"keys": keys[i : i + _IN_GROUP]}).scalars())
    return dict(Counter(by_key[k] for k in acked))


_PUSH_STATUS = {
    "acked": "acked",
    "queued": "queued",
    "sending": "queued",
    "rejected": "rejected",
    "dead": "dead",
}


def _pushed(conn: Connection, org_code: str, day: date) -> dict[str, dict[str, Any]]:
    """Per department: the outbox's state of the day's row as stored now (its current version):
    ``push_status`` (not_sent | queued | acked | rejected | dead), ``push_answer``, ``pushed_at``."""
    entity = spec.entity(ENTITY)
    ob = store.outbox
    out = {}
    for dept, row in _stored(conn, org_code, day).items():
        entry = conn.execute(
            select(ob.c.status, ob.c.answer_text, ob.c.last_error, ob.c.acked_at)
            .where(
                ob.c.entity == ENTITY,
                ob.c.record_key == store.record_key(entity, row),
                ob.c.content_hash == row["etl_content_hash"],
            )  # fmt: skip
            .order_by(ob.c.id.desc())
            .limit(1)
        ).first()
        status = _PUSH_STATUS.get(entry.status, "not_sent") if entry else "not_sent"
        answer = None
        if status == "acked":
            answer = "ok" + (f":{entry.answer_text}" if entry.answer_text else "")
        elif entry is not None:
            answer = entry.last_error
        out[dept] = {
            "push_status": status,
            "push_answer": answer,
            "pushed_at": entry.acked_at if entry else None,
        }
    return out


def reconcile_day(engine: Engine, *, org_code: str, day: date, options: spec.SpecOptions) -> dict[str, Any]:
    """Per department of the day: counted vs. sent (D8) vs. the platform's answer to the counts
    (the push outbox) vs. the reports of the day the platform acknowledged. Writes ``lab_acked``,
    ``exam_acked``, the push state and ``issues`` into ``daily_count_recon``; returns the day's
    summary (JSON-safe)."""
    recon = store.daily_count_recon
    now = datetime.now(BEIJING).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:
        lab = _acked_reports(conn, "labmaster", org_code=org_code, day=day, options=options)
        exam = _acked_reports(conn, "exammaster", org_code=org_code, day=day, options=options)
        pushed = _pushed(conn, org_code, day)
        rows = (
            conn.execute(select(recon).where(recon.c.org_code == org_code, recon.c.date_t == day))
            .mappings()
            .all()
        )
        issues: Counter[str] = Counter()
        status: Counter[str] = Counter()
        for r in rows:
            lab_acked = None if lab is None else lab.get(r["dept_code"], 0)
            exam_acked = None if exam is None else exam.get(r["dept_code"], 0)
            push = pushed.get(
                r["dept_code"], {"push_status": "not_sent", "push_answer": None, "pushed_at": None}
            )
            found = []
            if r["overflow"]:
                found.append("overflow")
            if push["push_status"] in ("not_sent", "queued"):
                found.append("not_sent")
            if push["push_status"] in ("rejected", "dead"):
                found.append("push_error")
            if lab_acked is not None and lab_acked != r["lab_counted"]:
                found.append("lab_not_acked")
            if exam_acked is not None and exam_acked != r["exam_counted"]:
                found.append("exam_not_acked")
            issues.update(found)
            status[push["push_status"]] += 1
            conn.execute(
                update(recon)
                .where(
                    recon.c.org_code == org_code, recon.c.date_t == day, recon.c.dept_code == r["dept_code"]
                )
                .values(
                    lab_acked=lab_acked, exam_acked=exam_acked, issues=",".join(found), checked_at=now, **push
                )
            )
    summary = {
        "org_code": org_code,
        "day": day.isoformat(),
        "departments": len(rows),
        "lab_counted": sum(r["lab_counted"] for r in rows),
        "exam_counted": sum(r["exam_counted"] for r in rows),
        "lab_sent": sum(r["lab_num"] for r in rows),
        "exam_sent": sum(r["exam_num"] for r in rows),
        "lab_acked": None if lab is None else sum(lab.values()),
        "exam_acked": None if exam is None else sum(exam.values()),
        "push_status": dict(status),
        "issues": {i: issues[i] for i in ISSUES if issues[i]},
    }
    log.info("daily counts reconciliation %s %s: %s", org_code, day, summary)
    return summary
