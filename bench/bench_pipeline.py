"""One hospital-day through extract → validate → load, stage by stage, with peak memory.

    .venv/bin/python bench/bench_pipeline.py                       # 20,000 lab + 5,000 exam, 100 KB PDFs
    .venv/bin/python bench/bench_pipeline.py --lab 2000 --exam 500 # a quick look

Needs ``scripts/services up`` (PostgreSQL, S3). Builds a synthetic hospital in a fresh database
(PostgreSQL, COPY), a fresh store database and a fresh bucket, runs the library's stages on
each chunk exactly as ``hurren.pipeline.run_stream`` does, and times each one. Validation runs
twice per chunk on the same frames: Great Expectations (whose verdicts are used) and the plain
vectorised pandas engine of the same rules, so GX's cost is shown side by side. Peak memory is
the process's maximum RSS after each stage; it must stay flat as the day grows (chunks).
Everything it created is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import time
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from sqlalchemy import create_engine, text

from hurren import extract, load, store, synthetic, validation
from hurren.connections import minio_client
from hurren.rules import load_rulebook
from hurren.settings import settings
from hurren.sources import STREAMS, parse_sources
from hurren.spec import DEFAULT_OPTIONS

DAY = date(2024, 3, 11)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", type=int, default=20_000)
    p.add_argument("--exam", type=int, default=5_000)
    p.add_argument("--lab-items", type=int, default=20)
    p.add_argument("--pdf-kb", type=float, default=100)
    p.add_argument("--chunk", type=int, default=2_000, help="reports per batch")
    p.add_argument("--defect-rate", type=float, default=0.01)
    args = p.parse_args()

    s = settings()
    tag = secrets.token_hex(4)
    admin = create_engine(s.database_url("postgres"), isolation_level="AUTOCOMMIT")
    src_db, store_db, bucket = f"hospital_bench_{tag}", f"hurren_bench_{tag}", f"hurren-bench-{tag}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{src_db}"'))
        conn.execute(text(f'CREATE DATABASE "{store_db}"'))
    s3 = minio_client()
    s3.make_bucket(bucket)
    try:
        org = synthetic.make_hospitals(1, seed=3)[0]
        t0 = time.perf_counter()
        manifest = synthetic.generate_hospital_day(
            s.database_url(src_db), org=org, day=DAY, lab_reports=args.lab, exam_reports=args.exam,
            lab_items=args.lab_items, pdf_kb=args.pdf_kb, seed=3, defect_rate=args.defect_rate,
        )  # fmt: skip
        print(f"generated in {time.perf_counter() - t0:.1f} s: {manifest.summary()}")
        print(f"max RSS after generating: {rss_mb():.0f} MB\n")

        hospital = {"id": "bench", "org_code": org.org_code, "org_name": "bench", "conn_id": "x",
                    "dialect": "postgresql", "chunk_size": args.chunk}  # fmt: skip
        source = parse_sources(json.dumps({"hospitals": [hospital]})).get("bench")
        src = create_engine(s.database_url(src_db))
        dst = create_engine(s.database_url(store_db))
        store.create_all(dst)
        pdfs = load.Pdfs(client=s3, bucket=bucket)
        seconds: dict[str, float] = defaultdict(float)
        rows: dict[str, int] = defaultdict(int)
        pdf_bytes = 0
        peak: dict[str, float] = {}
        for stream in ("lab", "exam"):
            d = STREAMS[stream]
            counts = load.LoadCounts()
            with extract.source_snapshot(src, source) as conn:
                batches = extract.read_reports(conn, source, stream, datetime(2024, 1, 1), datetime(2024, 3, 12))
                while True:
                    t = time.perf_counter()
                    batch = next(batches, None)
                    seconds["extract"] += time.perf_counter() - t
                    if batch is None:
                        break
                    n = len(batch.masters) + len(batch.items)
                    rows["extract"] += n
                    pdf_bytes += int(batch.masters["pdf"].fillna("").str.len().sum()) if len(batch.masters) else 0
                    peak["extract"] = rss_mb()
                    for engine in ("pandas", "gx"):
                        t = time.perf_counter()
                        verdicts = validation.validate_reports(batch.masters, batch.items, master_entity=d.master, engine=engine, options=DEFAULT_OPTIONS, rulebook=load_rulebook())
                        seconds[f"validate ({engine})"] += time.perf_counter() - t
                        rows[f"validate ({engine})"] += n
                    peak["validate"] = rss_mb()
                    t = time.perf_counter()
                    counts += load.load_reports(dst, batch, source=source, run_id="bench", pdfs=pdfs,
                                                holds=load.holds_from_verdicts(verdicts), options=DEFAULT_OPTIONS)  # fmt: skip
                    seconds["load (store + S3)"] += time.perf_counter() - t
                    rows["load (store + S3)"] += n
                    peak["load"] = rss_mb()
            assert counts.extracted == counts.loaded + counts.unchanged + counts.stale + counts.quarantined
            print(f"{stream}: {counts.as_dict()}")
        print(f"\n{'stage':<22}{'seconds':>9}{'rows/s':>12}{'PDF MB/s':>10}")
        mb = pdf_bytes * 3 / 4 / 1e6  # Base64 text → bytes
        for stage, secs in seconds.items():
            pdf_rate = f"{mb / secs:>10.1f}" if stage.startswith(("extract", "load")) else f"{'':>10}"
            print(f"{stage:<22}{secs:>9.1f}{rows[stage] / secs:>12,.0f}{pdf_rate}")
        gx, pd_ = seconds["validate (gx)"], seconds["validate (pandas)"]
        print(f"\nGX / pandas time, same rules, same chunks: {gx / pd_:.1f}×   ({mb:,.0f} MB of PDFs)")
        print("max RSS (MB) after: " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
        src.dispose()
        dst.dispose()
    finally:
        for o in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, o.object_name)
        s3.remove_bucket(bucket)
        for db in (src_db, store_db):
            synthetic.drop_database(admin, db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
