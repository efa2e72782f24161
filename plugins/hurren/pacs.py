"""PACS reconciliation: each study's statistics row against the instance rows received, and the
exam reports that name it.

The PACS views arrive as two streams (``hurren.sources.STREAMS``): ``pacs_instance`` (v_web_jcjg,
one row per DICOM instance, by CREATEDTIME) and ``pacs_study`` (v_web_jctj, one row per study, by
MODIFYTIME). Both are extracted, validated and loaded like any record stream
(``hurren.pipeline.run_stream``). What only a look across them can tell is computed here, per
study, from the store (never from the hospital again), and kept in ``store.pacs_recon``:

=================  ==========================================================================
issue              meaning
=================  ==========================================================================
no_study           instance rows or an exam report name the study, but no v_web_jctj row is in
                   the store (never sent, or held in quarantine)
no_instances       a study row or an exam report, but no instance row in the store
instance_count     INSTANCECOUNT of the study row differs from the instance rows received
                   (instances still arriving, or held in quarantine: a bad UID, sex, ...)
count_unreadable   INSTANCECOUNT is not a whole number (the spec types it String)
file_size          FILESIZE of the study row differs from the sum over the instance rows
no_report          a study with no exam report whose ``study_instance_uid`` is it
=================  ==========================================================================

A study with none of these is ``ok``; otherwise ``mismatch``. Which studies: those of the days
asked for, found from any side by its own time (``STUDYTIME``, the instances' ``STUDYDATE``, the
report's ``performer_dtime``); their facts are then read by study UID from all three, so a study
whose sides straddle midnight is still matched. A re-run replaces the rows of those days (and of
those studies): the table always says what the store holds now.

Memory: the instance rows are counted and summed by the database (``GROUP BY`` over the index on
the study UID); Python holds one row per study of the days, never an instance.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Connection, Engine

from hurren import store

__all__ = [
    "ISSUES",
    "READ_TABLES",
    "ReconSummary",
    "StudyFacts",
    "assess",
    "days_ending",
    "mismatches",
    "reconcile",
    "study_facts",
]

log = logging.getLogger(__name__)

Issue = Literal["no_study", "no_instances", "instance_count", "count_unreadable", "file_size", "no_report"]
ISSUES: tuple[Issue, ...] = (
    "no_study",
    "no_instances",
    "instance_count",
    "count_unreadable",
    "file_size",
    "no_report",
)
EXAMPLES = 5  # study UIDs kept per issue in the summary (UIDs identify no patient)
_IN_GROUP = 500  # values per IN list (Oracle allows 1000)
_INSERT_GROUP = 5000


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyFacts:
    """What the store holds about one study, from the three sides."""

    org_code: str
    study_uid: str
    study_rows: int = 0  # 1 when the v_web_jctj row is in the store
    study_time: datetime | None = None
    modality: str | None = None
    access_no: str | None = None
    instance_count: str | None = None  # INSTANCECOUNT as sent (String in the spec)
    file_size: int | None = None
    instances: int = 0
    instance_size: int | None = None
    instance_time: datetime | None = None  # earliest STUDYDATE of the instance rows
    reports: int = 0
    report_form_no: str | None = None
    report_time: datetime | None = None  # earliest performer_dtime of the exam reports

    @property
    def study_day(self) -> date:
        """The study's day: STUDYTIME, else the instances' STUDYDATE, else the report's performer_dtime."""
        for t in (self.study_time, self.instance_time, self.report_time):
            if t is not None:
                return t.date()
        raise ValueError(f"study {self.study_uid}: no time on any side")


def _whole(text: str | None) -> int | None:
    if text is None:
        return None
    t = text.strip()
    return int(t) if t.isdigit() else None


def assess(f: StudyFacts) -> tuple[Issue, ...]:
    """The issues of one study, in :data:`ISSUES` order; empty when it reconciles."""
    out: list[Issue] = []
    if not f.study_rows:
        out.append("no_study")
    if not f.instances:
        out.append("no_instances")
    if f.study_rows and f.instances:
        expected = _whole(f.instance_count)
        if expected is None:
            out.append("count_unreadable")
        elif expected != f.instances:
            out.append("instance_count")
        if f.file_size is not None and f.instance_size is not None and f.file_size != f.instance_size:
            out.append("file_size")
    if not f.reports:
        out.append("no_report")
    return tuple(i for i in ISSUES if i in out)


