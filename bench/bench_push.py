"""Benchmark the push end to end against the simulator on loopback: reports per second by concurrency.

Run from the repository root, with the local services up (``scripts/services up pg s3``)::

    .venv/bin/python bench/bench_push.py [--reports 240] [--pdf-kb 100] [--levels 1 2 4 8]

Set-up (not timed): a fresh store database and bucket, one hospital's lab reports (20 sub-items,
~``--pdf-kb`` KB PDFs) loaded by ``hurren.load`` (which queues them), and the simulator as its own
process (``python -m hurren.simulator --port 0``) so client and server do not share a GIL.
Per concurrency level the outbox is reset to ``queued`` and the simulator emptied, then one
``hurren.push`` run sends every report: read the store row and sub-items, get the PDF from S3
and check its SHA-256, build the XML, seal it (SM4 + Base64; the session key is reused, SM2 wraps
only on rotation), call ArchiveAutoReport, record the answer and its push_log row. Shares are of
the summed worker time: store, S3, XML (lxml), SM4 (seal), SOAP (zeep, our side), wait (HTTP:
the simulator's decrypt/check/store and the network), record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

import httpx  # noqa: E402
from minio.deleteobjects import DeleteObject  # noqa: E402
from sqlalchemy import create_engine, delete, text, update  # noqa: E402

from hurren import load, sources, spec, store, synthetic  # noqa: E402
from hurren.connections import minio_client  # noqa: E402
from hurren.extract import Chunk, ReportBatch, canonical_frame  # noqa: E402
from hurren.platform import Credential  # noqa: E402
from hurren.push.connection import PlatformConfig, TimedSession  # noqa: E402
from hurren.push.options import PushOptions  # noqa: E402
from hurren.push.runner import Pusher  # noqa: E402
from hurren.settings import settings  # noqa: E402
from hurren.spec import DEFAULT_OPTIONS  # noqa: E402
from hurren.synthetic.reports import HospitalDay  # noqa: E402

PHASES = ("store", "pdf", "xml", "sm4", "soap", "wait", "record")


def start_simulator(tmp: Path) -> tuple[subprocess.Popen[str], str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "HURREN_SIM_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hurren.simulator", "--host", "127.0.0.1", "--port", "0",
         "--key-file", str(tmp / "sim-key.json")],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    url = re.search(r"serving (\S+) ", proc.stdout.readline())
    key = re.search(r"public key (\S+)", proc.stdout.readline())
    if not url or not key:
        proc.kill()
        raise SystemExit("the simulator did not start; run python -m hurren.simulator --port 0 to see why")
    return proc, url.group(1), key.group(1)


def batch(reports: list[synthetic.reports.Report]) -> ReportBatch:
    m, i = spec.entity("labmaster"), spec.entity("lab_subitem")
    masters = canonical_frame([tuple(r.master.get(f) for f in m.names) for r in reports], m.names)
    items = canonical_frame([tuple(it.get(f) for f in i.names) for r in reports for it in r.items], i.names)
    cursor = max(r.master["last_update_dtime"] for r in reports)
    return ReportBatch("lab", masters, items, Chunk(None, "", None, "", len(reports)), 0, 1, cursor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=240)
    parser.add_argument("--pdf-kb", type=float, default=100)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    started = time.perf_counter()
    s = settings()
    admin = create_engine(s.database_url("postgres"), isolation_level="AUTOCOMMIT")
    name = f"hurren_bench_push_{secrets.token_hex(3)}"
    bucket = f"hurren-bench-push-{secrets.token_hex(3)}"
    s3 = minio_client(s)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    s3.make_bucket(bucket)
    engine = create_engine(s.database_url(name), pool_size=max(args.levels) + 4)
    rows: list[tuple[int, float, float, dict[str, float], int]] = []
    try:
        store.create_all(engine)
        h = synthetic.make_hospitals(1, seed=3)[0]
        day = HospitalDay(h, date(2024, 3, 11), seed=3, lab_reports=args.reports, exam_reports=0,
                          pdf_kb=args.pdf_kb, lab_items=20)  # fmt: skip
        body = {"id": "bench", "org_code": h.org_code, "org_name": h.name, "conn_id": "c", "dialect": "postgresql"}
        source = sources.parse_sources(json.dumps({"hospitals": [body]})).get("bench")
        pdfs = load.Pdfs(s3, bucket)
        reports = [day.lab_report(i) for i in range(args.reports)]
        pdf_bytes = sum(len(r.master["pdf"]) * 3 // 4 for r in reports) / len(reports)
        for i in range(0, len(reports), 100):
            load.load_reports(engine, batch(reports[i : i + 100]), source=source, run_id="bench", pdfs=pdfs, options=DEFAULT_OPTIONS)
        with tempfile.TemporaryDirectory() as tmp:
            proc, url, public_key = start_simulator(Path(tmp))
            admin_url = url.rsplit("/", 1)[0] + "/_admin"
            credential = Credential(org_code=h.org_code, org_name=h.name, visitor_code="bench", visitor_key="k")
            config = PlatformConfig(endpoint=url, public_key=public_key, credential=credential, timeout_s=60, spec_options=DEFAULT_OPTIONS)
            try:
                for level in [args.levels[0], *args.levels]:  # the first run warms up (WSDL, pools)
                    with engine.begin() as conn:
                        conn.execute(delete(store.push_log))
                        conn.execute(update(store.outbox).values(status="queued", attempts=0, next_attempt_at=None,
                                                                 acked_at=None, answer_text=None))  # fmt: skip
                    httpx.post(f"{admin_url}/reset", json={}, timeout=10).raise_for_status()
                    options = PushOptions(concurrency=level, max_wait_s=0)
                    session = TimedSession(level)
                    with config.client(pool_size=level, session=session) as client:
                        t0 = time.perf_counter()
                        result = Pusher(engine=engine, client=client, objects=s3, bucket=bucket, options=options,
                                        session=session, run_id=f"bench-{level}", spec_options=DEFAULT_OPTIONS).run()  # fmt: skip
                        wall = time.perf_counter() - t0
                    session.close()
                    acked = result.total().acked
                    assert acked == args.reports, result.as_dict()
                    busy = sum(getattr(result.timings, p) for p in PHASES)
                    rows.append((level, acked / wall, wall, result.timings.shares(), int(busy / acked * 1e6)))
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        names = [o.object_name for o in s3.list_objects(bucket, recursive=True) if o.object_name]
        list(s3.remove_objects(bucket, [DeleteObject(n) for n in names]))
        s3.remove_bucket(bucket)

    print(f"bench_push: Python {platform.python_version()}, {os.cpu_count()} CPUs; {args.reports} lab reports, "
          f"20 sub-items, PDF {pdf_bytes / 1000:.0f} KB each; simulator in its own process on loopback\n")  # fmt: skip
    head = f"{'concurrency':>11} {'reports/s':>9} {'wall s':>7} {'worker ms/report':>16}  "
    print(head + " ".join(f"{p:>6}" for p in PHASES))
    for level, rate, wall, shares, us in rows[1:]:
        print(f"{level:>11} {rate:>9.1f} {wall:>7.2f} {us / 1000:>16.2f}  "
              + " ".join(f"{shares[p]:>6.1%}" for p in PHASES))
    print("\nshares: of summed worker time. store = master + sub-items from PostgreSQL; pdf = S3 get + SHA-256;")
    print("xml = lxml build (PDF Base64 included); sm4 = seal (SM4-ECB + Base64); soap = zeep envelope/answer;")
    print("wait = HTTP round trip incl. the simulator's unwrap, decrypt, checks and store; record = outcome + push_log.")
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
