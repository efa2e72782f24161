"""``python -m hurren_testkit.demo``: the demo's data and its summary (used by ``scripts/demo``).

``generate``  writes yesterday's synthetic hospital-day (Beijing time) for every SQLite source of
              the sources configuration into ``.services/demo/<source id>.db``: lab and exam
              reports, the PACS views (``--pacs-instances`` per study) and accept/quote records
              about the reports of the other hospitals (with a single demo hospital, of a peer
              hospital outside the configuration), and prints the ``AIRFLOW_CONN_*`` lines that
              point the hospitals' connections at them. ``--lab``/``--exam``/``--accept``/
              ``--quote`` set the volumes (a test runs the demo small).
``summary``   prints what the store holds: per hospital and stream, the last run's counts and
              the rules that held rows (PACS, accept/quote records included), the PACS
              reconciliation, the daily counts and what the platform said to them, and the
              store's totals — counts only, no patient data.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection, Engine

from hurren import store
from hurren.clients import store_engine
from hurren.sources import resolve_sources
from hurren_testkit import synthetic

DEMO_DIR = Path(__file__).resolve().parents[2] / ".services" / "demo"


def demo_day() -> date:
    """Yesterday in Beijing: the day a nightly run would be catching up on."""
    return datetime.now(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1)


def demo_peers(hospitals: Sequence[synthetic.Hospital], *, seed: int) -> list[synthetic.Hospital]:
    """The hospitals the demo's accept/quote records refer to: the demo hospitals themselves and,
    when there is only one, a peer outside the configuration (records are always about another
    hospital's reports)."""
    if len(hospitals) != 1:
        return list(hospitals)
    taken = {h.org_code for h in hospitals}
    peer = next(h for h in synthetic.make_hospitals(4, seed=seed) if h.org_code not in taken)
    return [*hospitals, peer]


def generate(
    *,
    lab: int,
    exam: int,
    defect_rate: float,
    seed: int,
    pacs_instances: int = 6,
    accept: int | None = None,
    quote: int | None = None,
    directory: Path | None = None,
    day: date | None = None,
) -> dict[str, str]:
    """Write the demo hospitals' day (default yesterday, Beijing) into ``directory`` (default
    ``.services/demo``); returns the ``AIRFLOW_CONN_*`` variables of their connections.
    ``accept``/``quote``: records per hospital (default 5 % / 3 % of the reports)."""
    directory = directory or DEMO_DIR
    directory.mkdir(parents=True, exist_ok=True)
    env = {}
    hospitals = [s for s in resolve_sources().enabled if s.dialect == "sqlite"]
    orgs = [synthetic.Hospital(s.org_code, s.org_name, s.org_name[:3]) for s in hospitals]
    peers = demo_peers(orgs, seed=seed)
    for s, org in zip(hospitals, orgs, strict=True):
        path = directory / f"{s.id}.db"
        manifest = synthetic.generate_hospital_day(
            f"sqlite:///{path}", org=org, day=day or demo_day(), lab_reports=lab, exam_reports=exam,
            pacs_instances=pacs_instances, accept_records=accept, quote_records=quote,
            seed=seed, peers=peers, defect_rate=defect_rate, reset=True,
        )  # fmt: skip
        print(manifest.summary())
        conn = {"conn_type": "sqlite", "host": str(path)}
        env[f"AIRFLOW_CONN_{s.conn_id.upper()}"] = json.dumps(conn)
    return env


STORE_TOTALS = (
    "labmaster", "lab_subitem", "exammaster", "exam_subitem", "v_web_jctj", "v_web_jcjg",
    "sehr_accept_record", "sehr_quote_record", "lab_exam_report",
)  # fmt: skip


def summary() -> str:
    engine = store_engine()
    try:
        return _summary(engine)
    finally:
        engine.dispose()


def _summary(engine: Engine) -> str:
    r = store.run
    lines = [f"{'hospital':<12}{'stream':<15}{'extracted':>10}{'loaded':>8}{'unchanged':>10}{'stale':>7}"
             f"{'quarantined':>12}  rules that held rows"]  # fmt: skip
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        recon: list[str] = []
        if r.name in tables:
            latest = (
                select(r.c.source, r.c.stream, func.max(r.c.id).label("id"))
                .group_by(r.c.source, r.c.stream)
                .subquery()
            )
            for row in conn.execute(
                select(r).join(latest, r.c.id == latest.c.id).order_by(r.c.source, r.c.stream)
            ):
                details = json.loads(row.details or "{}")
                if row.stream == "pacs_recon":  # the per-study reconciliation: no rows extracted
                    issues = ", ".join(f"{k} {v}" for k, v in details.get("by_issue", {}).items()) or "none"
                    recon.append(f"pacs reconciliation {row.source}: {details.get('studies', 0)} studies, "
                                 f"{details.get('ok', 0)} ok; issues: {issues}")  # fmt: skip
                    continue
                rules = ", ".join(f"{k} {v}" for k, v in sorted(details.get("errors_by_rule", {}).items()))
                stale = row.stale or 0
                unchanged = details.get("unchanged", row.extracted - row.loaded - stale - row.quarantined)
                lines.append(f"{row.source:<12}{row.stream:<15}{row.extracted:>10}{row.loaded:>8}{unchanged:>10}"
                             f"{stale:>7}{row.quarantined:>12}  {rules}")  # fmt: skip
        lines += recon
        lines += _daily_counts(conn, tables)
        totals = {
            name: conn.execute(select(func.count()).select_from(store.SPEC_TABLES[name])).scalar_one()
            for name in STORE_TOTALS
            if store.SPEC_TABLES[name].name in tables
        }
        held = 0
        if store.quarantine.name in tables:
            held = conn.execute(
                select(func.count())
                .select_from(store.quarantine)
                .where(store.quarantine.c.resolved_at.is_(None))
            ).scalar_one()
    lines.append(
        "store: " + ", ".join(f"{k} {v}" for k, v in totals.items()) + f"; open quarantine entries {held}"
    )
    return "\n".join(lines)


def _daily_counts(conn: Connection, tables: set[str]) -> list[str]:
    """One line per hospital-day counted: departments, reports counted, what the platform said."""
    d = store.daily_count_recon
    if d.name not in tables:
        return []
    out = []
    stmt = (
        select(d.c.org_code, d.c.date_t, d.c.push_status, func.count().label("depts"),
               func.sum(d.c.lab_counted).label("lab"), func.sum(d.c.exam_counted).label("exam"))
        .group_by(d.c.org_code, d.c.date_t, d.c.push_status)
        .order_by(d.c.org_code, d.c.date_t)
    )  # fmt: skip
    days: dict[tuple[str, Any], list[Any]] = {}
    for row in conn.execute(stmt):
        days.setdefault((row.org_code, row.date_t), []).append(row)
    for (org, day), rows in days.items():
        depts = sum(x.depts for x in rows)
        status = ", ".join(f"{x.push_status} {x.depts}" for x in rows)
        out.append(f"daily counts {org} {day}: {depts} departments, lab {sum(x.lab or 0 for x in rows)}, "
                   f"exam {sum(x.exam or 0 for x in rows)}; push: {status}")  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hurren_testkit.demo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="yesterday's synthetic data for the demo hospitals")
    g.add_argument("--lab", type=int, default=2000)
    g.add_argument("--exam", type=int, default=500)
    g.add_argument("--pacs-instances", type=int, default=6, help="DICOM instances per exam study")
    g.add_argument("--accept", type=int, default=None, help="accept records (default 5 %% of the reports)")
    g.add_argument("--quote", type=int, default=None, help="quote records (default 3 %% of the reports)")
    g.add_argument("--defect-rate", type=float, default=0.03)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--env-file", type=Path, help="write the AIRFLOW_CONN_* lines here")
    g.add_argument(
        "--dir", type=Path, default=None, help="where the SQLite files go (default .services/demo)"
    )
    sub.add_parser("summary", help="what the store holds now")
    sub.add_parser("day", help="print the demo day")
    args = p.parse_args(argv)
    if args.command == "generate":
        env = generate(
            lab=args.lab,
            exam=args.exam,
            defect_rate=args.defect_rate,
            seed=args.seed,
            pacs_instances=args.pacs_instances,
            accept=args.accept,
            quote=args.quote,
            directory=args.dir,
        )
        if args.env_file:
            args.env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    elif args.command == "summary":
        print(summary())
    else:
        print(demo_day().isoformat())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
