"""``python -m hurren_testkit.synthetic``: generate synthetic hospital-days into a database."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import date

from .defects import DEFECT_KINDS
from .generate import generate_region
from .people import make_hospitals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hurren_testkit.synthetic",
        description="Build synthetic hospital source databases (lab/exam reports, PACS views, records).",
    )
    p.add_argument("--url", help="SQLAlchemy URL; '{org}' in it gives each hospital its own database")
    p.add_argument("--hospitals", type=int, default=1, help="number of hospitals (default 1)")
    p.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 24), help="YYYY-MM-DD")
    p.add_argument("--lab", type=int, default=2000, help="lab reports per hospital (default 2000)")
    p.add_argument("--exam", type=int, default=500, help="exam reports per hospital (default 500)")
    p.add_argument("--lab-items", type=int, default=20, help="mean sub-items per lab report (default 20)")
    p.add_argument("--pacs-instances", type=int, default=6, help="DICOM instances per study (default 6)")
    p.add_argument(
        "--accept", type=int, default=None, help="accept records per hospital (default 5%% of reports)"
    )
    p.add_argument(
        "--quote", type=int, default=None, help="quote records per hospital (default 3%% of reports)"
    )
    p.add_argument("--defect-rate", type=float, default=0.0, help="fraction of units with one defect")
    p.add_argument("--defect-kinds", default=None, help="comma-separated subset of the kinds (--list-kinds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pdf-kb", type=float, default=2.0, help="approximate PDF size in KB (default 2)")
    p.add_argument("--reset", action="store_true", help="drop and recreate the source tables first")
    p.add_argument("--list-kinds", action="store_true", help="print the defect kinds and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_kinds:
        for kind, (entity, rule, descr) in DEFECT_KINDS.items():
            print(f"{kind:<26} {entity:<19} {rule:<13} {descr}")
        return 0
    if not args.url:
        _parser().error("--url is required")
    hospitals = make_hospitals(args.hospitals, seed=args.seed)
    kinds = [k.strip() for k in args.defect_kinds.split(",")] if args.defect_kinds else None
    started = time.perf_counter()
    manifests = generate_region(
        args.url,
        hospitals=hospitals,
        day=args.day,
        lab_reports=args.lab,
        exam_reports=args.exam,
        lab_items=args.lab_items,
        pacs_instances=args.pacs_instances,
        accept_records=args.accept,
        quote_records=args.quote,
        seed=args.seed,
        defect_rate=args.defect_rate,
        defect_kinds=kinds,
        pdf_kb=args.pdf_kb,
        reset=args.reset,
    )
    elapsed = time.perf_counter() - started
    for m in manifests.values():
        print(m.summary())
    if args.hospitals > 1 and "{org}" not in args.url:
        print("note: hospitals share one database; accept/quote records cannot be told apart by hospital")
    print(
        f"{len(manifests)} hospital(s), {sum(sum(m.rows.values()) for m in manifests.values())} rows in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