@dataclass(slots=True)
class ReconSummary:
    """What one reconciliation found: counts per issue and a few study UIDs of each."""

    org_code: str
    first_day: str
    last_day: str
    studies: int = 0
    ok: int = 0
    instances: int = 0
    by_issue: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def mismatched(self) -> int:
        return self.studies - self.ok

    def add(self, f: StudyFacts, issues: Sequence[str]) -> None:
        self.studies += 1
        self.instances += f.instances
        if not issues:
            self.ok += 1
        for i in issues:
            self.by_issue[i] += 1
            ex = self.examples.setdefault(i, [])
            if len(ex) < EXAMPLES:
                ex.append(f.study_uid)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (XCom, etl_run.details): counts and study UIDs, no patient data."""
        return {
            "org_code": self.org_code,
            "days": [self.first_day, self.last_day],
            "studies": self.studies,
            "ok": self.ok,
            "mismatched": self.mismatched,
            "instances": self.instances,
            "by_issue": {i: self.by_issue[i] for i in ISSUES if self.by_issue[i]},
            "examples": {i: self.examples[i] for i in ISSUES if i in self.examples},
        }

    def describe(self) -> str:
        issues = ", ".join(f"{i} {n}" for i, n in self.as_dict()["by_issue"].items()) or "none"
        return (
            f"{self.org_code} studies of {self.first_day}..{self.last_day}: {self.studies} checked, "
            f"{self.ok} ok, {self.mismatched} with issues ({issues}); {self.instances} instance rows"
        )


def days_ending(last_day: date, days: int) -> tuple[date, date]:
    """``(first, last)``: the ``days`` days that end with ``last_day``."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    return last_day - timedelta(days=days - 1), last_day


# --------------------------------------------------------------------------------------------
# reading the store


_study = store.SPEC_TABLES["v_web_jctj"]
_inst = store.SPEC_TABLES["v_web_jcjg"]
_exam = store.SPEC_TABLES["exammaster"]
READ_TABLES = (_study, _inst, _exam)  # what the reconciliation reads (and analyzes first when stale)


def _uids_of_days(conn: Connection, org_code: str, since: datetime, until: datetime) -> set[str]:
    """Every study UID of the org with a time in ``[since, until)`` on any side."""
    uids: set[str] = set()
    uids.update(
        conn.execute(
            select(_study.c.studiuiid).where(
                _study.c.institutioncode == org_code, _study.c.studytime >= since, _study.c.studytime < until
            )
        ).scalars()
    )
    uids.update(
        conn.execute(
            select(_inst.c.studiuiid)
            .where(_inst.c.institutioncode == org_code, _inst.c.studydate >= since, _inst.c.studydate < until)
            .distinct()
        ).scalars()
    )
    uids.update(
        conn.execute(
            select(_exam.c.study_instance_uid)
            .where(
                _exam.c.org_code == org_code,
                _exam.c.performer_dtime >= since,
                _exam.c.performer_dtime < until,
                _exam.c.study_instance_uid.is_not(None),
                _exam.c.study_instance_uid != "",
            )
            .distinct()
        ).scalars()
    )
    return uids


