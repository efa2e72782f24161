"""Time one synthetic hospital-day into PostgreSQL: generation + COPY, end to end.

Run from the repository root, with the local PostgreSQL up (``scripts/services up pg``)::

    .venv/bin/python bench/bench_synthetic.py                   # 2,000 lab reports (~20 items), 2 KB PDFs
    .venv/bin/python bench/bench_synthetic.py --exam 500 --pdf-kb 100

Each run writes into a fresh database ``hospital_bench_<random>`` on the store's server (the
``hurren`` role has CREATEDB), dropped afterwards unless ``--keep``; ``--url`` targets an existing
database (or ``sqlite:///...``) instead. The target of the issue: one hospital-day of at least 2,000
lab reports with sub-items and PDFs in under 60 s. Exits 1 when a run misses it.
"""

from __future__ import annotations

import argparse
import platform
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "testkit"))

from sqlalchemy import create_engine, text  # noqa: E402

from hurren.settings import settings  # noqa: E402
from hurren_testkit import synthetic  # noqa: E402

TARGET_S = 60.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lab", type=int, default=2000)
    p.add_argument("--exam", type=int, default=0)
    p.add_argument("--lab-items", type=int, default=20)
    p.add_argument("--pdf-kb", type=float, default=2.0)
    p.add_argument("--defect-rate", type=float, default=0.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--url", default=None, help="target database (default: a fresh PostgreSQL database)")
    p.add_argument("--keep", action="store_true", help="keep the database made for the run")
    args = p.parse_args()

    admin_url = settings().database_url("postgres")
    made: list[str] = []
    h = synthetic.make_hospitals(2, seed=7)
    print(
        f"python {platform.python_version()} on {platform.machine()}; "
        f"{args.lab} lab reports x ~{args.lab_items} items, {args.exam} exam reports, PDFs ~{args.pdf_kb:g} KB"
    )
    worst = 0.0
    try:
        for run in range(args.repeat):
            url = args.url
            if url is None:
                name = f"hospital_bench_{secrets.token_hex(4)}"
                admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                admin.dispose()
                made.append(name)
                url = settings().database_url(name)
            start = time.perf_counter()
            m = synthetic.generate_hospital_day(
                url,
                org=h[0],
                peers=h[1:],
                day="2026-11-24",
                lab_reports=args.lab,
                exam_reports=args.exam,
                lab_items=args.lab_items,
                seed=7 + run,
                pdf_kb=args.pdf_kb,
                defect_rate=args.defect_rate,
                reset=args.url is not None,
            )
            elapsed = time.perf_counter() - start
            worst = max(worst, elapsed)
            rows = sum(m.rows.values())
            reports = m.rows["labmaster"] + m.rows["exammaster"]
            print(
                f"run {run + 1}: {elapsed:6.2f} s  {reports / elapsed:7.0f} reports/s  {rows / elapsed:8.0f} rows/s  "
                f"{rows} rows ({m.rows['lab_subitem']} lab sub-items)  PDFs {m.pdf_bytes / 1e6:.1f} MB "
                f"(Base64 {m.base64_bytes / 1e6:.1f} MB, {m.base64_bytes / 1e6 / elapsed:.1f} MB/s)"
            )
    finally:
        if made and not args.keep:
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in made:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        elif made:
            print("kept:", ", ".join(made))
    verdict = "within" if worst < TARGET_S else "MISSES"
    print(f"slowest run {worst:.2f} s: {verdict} the {TARGET_S:.0f} s target")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
