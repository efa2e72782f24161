"""``python -m hurren.demo``: the demo's data and its summary (used by ``scripts/demo``).

``generate``  writes yesterday's synthetic hospital-day (Beijing time) for every SQLite source of
              the sources configuration into ``.services/demo/<source id>.db``, and prints the
              ``AIRFLOW_CONN_*`` lines that point the hospitals' connections at them.
``summary``   prints what the store holds: per hospital and stream, the last run's counts, the
              rules that held reports, and the store's totals — counts only, no patient data.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from hurren import store, synthetic
from hurren.connections import store_engine
from hurren.sources import resolve_sources

DEMO_DIR = Path(__file__).resolve().parents[2] / ".services" / "demo"


def demo_day() -> date:
    """Yesterday in Beijing: the day a nightly run would be catching up on."""
    return datetime.now(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1)


def generate(*, lab: int, exam: int, defect_rate: float, seed: int) -> dict[str, str]:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    env = {}
    hospitals = [s for s in resolve_sources().enabled if s.dialect == "sqlite"]
    peers = [synthetic.Hospital(s.org_code, s.org_name, s.org_name[:3]) for s in hospitals]
    for s, org in zip(hospitals, peers, strict=True):
        path = DEMO_DIR / f"{s.id}.db"
        manifest = synthetic.generate_hospital_day(
            f"sqlite:///{path}", org=org, day=demo_day(), lab_reports=lab, exam_reports=exam,
            seed=seed, peers=peers, defect_rate=defect_rate, reset=True,
        )  # fmt: skip
        print(manifest.summary())
        conn = {"conn_type": "sqlite", "host": str(path)}
        env[f"AIRFLOW_CONN_{s.conn_id.upper()}"] = json.dumps(conn)
    return env


def summary() -> str:
    engine = store_engine()
    r = store.run
    lines = [f"{'hospital':<12}{'stream':<8}{'extracted':>10}{'loaded':>8}{'quarantined':>12}  rules that held reports"]
    with engine.connect() as conn:
        latest = (
            select(r.c.source, r.c.stream, func.max(r.c.id).label("id")).group_by(r.c.source, r.c.stream).subquery()
        )
        for row in conn.execute(select(r).join(latest, r.c.id == latest.c.id).order_by(r.c.source, r.c.stream)):
            details = json.loads(row.details or "{}")
            rules = ", ".join(f"{k} {v}" for k, v in sorted(details.get("errors_by_rule", {}).items()))
            lines.append(
                f"{row.source:<12}{row.stream:<8}{row.extracted:>10}{row.loaded:>8}{row.quarantined:>12}  {rules}"
            )
        totals = {
            name: conn.execute(select(func.count()).select_from(store.SPEC_TABLES[name])).scalar_one()
            for name in ("labmaster", "lab_subitem", "exammaster", "exam_subitem")
        }
        held = conn.execute(
            select(func.count()).select_from(store.quarantine).where(store.quarantine.c.resolved_at.is_(None))
        ).scalar_one()
    engine.dispose()
    lines.append("store: " + ", ".join(f"{k} {v}" for k, v in totals.items()) + f"; open quarantine entries {held}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hurren.demo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="yesterday's synthetic data for the demo hospitals")
    g.add_argument("--lab", type=int, default=2000)
    g.add_argument("--exam", type=int, default=500)
    g.add_argument("--defect-rate", type=float, default=0.03)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--env-file", type=Path, help="write the AIRFLOW_CONN_* lines here")
    sub.add_parser("summary", help="what the store holds now")
    sub.add_parser("day", help="print the demo day")
    args = p.parse_args(argv)
    if args.command == "generate":
        env = generate(lab=args.lab, exam=args.exam, defect_rate=args.defect_rate, seed=args.seed)
        if args.env_file:
            args.env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    elif args.command == "summary":
        print(summary())
    else:
        print(demo_day().isoformat())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
