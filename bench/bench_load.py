"""Store load alone (``hurren.load.load_reports``), this tree against an older commit, side by side.

    .venv/bin/python bench/bench_load.py                              # this tree only
    .venv/bin/python bench/bench_load.py --baseline main --repeat 2   # old/new/old/new, one session
    .venv/bin/python bench/bench_load.py --lab 5000 --exam 1000 --pdf-kb 2

Needs ``scripts/services up`` (PostgreSQL, S3). A synthetic hospital-day (1 % defective) is
generated once and extracted once; its batches are pickled, so every run loads exactly the same
frames. Each run is its own interpreter with ``plugins/`` of its tree first on the path (the
baseline's tree is a ``git worktree`` of ``--baseline`` made for the run and removed after), a
fresh store database and a fresh bucket; it times ``load_reports`` over every batch (masters +
sub-items upserted, PDFs to S3, outbox entries, quarantine) and then over the same batches again
(everything unchanged). No validator: load's own checks hold the broken reports, so both trees
do the same work. Rows = masters + sub-items.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import secrets
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, checkout, child_result  # noqa: E402

DAY = date(2024, 3, 11)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare(args: argparse.Namespace, data: Path) -> None:
    """Generate the day in a fresh source database, extract it, pickle the batches."""
    sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "testkit")]
    from sqlalchemy import create_engine, text

    from hurren import extract
    from hurren.settings import settings
    from hurren.sources import parse_sources
    from hurren_testkit import synthetic

    s = settings()
    admin = create_engine(s.database_url("postgres"), isolation_level="AUTOCOMMIT")
    src_db = f"hospital_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{src_db}"'))
    try:
        org = synthetic.make_hospitals(1, seed=3)[0]
        synthetic.generate_hospital_day(
            s.database_url(src_db), org=org, day=DAY, lab_reports=args.lab, exam_reports=args.exam,
            lab_items=args.lab_items, pdf_kb=args.pdf_kb, seed=3, defect_rate=args.defect_rate,
        )  # fmt: skip
        hospital = {"id": "bench", "org_code": org.org_code, "org_name": "bench", "conn_id": "x",
                    "dialect": "postgresql", "chunk_size": args.chunk}  # fmt: skip
        source = parse_sources(json.dumps({"hospitals": [hospital]})).get("bench")
        src = create_engine(s.database_url(src_db))
        batches = []
        for stream in ("lab", "exam"):
            with extract.source_snapshot(src, source) as conn:
                for b in extract.read_reports(
                    conn, source, stream, datetime(2024, 1, 1), datetime(2024, 3, 12)
                ):
                    batches.append(b)
        src.dispose()
        with data.open("wb") as f:
            pickle.dump({"hospital": hospital, "batches": batches}, f)
    finally:
        synthetic.drop_database(admin, src_db)
        admin.dispose()


def _child(plugins: str, data: Path) -> None:
    """One run: a fresh store and bucket, every batch loaded twice; prints a JSON line."""
    sys.path[:0] = [plugins, str(ROOT / "testkit")]  # the test kit is this tree's, for either code
    from sqlalchemy import create_engine, text

    from hurren import load, spec, store
    from hurren.clients import minio_client
    from hurren.settings import settings
    from hurren.sources import parse_sources
    from hurren_testkit import synthetic

    with data.open("rb") as f:
        saved = pickle.load(f)
    source = parse_sources(json.dumps({"hospitals": [saved["hospital"]]})).get("bench")
    # the spec's defaults as the site's profile, where the tree measured requires one (hurren.site)
    site = {"options": spec.DEFAULT_OPTIONS} if hasattr(spec, "DEFAULT_OPTIONS") else {}
    s = settings()
    tag = secrets.token_hex(4)
    admin = create_engine(s.database_url("postgres"), isolation_level="AUTOCOMMIT")
    db, bucket = f"hurren_bench_{tag}", f"hurren-bench-{tag}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    s3 = minio_client()
    s3.make_bucket(bucket)
    out: dict[str, object] = {"baseline_mb": _rss_mb()}
    try:
        dst = create_engine(s.database_url(db))
        store.create_all(dst)
        pdfs = load.Pdfs(client=s3, bucket=bucket)
        rows = sum(len(b.masters) + len(b.items) for b in saved["batches"])
        for name in ("first", "again"):
            total = load.LoadCounts()
            t0 = time.perf_counter()
            for batch in saved["batches"]:
                total += load.load_reports(
                    dst, batch, source=source, run_id=f"bench-{name}", pdfs=pdfs, **site
                )
            secs = time.perf_counter() - t0
            c = total.as_dict()
            assert c["extracted"] == c["loaded"] + c["unchanged"] + c["stale"] + c["quarantined"], c
            out[name] = {"seconds": secs, "rows": rows, "rows_s": rows / secs, "counts": c}
        out["peak_mb"] = _rss_mb()
        dst.dispose()
    finally:
        for o in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, o.object_name)
        s3.remove_bucket(bucket)
        synthetic.drop_database(admin, db)
        admin.dispose()
    print("RESULT " + json.dumps(out))


def _run(tree: Path, data: Path) -> dict:
    return child_result(
        [sys.executable, __file__, "--child", str(tree / "plugins"), "--data", str(data)], tree
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", type=int, default=4_000)
    p.add_argument("--exam", type=int, default=1_000)
    p.add_argument("--lab-items", type=int, default=20)
    p.add_argument("--pdf-kb", type=float, default=2)
    p.add_argument("--chunk", type=int, default=2_000, help="reports per batch")
    p.add_argument("--defect-rate", type=float, default=0.01)
    p.add_argument("--baseline", metavar="REF", help="also run the commit REF (a git worktree), interleaved")
    p.add_argument("--repeat", type=int, default=1, help="runs of each tree")
    p.add_argument("--child", metavar="PLUGINS", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.data)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        data = Path(tmp) / "batches.pickle"
        t0 = time.perf_counter()
        _prepare(args, data)
        print(f"day generated and extracted in {time.perf_counter() - t0:.0f} s "
              f"({args.lab} lab x ~{args.lab_items} items, {args.exam} exam, {args.pdf_kb:g} KB PDFs)")  # fmt: skip
        with checkout(args.baseline) if args.baseline else nullcontext() as old:
            trees = {"old": old, "new": ROOT} if old else {"new": ROOT}
            results: dict[str, list[dict]] = {name: [] for name in trees}
            for i in range(args.repeat):
                for name, tree in trees.items():
                    r = _run(tree, data)
                    results[name].append(r)
                    print(f"run {i + 1} {name}: first load {r['first']['rows_s']:,.0f} rows/s "
                          f"({r['first']['seconds']:.1f} s), again (unchanged) {r['again']['rows_s']:,.0f} rows/s "
                          f"({r['again']['seconds']:.1f} s), peak RSS {r['peak_mb']:.0f} MB; "
                          f"{r['first']['counts']}", flush=True)  # fmt: skip
    rows = results["new"][0]["first"]["rows"]
    print(f"\n{rows:,} rows (masters + sub-items) per load\n")
    print("| tree | first load rows/s | again, unchanged, rows/s | peak RSS MB |\n|---|---|---|---|")
    for name, rs in results.items():
        first = ", ".join(f"{r['first']['rows_s']:,.0f}" for r in rs)
        again = ", ".join(f"{r['again']['rows_s']:,.0f}" for r in rs)
        peak = ", ".join(f"{r['peak_mb']:.0f}" for r in rs)
        print(f"| {name} | {first} | {again} | {peak} |")
    if "old" in results:

        def mean(name: str, key: str) -> float:
            return sum(r[key]["rows_s"] for r in results[name]) / len(results[name])

        print(f"\nnew / old: first load {mean('new', 'first') / mean('old', 'first'):.2f}×, "
              f"again {mean('new', 'again') / mean('old', 'again'):.2f}×")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