def _groups(values: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(values)
    for i in range(0, len(ordered), _IN_GROUP):
        yield ordered[i : i + _IN_GROUP]


_STUDIES = select(
    _study.c.studiuiid,
    _study.c.studytime,
    _study.c.modality,
    _study.c.access_no,
    _study.c.instancecount,
    _study.c.filesize,
).where(
    _study.c.institutioncode == bindparam("org"), _study.c.studiuiid.in_(bindparam("uids", expanding=True))
)

_INSTANCES = (
    select(
        _inst.c.studiuiid,
        func.count().label("n_rows"),
        func.sum(_inst.c.filesize).label("size_sum"),
        func.min(_inst.c.studydate).label("first_time"),
    )
    .where(
        _inst.c.institutioncode == bindparam("org"), _inst.c.studiuiid.in_(bindparam("uids", expanding=True))
    )
    .group_by(_inst.c.studiuiid)
)

_REPORTS = (
    select(
        _exam.c.study_instance_uid,
        func.count().label("n_rows"),
        func.min(_exam.c.report_form_no).label("first_form"),
        func.min(_exam.c.performer_dtime).label("first_time"),
    )
    .where(
        _exam.c.org_code == bindparam("org"),
        _exam.c.study_instance_uid.in_(bindparam("uids", expanding=True)),
    )
    .group_by(_exam.c.study_instance_uid)
)


def study_facts(conn: Connection, org_code: str, uids: Iterable[str]) -> list[StudyFacts]:
    """The facts of the given studies of ``org_code``, read by study UID from all three sides."""
    out: list[StudyFacts] = []
    for group in _groups(uids):
        p = {"org": org_code, "uids": group}
        studies = {r.studiuiid: r for r in conn.execute(_STUDIES, p)}
        instances = {r.studiuiid: r for r in conn.execute(_INSTANCES, p)}
        reports = {r.study_instance_uid: r for r in conn.execute(_REPORTS, p)}
        for uid in group:
            s, i, r = studies.get(uid), instances.get(uid), reports.get(uid)
            if s is None and i is None and r is None:
                continue  # gone since the UIDs were listed
            out.append(
                StudyFacts(
                    org_code=org_code,
                    study_uid=uid,
                    study_rows=1 if s is not None else 0,
                    study_time=s.studytime if s is not None else None,
                    modality=s.modality if s is not None else None,
                    access_no=s.access_no if s is not None else None,
                    instance_count=s.instancecount if s is not None else None,
                    file_size=s.filesize if s is not None else None,
                    instances=int(i.n_rows) if i is not None else 0,
                    instance_size=int(i.size_sum) if i is not None and i.size_sum is not None else None,
                    instance_time=i.first_time if i is not None else None,
                    reports=int(r.n_rows) if r is not None else 0,
                    report_form_no=r.first_form if r is not None else None,
                    report_time=r.first_time if r is not None else None,
                )
            )
    return out


def _row(f: StudyFacts, issues: Sequence[str], *, run_id: str | None, now: datetime) -> dict[str, Any]:
    return {
        "org_code": f.org_code,
        "study_uid": f.study_uid,
        "study_day": f.study_day,
        "modality": f.modality,
        "access_no": f.access_no,
        "study_rows": f.study_rows,
        "instance_count": _whole(f.instance_count),
        "instances": f.instances,
        "file_size": f.file_size,
        "instance_size": f.instance_size,
        "reports": f.reports,
        "report_form_no": f.report_form_no,
        "status": "mismatch" if issues else "ok",
        "issues": ",".join(issues),
        "run_id": run_id,
        "checked_at": now,
    }


# --------------------------------------------------------------------------------------------
# the entry point


def reconcile(
    engine: Engine,
    *,
    org_code: str,
    first_day: date,
    last_day: date,
    run_id: str | None = None,
    now: datetime | None = None,
) -> ReconSummary:
    """Reconcile the studies of ``org_code`` on the days ``first_day``..``last_day`` (Beijing time)
    and replace their rows in ``store.pacs_recon``, in one transaction. Returns the summary."""
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    since = datetime.combine(first_day, datetime.min.time())
    until = datetime.combine(last_day + timedelta(days=1), datetime.min.time())
    now = (now or datetime.now()).replace(microsecond=0)  # noqa: DTZ005 - store times are naive Beijing
    summary = ReconSummary(org_code, first_day.isoformat(), last_day.isoformat())
    recon = store.pacs_recon
    store.analyze_stale(engine, READ_TABLES)  # the day's instances may have been loaded just now
    with engine.begin() as conn:
        uids = _uids_of_days(conn, org_code, since, until)
        facts = study_facts(conn, org_code, uids)
        rows = []
        for f in facts:
            issues = assess(f)
            summary.add(f, issues)
            rows.append(_row(f, issues, run_id=run_id, now=now))
        conn.execute(
            delete(recon).where(
                recon.c.org_code == org_code, recon.c.study_day >= first_day, recon.c.study_day <= last_day
            )
        )
        stmt = delete(recon).where(
            recon.c.org_code == org_code, recon.c.study_uid.in_(bindparam("uids", expanding=True))
        )
        for group in _groups(f.study_uid for f in facts):
            conn.execute(stmt, {"uids": group})
        for i in range(0, len(rows), _INSERT_GROUP):
            conn.execute(insert(recon), rows[i : i + _INSERT_GROUP])
    log.info("pacs reconciliation: %s", summary.describe())
    return summary


def mismatches(engine: Engine, *, org_code: str, first_day: date, last_day: date) -> list[dict[str, Any]]:
    """The ``pacs_recon`` rows of the days that did not reconcile (what an engineer looks at)."""
    r = store.pacs_recon
    with engine.connect() as conn:
        rows = conn.execute(
            select(r)
            .where(
                r.c.org_code == org_code,
                r.c.study_day >= first_day,
                r.c.study_day <= last_day,
                r.c.status != "ok",
            )
            .order_by(r.c.study_day, r.c.study_uid)
        ).mappings()
        return [dict(x) for x in rows]
