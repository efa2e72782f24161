"""Write synthetic hospital-days into a database: chunked, COPY on PostgreSQL, executemany elsewhere
(multi-row INSERTs on MySQL/MariaDB: pymysql batches an executemany of one INSERT)."""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal, NamedTuple

from sqlalchemy import create_engine, delete, func, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from hurren import spec

from . import catalog
from .defects import (
    Label,
    apply_record_defect,
    apply_report_defect,
    apply_study_defect,
    check_kinds,
    plan_defects,
)
from .people import Hospital
from .reports import HospitalDay, Report, Row, fmt_dt
from .schema import (
    LABEL_TABLE,
    SOURCE_ENTITIES,
    WATERMARKS,
    create_source_schema,
    drop_source_schema,
)

__all__ = [
    "Changes",
    "Manifest",
    "ReportKey",
    "ensure_database",
    "generate_changes",
    "generate_hospital_day",
    "generate_region",
]


@dataclass(frozen=True)
class Manifest:
    """What one hospital-day run wrote."""

    org_code: str
    hospital: str
    day: date
    seed: int
    rows: dict[str, int]  # entity -> rows written (defective rows included)
    defects: dict[str, int]  # kind -> defects injected (one label each)
    pdf_bytes: int  # decoded size of the PDFs written
    base64_bytes: int  # size of the pdf column values written

    @property
    def labels(self) -> int:
        return sum(self.defects.values())

    def summary(self) -> str:
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        out = f"{self.org_code} {self.hospital} {self.day}: {rows}; PDFs {self.pdf_bytes / 1e6:.1f} MB"
        if self.defects:
            out += (
                f"; {self.labels} defects ("
                + ", ".join(f"{k} {v}" for k, v in sorted(self.defects.items()))
                + ")"
            )
        return out


class ReportKey(NamedTuple):
    org_code: str
    report_form_no: str
    patient_id: str
    event_type: str
    event_no: str


@dataclass(frozen=True)
class Changes:
    """What :func:`generate_changes` did, to check incremental extraction against."""

    entity: str
    new: list[ReportKey] = field(default_factory=list)
    updated: list[ReportKey] = field(default_factory=list)
    voided: list[ReportKey] = field(default_factory=list)
    first_change: datetime | None = None  # every changed row has last_update_dtime in
    last_change: datetime | None = None  # [first_change, last_change], strictly after ``since``


