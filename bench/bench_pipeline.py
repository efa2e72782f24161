"""One hospital-day through extract → PDFs → validate → load, stage by stage, with peak memory;
this tree against an older commit, side by side.

    .venv/bin/python bench/bench_pipeline.py                                 # 20,000 lab + 5,000 exam, 100 KB PDFs
    .venv/bin/python bench/bench_pipeline.py --lab 2000 --exam 500           # a quick look
    .venv/bin/python bench/bench_pipeline.py --lab 4000 --exam 1000 --baseline main --repeat 2
    .venv/bin/python bench/bench_pipeline.py --validator gx                  # GX deciding, as a gx hospital

Needs ``scripts/services up`` (PostgreSQL, S3). The synthetic day (1 % defective) is generated once
into a fresh source database. Each run is its own interpreter with ``plugins/`` of its tree first
on the path (``--baseline``'s tree is a ``git worktree`` made for the run and removed after), a
fresh store database and bucket; it runs the library's stages on each chunk as
``hurren.pipeline`` does and times each one: extraction (planned chunks, canonical strings), the
PDFs decoded and checked once (``hurren.pdf.detach``; a tree without it carries the Base64 text
on), validation (the deciding engine) and the load (PDFs to S3, COPY + upsert). Peak memory is
the process's maximum RSS; it must stay flat as the day grows (chunks). Rows = masters + sub-items.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, checkout, child_result, describe  # noqa: E402

DAY = date(2024, 3, 11)
STAGES = ("extract", "pdf", "validate", "load")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hospital(org_code: str, chunk: int) -> dict:
    return {"id": "bench", "org_code": org_code, "org_name": "bench", "conn_id": "x", "dialect": "postgresql",
            "chunk_size": chunk}  # fmt: skip


def _child(plugins: str, src_db: str, org_code: str, chunk: int, validator: str) -> None:
    """One run over the whole day; prints a JSON line."""
    sys.path[:0] = [plugins, str(ROOT / "testkit")]  # the kit is this tree's, whichever code is measured
    from sqlalchemy import create_engine, text

    from hurren import extract, load, rules, spec, store, validation

    try:
        from hurren.clients import minio_client
    except ImportError:  # a tree before hooks/connections were renamed
        from hurren.connections import minio_client
    from hurren.settings import settings
    from hurren.sources import STREAMS, parse_sources
    from hurren_testkit import synthetic

    try:
        from hurren import pdf
    except ImportError:  # a tree before the PDFs were decoded once: the frames carry the Base64 text
        pdf = None
    s = settings()
    source = parse_sources(json.dumps({"hospitals": [_hospital(org_code, chunk)]})).get("bench")
    tag = secrets.token_hex(4)
    admin = create_engine(s.database_url("postgres"), isolation_level="AUTOCOMMIT")
    db, bucket = f"hurren_bench_{tag}", f"hurren-bench-{tag}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    s3 = minio_client()
    s3.make_bucket(bucket)
    seconds: dict[str, float] = defaultdict(float)
    rows = reports = 0
    totals: dict[str, int] = defaultdict(int)
    try:
        src, dst = create_engine(s.database_url(src_db)), create_engine(s.database_url(db))
        store.create_all(dst)
        pdfs = load.Pdfs(client=s3, bucket=bucket)
        rulebook = rules.load_rulebook()
        max_bytes = rulebook.pdf_max_bytes
        # a tree with hurren.site passes the site's decisions explicitly; an older one defaulted them
        options = {"options": spec.DEFAULT_OPTIONS} if hasattr(spec, "DEFAULT_OPTIONS") else {}
        decisions = {**options, "rulebook": rulebook} if options else {}
        for stream in ("lab", "exam"):
            d = STREAMS[stream]
            with extract.source_snapshot(src, source) as conn:
                batches = extract.read_reports(
                    conn, source, stream, datetime(2024, 1, 1), datetime(2024, 3, 12)
                )
                while True:
                    t = time.perf_counter()
                    batch = next(batches, None)
                    seconds["extract"] += time.perf_counter() - t
                    if batch is None:
                        break
                    rows += len(batch.masters) + len(batch.items)
                    reports += len(batch.masters)
                    t = time.perf_counter()
                    masters = batch.masters if pdf is None else pdf.detach(batch.masters, "pdf", max_bytes)
                    seconds["pdf"] += time.perf_counter() - t
                    t = time.perf_counter()
                    verdicts = validation.validate_reports(masters, batch.items, master_entity=d.master,
                                                           engine=validator, **decisions)  # fmt: skip
                    seconds["validate"] += time.perf_counter() - t
                    t = time.perf_counter()
                    c = load.load_reports(dst, replace(batch, masters=masters), source=source,
                                          run_id="bench", pdfs=pdfs, holds=load.holds_from_verdicts(verdicts), **options)  # fmt: skip
                    seconds["load"] += time.perf_counter() - t
                    for k, v in c.as_dict().items():
                        totals[k] += v
                    del batch, masters, verdicts  # one chunk in memory, as in hurren.pipeline
        assert (
            totals["extracted"]
            == totals["loaded"] + totals["unchanged"] + totals["stale"] + totals["quarantined"]
        )
        src.dispose()
        dst.dispose()
    finally:
        for o in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, o.object_name)
        s3.remove_bucket(bucket)
        synthetic.drop_database(admin, db)
        admin.dispose()
    out = {"seconds": seconds, "rows": rows, "reports": reports, "counts": totals, "peak_mb": _rss_mb()}
    print("RESULT " + json.dumps(out))


def _run(tree: Path, args: argparse.Namespace, src_db: str, org_code: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(tree / "plugins"), "--src-db", src_db, "--org", org_code,
           "--chunk", str(args.chunk), "--validator", args.validator]  # fmt: skip
    return child_result(cmd, tree)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", type=int, default=20_000)
    p.add_argument("--exam", type=int, default=5_000)
    p.add_argument("--lab-items", type=int, default=20)
    p.add_argument("--pdf-kb", type=float, default=100)
    p.add_argument("--chunk", type=int, default=2_000, help="reports per batch")
    p.add_argument("--defect-rate", type=float, default=0.01)
    p.add_argument("--validator", choices=("pandas", "gx"), default="pandas", help="the deciding engine")
    p.add_argument("--baseline", metavar="REF", help="also run the commit REF (a git worktree), interleaved")
    p.add_argument("--repeat", type=int, default=1, help="runs of each tree")
    p.add_argument("--child", metavar="PLUGINS", help=argparse.SUPPRESS)
    p.add_argument("--src-db", help=argparse.SUPPRESS)
    p.add_argument("--org", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.src_db, args.org, args.chunk, args.validator)
        return 0

    sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "testkit")]
    from sqlalchemy import create_engine, text

    from hurren.settings import settings
    from hurren_testkit import synthetic

    s = settings()
    admin = create_engine(s.database_url("postgres"), isolation_level="AUTOCOMMIT")
    src_db = f"hospital_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{src_db}"'))
    try:
        org = synthetic.make_hospitals(1, seed=3)[0]
        t0 = time.perf_counter()
        manifest = synthetic.generate_hospital_day(
            s.database_url(src_db), org=org, day=DAY, lab_reports=args.lab, exam_reports=args.exam,
            lab_items=args.lab_items, pdf_kb=args.pdf_kb, seed=3, defect_rate=args.defect_rate,
        )  # fmt: skip
        print(f"generated in {time.perf_counter() - t0:.0f} s: {manifest.summary()}", flush=True)
        results: dict[str, list[dict]] = defaultdict(list)
        with checkout(args.baseline) if args.baseline else nullcontext() as old:
            trees = {"old": old, "new": ROOT} if old else {"new": ROOT}
            for i in range(args.repeat):
                for name, tree in trees.items():
                    r = _run(tree, args, src_db, org.org_code)
                    results[name].append(r)
                    print(f"run {i + 1} {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds"].items())
                          + f"; peak RSS {r['peak_mb']:.0f} MB; {dict(r['counts'])}", flush=True)  # fmt: skip
    finally:
        synthetic.drop_database(admin, src_db)
        admin.dispose()
    _report(results, args)
    return 0


def _report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    first = results["new"][0]
    print(f"\n{first['reports']:,} reports, {first['rows']:,} rows (masters + sub-items), "
          f"{args.pdf_kb:g} KB PDFs, validator {args.validator}, chunks of {args.chunk}")  # fmt: skip
    if args.baseline:
        print(f"old = {describe(args.baseline)}, new = this tree; medians of {args.repeat} run(s)\n")
    print("| stage | " + " | ".join(f"{n} s | {n} rows/s" for n in results) + " |")
    print("|---|" + "---|---|" * len(results))
    for stage in (*STAGES, "total"):
        cells = []
        for rs in results.values():
            secs = _median([sum(r["seconds"].values()) if stage == "total" else r["seconds"].get(stage, 0.0)
                            for r in rs])  # fmt: skip
            cells.append(f"{secs:.1f} | {rs[0]['rows'] / secs:,.0f}" if secs else "– | –")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    for name, rs in results.items():
        total = _median([sum(r["seconds"].values()) for r in rs])
        print(f"{name}: {rs[0]['reports'] / total:,.0f} reports/s through extract → load; "
              f"peak RSS {_median([r['peak_mb'] for r in rs]):.0f} MB")  # fmt: skip
    if "old" in results:
        old = _median([sum(r["seconds"].values()) for r in results["old"]])
        new = _median([sum(r["seconds"].values()) for r in results["new"]])
        print(f"new / old throughput: {old / new:.2f}×")


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


if __name__ == "__main__":
    raise SystemExit(main())