# -- writing -----------------------------------------------------------------------------------
class _Writer:
    """Appends rows to the source tables on one connection (inside the caller's transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.md = create_source_schema(conn)
        self.dialect = conn.dialect.name

    def write(self, table: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        t = self.md.tables[table]
        cols = [c.name for c in t.columns]
        tuples = [tuple(r.get(c) for c in cols) for r in rows]
        if self.dialect == "postgresql":
            from psycopg import sql

            stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols))
            )
            raw = self.conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(stmt) as copy:
                for tup in tuples:
                    copy.write_row(tup)
        elif self.dialect == "sqlite":
            wm = cols.index(WATERMARKS[table]) if table in WATERMARKS else -1
            if wm >= 0:
                tuples = [(*tup[:wm], fmt_dt(tup[wm]), *tup[wm + 1 :]) for tup in tuples]
            names = ", ".join(f'"{c}"' for c in cols)
            marks = ", ".join("?" * len(cols))
            self.conn.exec_driver_sql(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', tuples)
        else:
            self.conn.execute(t.insert(), [dict(zip(cols, tup, strict=True)) for tup in tuples])


def _engine(url: str | Engine) -> Engine:
    return url if isinstance(url, Engine) else create_engine(url)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL or MySQL/MariaDB database of ``url`` if it does not exist (SQLite
    creates its file itself)."""
    u = make_url(url)
    if u.get_backend_name() in ("mysql", "mariadb"):
        server = create_engine(u.set(database="information_schema"))  # every account may open it
        try:
            with server.begin() as conn:  # the name is the caller's own URL; backticks quote it
                conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{u.database}` CHARACTER SET utf8mb4"))
        finally:
            server.dispose()
        return
    if not u.drivername.startswith("postgresql"):
        return
    engine = create_engine(u)
    try:
        with engine.connect():
            return
    except OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    finally:
        engine.dispose()
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    finally:
        admin.dispose()


def drop_database(admin: Engine, name: str, *, attempts: int = 30) -> None:
    """``DROP DATABASE IF EXISTS ... WITH (FORCE)`` through an AUTOCOMMIT ``admin`` engine, retried:
    FORCE may not end an autovacuum worker busy in a freshly written database ("must be a member of
    the role whose process is being terminated")."""
    from sqlalchemy.exc import ProgrammingError

    for attempt in range(1, attempts + 1):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except ProgrammingError as exc:
            if "InsufficientPrivilege" not in type(exc.orig).__name__ or attempt == attempts:
                raise
            time.sleep(2)


def _chunks(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _pdf_size(master: Row) -> tuple[int, int]:
    b64 = master.get("pdf") or ""
    return len(b64), len(b64) * 3 // 4 - b64[-2:].count("=")


# -- one hospital-day --------------------------------------------------------------------------
def generate_hospital_day(
    url: str | Engine,
    *,
    org: Hospital,
    day: date | str,
    lab_reports: int = 2000,
    exam_reports: int = 500,
    seed: int = 0,
    lab_items: int = 20,
    exam_items: tuple[int, int] = (1, 3),
    pacs_instances: int = 6,
    accept_records: int | None = None,
    quote_records: int | None = None,
    peers: Sequence[Hospital] = (),
    defect_rate: float = 0.0,
    defect_kinds: Collection[str] | None = None,
    pdf_kb: float = 2.0,
    chunk_size: int = 250,
    reset: bool = False,
) -> Manifest:
    """Write one hospital's reports, PACS rows and accept/quote records of ``day`` to ``url``.

    ``peers`` are the other hospitals the records refer to; they are assumed to be generated with
    the same ``seed``, ``day`` and volumes. Records default to 5 % (accept) and 3 % (quote) of the
    report volume when there are peers, none otherwise. ``defect_rate`` is the fraction of units
    (lab reports, exam reports, PACS studies, accept records, quote records) that get exactly one
    defect, of a kind among ``defect_kinds`` (default: all of ``DEFECT_KINDS``). ``reset`` drops
    and recreates the source tables first.
    """
    day = date.fromisoformat(day) if isinstance(day, str) else day
    check_kinds(defect_kinds)
    if lab_reports < 0 or exam_reports < 0 or chunk_size < 1:
        raise ValueError("lab_reports and exam_reports must be >= 0 and chunk_size >= 1")
    params = dict(
        lab_reports=lab_reports,
        exam_reports=exam_reports,
        lab_items=lab_items,
        exam_items=exam_items,
        pacs_instances=pacs_instances,
        pdf_kb=pdf_kb,
    )
    ctx = HospitalDay(org, day, seed=seed, **params)
    peer_ctx = [HospitalDay(p, day, seed=seed, **params) for p in peers if p.org_code != org.org_code]
    total = lab_reports + exam_reports
    n_accept = (round(0.05 * total) if peer_ctx else 0) if accept_records is None else accept_records
    n_quote = (round(0.03 * total) if peer_ctx else 0) if quote_records is None else quote_records

    def plan(unit, n):
        return plan_defects(
            unit, n, rate=defect_rate, kinds=defect_kinds, seed=seed, org=org.org_code, day=day
        )

    plans = {
        "lab": plan("lab", lab_reports),
        "exam": plan("exam", exam_reports),
        "pacs": plan("pacs", exam_reports),
    }
    rows: Counter[str] = Counter({e: 0 for e in SOURCE_ENTITIES})
    defects: Counter[str] = Counter()
    labels: list[Label] = []
    pdf = [0, 0]

    engine = _engine(url)
    try:
        with engine.begin() as conn:
            if reset:
                drop_source_schema(conn)
            w = _Writer(conn)
            seq0 = conn.execute(select(func.count()).select_from(w.md.tables[LABEL_TABLE])).scalar_one()

            def emit(table: str, batch: list[Row]) -> None:
                w.write(table, batch)
                rows[table] += len(batch)

            for kind, n in (("lab", lab_reports), ("exam", exam_reports)):
                make = ctx.lab_report if kind == "lab" else ctx.exam_report
                for chunk in _chunks(n, chunk_size):
                    masters, items, studies, instances = [], [], [], []
                    for i in chunk:
                        rep = make(i)
                        if k := plans[kind].get(i):
                            labels.append(apply_report_defect(k, rep, ctx.rng(f"defect-{kind}", i)))
                            defects[k] += 1
                        if k := plans["pacs"].get(i) if kind == "exam" else None:
                            labels.append(apply_study_defect(k, rep, ctx.rng("defect-pacs", i)))
                            defects[k] += 1
                        masters.append(rep.master)
                        items += rep.items
                        if rep.study is not None:
                            studies.append(rep.study)
                            instances += rep.instances
                        b64, raw = _pdf_size(rep.master)
                        pdf[0] += b64
                        pdf[1] += raw
                    emit(f"{kind}master", masters)
                    emit(f"{kind}_subitem", items)
                    emit("v_web_jctj", studies)
                    emit("v_web_jcjg", instances)

            for kind, n in (("accept", n_accept), ("quote", n_quote)):
                recs = ctx.records(kind, n, peer_ctx)
                for j, k in plan_defects(
                    kind,
                    len(recs),
                    rate=defect_rate,
                    kinds=defect_kinds,
                    seed=seed,
                    org=org.org_code,
                    day=day,
                ).items():
                    labels.append(
                        apply_record_defect(k, recs[j], ctx.rng(f"defect-{kind}", j), org_code=org.org_code)
                    )
                    defects[k] += 1
                for chunk in _chunks(len(recs), 5000):
                    emit(f"sehr_{kind}_record", recs[chunk.start : chunk.stop])

            w.write(LABEL_TABLE, [lb.as_row(seq0 + s) for s, lb in enumerate(labels, start=1)])
    finally:
        if not isinstance(url, Engine):
            engine.dispose()
    return Manifest(org.org_code, org.name, day, seed, dict(rows), dict(defects), pdf[1], pdf[0])


def generate_region(
    url: str,
    *,
    hospitals: Sequence[Hospital],
    day: date | str,
    reset: bool = False,
    **kwargs: object,
) -> dict[str, Manifest]:
    """Generate every hospital of ``hospitals`` for ``day``; each refers to the others in its records.

    With ``{org}`` in ``url`` every hospital gets its own database (created if missing, PostgreSQL
    included); without it they share one, told apart by ``org_code`` -- except the accept/quote
    records, which the spec gives no column for the recording hospital.
    """
    per_hospital = "{org}" in url
    out: dict[str, Manifest] = {}
    for n, h in enumerate(hospitals):
        u = url.replace("{org}", h.org_code)
        if per_hospital:
            ensure_database(u)
        out[h.org_code] = generate_hospital_day(
            u, org=h, day=day, peers=hospitals, reset=reset and (per_hospital or n == 0), **kwargs
        )
    return out


# -- later changes, for incremental extraction -----------------------------------------------------
def generate_changes(
    url: str | Engine,
    *,
    org: Hospital,
    since: datetime,
    count_new: int = 0,
    count_updated: int = 0,
    count_voided: int = 0,
    seed: int = 0,
    report: Literal["lab", "exam"] = "lab",
    window_s: int = 1800,
    lab_items: int = 20,
    exam_items: tuple[int, int] = (1, 3),
    pacs_instances: int = 6,
    pdf_kb: float = 2.0,
) -> Changes:
    """A later batch for one hospital: new reports, revised reports (new content, PDF and
    ``last_update_dtime``), and voided ones (``data_status`` 0), every change in
    ``(since, since + window_s]``. Revised and voided reports are drawn from the valid, unlabelled
    reports last updated at or before ``since``; new reports continue that day's numbering, and
    new exam reports bring their PACS study."""
    master_t, item_t = f"{report}master", f"{report}_subitem"
    day = since.date()
    rng = random.Random(f"{seed}|{org.org_code}|{since:%Y%m%d%H%M%S}|changes|{report}")
    n_changes = count_new + count_updated + count_voided
    stamps = sorted(since + timedelta(seconds=rng.randint(61, max(62, window_s))) for _ in range(n_changes))
    out = Changes(
        entity=master_t,
        first_change=stamps[0] if stamps else None,
        last_change=stamps[-1] if stamps else None,
    )
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            w = _Writer(conn)
            m, it = w.md.tables[master_t], w.md.tables[item_t]
            lt = w.md.tables[LABEL_TABLE]
            labelled = set(
                conn.execute(select(lt.c.report_form_no).where(lt.c.org_code == org.org_code)).scalars()
            )
            candidates = sorted(
                rfn
                for rfn in conn.execute(
                    select(m.c.report_form_no).where(
                        m.c.org_code == org.org_code, m.c.data_status == "1", m.c.last_update_dtime <= since
                    )
                ).scalars()
                if rfn not in labelled
            )
            if count_updated + count_voided > len(candidates):
                raise ValueError(
                    f"{org.org_code}: only {len(candidates)} valid unlabelled {report} reports before {since}; "
                    f"cannot revise {count_updated} and void {count_voided}"
                )
            picked = rng.sample(candidates, count_updated + count_voided)
            prefix = f"{day:%y%m%d}{1 if report == 'lab' else 2}"
            existing = [
                r
                for r in conn.execute(
                    select(m.c.report_form_no).where(m.c.org_code == org.org_code)
                ).scalars()
                if r.startswith(prefix) and r[7:].isdigit()
            ]
            start = max((int(r[7:]) for r in existing), default=-1) + 1
            ctx = HospitalDay(
                org,
                day,
                seed=seed,
                lab_reports=max(1, len(existing)) if report == "lab" else 0,
                exam_reports=max(1, len(existing)) if report == "exam" else 0,
                lab_items=lab_items,
                exam_items=exam_items,
                pacs_instances=pacs_instances,
                pdf_kb=pdf_kb,
            )
            t = iter(stamps)
            for k in range(count_new):
                at = next(t)
                rep = (ctx.lab_report if report == "lab" else ctx.exam_report)(
                    start + k, auth=at - timedelta(seconds=60)
                )
                _restamp(rep, at)
                w.write(master_t, [rep.master])
                w.write(item_t, rep.items)
                if rep.study is not None:
                    w.write("v_web_jctj", [rep.study])
                    w.write("v_web_jcjg", rep.instances)
                out.new.append(_key(rep.master))
            for rfn in picked[:count_updated]:
                at = next(t)
                master = dict(
                    conn.execute(select(m).where(m.c.org_code == org.org_code, m.c.report_form_no == rfn))
                    .mappings()
                    .one()
                )
                items = [
                    dict(r)
                    for r in conn.execute(
                        select(it).where(
                            it.c.org_code == org.org_code,
                            it.c.event_no == master["event_no"],
                            it.c.report_form_no == rfn,
                        )
                    ).mappings()
                ]
                rep = Report(report, -1, master, items)
                _revise(rep, at, random.Random(f"{seed}|{org.org_code}|{rfn}|{at}|revise"), ctx)
                conn.execute(delete(m).where(m.c.org_code == org.org_code, m.c.report_form_no == rfn))
                conn.execute(
                    delete(it).where(
                        it.c.org_code == org.org_code,
                        it.c.event_no == master["event_no"],
                        it.c.report_form_no == rfn,
                    )
                )
                w.write(master_t, [rep.master])
                w.write(item_t, rep.items)
                out.updated.append(_key(rep.master))
            for rfn in picked[count_updated:]:
                at = next(t)
                master = (
                    conn.execute(select(m).where(m.c.org_code == org.org_code, m.c.report_form_no == rfn))
                    .mappings()
                    .one()
                )
                conn.execute(
                    update(m)
                    .where(m.c.org_code == org.org_code, m.c.report_form_no == rfn)
                    .values(data_status="0", last_update_dtime=at)
                )
                conn.execute(
                    update(it)
                    .where(
                        it.c.org_code == org.org_code,
                        it.c.event_no == master["event_no"],
                        it.c.report_form_no == rfn,
                    )
                    .values(last_update_dtime=at)
                )
                out.voided.append(_key(master))
    finally:
        if not isinstance(url, Engine):
            engine.dispose()
    return out


def _key(master: Row) -> ReportKey:
    return ReportKey(*(master[k] for k in spec.entity("labmaster").key))


def _restamp(rep: Report, at: datetime) -> None:
    rep.master["last_update_dtime"] = at
    for row in rep.items:
        row["last_update_dtime"] = at
    if rep.study is not None:
        for row in rep.instances:
            row["CREATEDTIME"] = max(row["CREATEDTIME"], at)
        rep.study["MODIFYTIME"] = max(r["CREATEDTIME"] for r in rep.instances)


def _revise(rep: Report, at: datetime, rng: random.Random, ctx: HospitalDay) -> None:
    """New content for a report: lab values re-measured, exam conclusion revised (state 4)."""
    m = rep.master
    auth = at - timedelta(seconds=rng.randint(5, 60))
    m["authenticator_dtime"] = fmt_dt(auth)
    if rep.kind == "lab":
        for row in rep.items:
            lo, hi, v = row["norm_lower_limit"], row["norm_upper_limit"], row["result_value"]
            if row["result_type"] == "PQ" and lo and hi:
                decimals = len(v.split(".")[1]) if "." in v else 0
                new = round(abs(float(v) * rng.uniform(0.9, 1.1)), decimals)
                row["result_value"] = f"{new:.{decimals}f}"
                row["result_interpre"] = "L" if new < float(lo) else "H" if new > float(hi) else "N"
                row["result_interpre_descr"] = spec.dictionary("STD_OBSERVATION_INTERPRET").codes[
                    row["result_interpre"]
                ]
        lines = [
            f"{r['serial_no']} {catalog.ANALYTES[r['class_code']].abbr if r['class_code'] in catalog.ANALYTES else r['class_code']}"
            f" {r['result_value'] if r['result_type'] == 'PQ' else ''} {r['result_interpre']}"
            for r in rep.items
        ]
    else:
        m["state"] = "4"
        m["conclusion"] = m["conclusion"] + "（修订）"
        lines = [f"Item {r['exam_item_code']}  site {r['exam_site_code']}" for r in rep.items]
    for row in rep.items:
        row["effective_dtime"] = fmt_dt(auth - timedelta(seconds=rng.randint(0, 30)))
    m["pdf"] = ctx.pdf_for(
        f"Revised {'laboratory' if rep.kind == 'lab' else 'imaging'} report {m['report_form_no']}",
        m,
        ["REVISED", *lines],
    )
    _restamp(rep, at)


def decode_pdf(value: str | None) -> bytes:
    """The PDF bytes of a ``pdf`` column value ('' for NULL)."""
    return base64.b64decode(value or "")
