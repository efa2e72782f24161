"""Benchmark the push end to end against the simulator on loopback: reports per second by concurrency.

Run from the repository root, with the local services up (``scripts/services up pg s3``)::

    .venv/bin/python bench/bench_push.py [--reports 240] [--pdf-kb 100] [--levels 1 4 8]
        [--check-rates 1 0.01] [--baseline main]

Set-up (not timed): a fresh store database and bucket, one hospital's lab reports (20 sub-items,
~``--pdf-kb`` KB PDFs) loaded by ``hurren.load`` (which queues them), and per simulator mode a
simulator as its own process (``python -m hurren_testkit.simulator --port 0 --check-rate R``) so client and
server do not share a GIL. Simulator modes (``--check-rates``): 1 checks every report field by
field against the spec (as the tests do); 0.01 is fast-ack: one report in a hundred checked, every
one still decrypted, parsed and stored with its PDF's SHA-256 (what a real platform's own cost is,
we cannot know; fast-ack shows how fast our side can go).

Each measurement runs in its own process, with this tree's code or, with ``--baseline REF``, the
code of REF (a temporary ``git worktree``) against the same store, bucket and simulator, one after
the other in the same run: old and new side by side. Per concurrency level the outbox is reset to
``queued`` and the simulator emptied, then one ``hurren.push`` run sends every report: read the
store rows and sub-items, get the PDF from S3 and check its SHA-256, build the XML, seal it (SM4 +
Base64; the session key is reused, SM2 wraps only on rotation), call ArchiveAutoReport, record the
answer and its push_log row. Shares are of the summed worker time: store, S3, XML (lxml), SM4
(seal), SOAP (zeep, our side), wait (HTTP: the simulator's work and the network), record. CPU
milliseconds per report are measured apart for the push process, the simulator process and the
PostgreSQL backends serving the bench database (``/proc``; S3 is a shared service, not counted).
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
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("HURREN_BENCH_CODE") or HERE)  # the code measured: this tree or --baseline's
sys.path.insert(0, str(CODE / "plugins"))
sys.path.insert(1, str(HERE / "testkit"))  # the test kit: always this tree's

import httpx  # noqa: E402
from sqlalchemy import create_engine, delete, text, update  # noqa: E402

from hurren import spec, store  # noqa: E402
from hurren.clients import minio_client  # noqa: E402
from hurren.platform import Credential  # noqa: E402
from hurren.push.connection import PlatformConfig, TimedSession  # noqa: E402
from hurren.push.options import PushOptions  # noqa: E402
from hurren.push.runner import Pusher  # noqa: E402
from hurren.settings import settings  # noqa: E402

sys.path.insert(0, str(HERE / "bench"))
from benchlib import cpu_seconds  # noqa: E402

PHASES = ("store", "pdf", "xml", "sm4", "soap", "wait", "record")
# The spec's defaults, passed as the site's profile where the measured code requires one (a --baseline
# from before hurren.site has no spec.DEFAULT_OPTIONS and takes no profile).
SITE = {"spec_options": spec.DEFAULT_OPTIONS} if hasattr(spec, "DEFAULT_OPTIONS") else {}


def start_simulator(tmp: Path, check_rate: float) -> tuple[subprocess.Popen[str], str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE / 'plugins'}{os.pathsep}{HERE / 'testkit'}",
        "HURREN_SIM_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hurren_testkit.simulator", "--host", "127.0.0.1", "--port", "0",
         "--key-file", str(tmp / "sim-key.json"), "--check-rate", str(check_rate)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    url = re.search(r"serving (\S+) ", proc.stdout.readline())
    key = re.search(r"public key (\S+)", proc.stdout.readline())
    if not url or not key:
        proc.kill()
        raise SystemExit(
            "the simulator did not start; run python -m hurren_testkit.simulator --port 0 to see why"
        )
    return proc, url.group(1), key.group(1)


def measure(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One code's push at every concurrency level (the first level once more first, to warm up)."""
    s = settings()
    levels = job["levels"]
    engine = create_engine(s.database_url(job["db"]), pool_size=max(levels) + 4)
    admin_url = job["url"].rsplit("/", 1)[0] + "/_admin"
    credential = Credential(
        org_code=job["org_code"], org_name=job["org_name"], visitor_code="bench", visitor_key="k"
    )
    config = PlatformConfig(
        endpoint=job["url"], public_key=job["public_key"], credential=credential, timeout_s=60, **SITE
    )
    s3 = minio_client(s)

    def pg_cpu() -> dict[int, float]:
        with engine.connect() as conn:
            pids = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
            return {pid: cpu_seconds(pid) for pid in pids}

    rows = []
    for level in [levels[0], *levels]:
        with engine.begin() as conn:
            conn.execute(delete(store.push_log))
            conn.execute(update(store.outbox).values(status="queued", attempts=0, next_attempt_at=None,
                                                     acked_at=None, answer_text=None))  # fmt: skip
        httpx.post(f"{admin_url}/reset", json={}, timeout=10).raise_for_status()
        options = PushOptions(concurrency=level, max_wait_s=0)
        session = TimedSession(level)
        with config.client(pool_size=level, session=session) as client:
            pg0, sim0, own0 = pg_cpu(), cpu_seconds(job["sim_pid"]), time.process_time()
            t0 = time.perf_counter()
            result = Pusher(engine=engine, client=client, objects=s3, bucket=job["bucket"], options=options,
                            session=session, run_id=f"bench-{level}", **SITE).run()  # fmt: skip
            wall = time.perf_counter() - t0
            own, sim = time.process_time() - own0, cpu_seconds(job["sim_pid"]) - sim0
            pg = sum(v - pg0.get(pid, 0.0) for pid, v in pg_cpu().items())
        session.close()
        acked = result.total().acked
        assert acked == job["reports"], result.as_dict()
        received = httpx.get(f"{admin_url}/received", timeout=10).json()
        assert received["stored"]["labmaster"] == acked, received["stored"]
        busy = sum(getattr(result.timings, p) for p in PHASES)
        rows.append({"level": level, "rate": acked / wall, "wall": wall, "shares": result.timings.shares(),
                     "worker_ms": busy / acked * 1e3, "push_cpu_ms": own / acked * 1e3,
                     "sim_cpu_ms": sim / acked * 1e3, "pg_cpu_ms": pg / acked * 1e3,
                     "checked": received.get("checked_payloads")})  # fmt: skip
    engine.dispose()
    return rows[1:]


def run_measure(job: dict[str, Any], tree: Path | None) -> list[dict[str, Any]]:
    """:func:`measure` in a process of its own, with ``tree``'s code (None: this tree's)."""
    from benchlib import code_env

    env = code_env(tree or HERE)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", json.dumps(job)],
                         env=env, capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"the measurement with {tree or HERE} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def set_up(engine: Any, s3: Any, bucket: str, reports: int, pdf_kb: float) -> tuple[str, str, float]:
    """One hospital's lab reports loaded (and queued); its org code and name, the mean PDF bytes."""
    from hurren import load, sources, spec
    from hurren.extract import Chunk, ReportBatch, canonical_frame
    from hurren_testkit import synthetic
    from hurren_testkit.synthetic.reports import HospitalDay

    def batch(part: list[synthetic.reports.Report]) -> ReportBatch:
        m, i = spec.entity("labmaster"), spec.entity("lab_subitem")
        masters = canonical_frame([tuple(r.master.get(f) for f in m.names) for r in part], m.names)
        items = canonical_frame([tuple(it.get(f) for f in i.names) for r in part for it in r.items], i.names)
        cursor = max(r.master["last_update_dtime"] for r in part)
        return ReportBatch("lab", masters, items, Chunk(None, "", None, "", len(part)), 0, 1, cursor)

    store.create_all(engine)
    h = synthetic.make_hospitals(1, seed=3)[0]
    day = HospitalDay(
        h, date(2024, 3, 11), seed=3, lab_reports=reports, exam_reports=0, pdf_kb=pdf_kb, lab_items=20
    )
    body = {
        "id": "bench",
        "org_code": h.org_code,
        "org_name": h.name,
        "conn_id": "c",
        "dialect": "postgresql",
    }
    source = sources.parse_sources(json.dumps({"hospitals": [body]})).get("bench")
    pdfs = load.Pdfs(s3, bucket)
    made = [day.lab_report(i) for i in range(reports)]
    pdf_bytes = sum(len(r.master["pdf"]) * 3 // 4 for r in made) / len(made)
    for i in range(0, len(made), 100):
        load.load_reports(
            engine,
            batch(made[i : i + 100]),
            source=source,
            run_id="bench",
            pdfs=pdfs,
            **({"options": SITE["spec_options"]} if SITE else {}),
        )
    return h.org_code, h.name, pdf_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=240)
    parser.add_argument("--pdf-kb", type=float, default=100)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--check-rates", type=float, nargs="+", default=[1.0, 0.01],
                        help="simulator modes: 1 checks every report, 0.01 is fast-ack")  # fmt: skip
    parser.add_argument(
        "--baseline", metavar="REF", help="also measure REF's push code (e.g. main), side by side"
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement, JSON job
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    from benchlib import checkout, describe
    from minio.deleteobjects import DeleteObject

    started = time.perf_counter()
    s = settings()
    admin = create_engine(s.database_url("postgres"), isolation_level="AUTOCOMMIT")
    name = f"hurren_bench_push_{secrets.token_hex(3)}"
    bucket = f"hurren-bench-push-{secrets.token_hex(3)}"
    s3 = minio_client(s)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    s3.make_bucket(bucket)
    engine = create_engine(s.database_url(name))
    results: list[tuple[float, str, dict[str, Any]]] = []
    codes = ["new"] if not args.baseline else ["old", "new"]
    try:
        org_code, org_name, pdf_bytes = set_up(engine, s3, bucket, args.reports, args.pdf_kb)
        with checkout(args.baseline) if args.baseline else nullcontext(None) as old_tree, \
                tempfile.TemporaryDirectory() as tmp:  # fmt: skip
            for rate in args.check_rates:
                proc, url, public_key = start_simulator(Path(tmp), rate)
                try:
                    job = {"db": name, "bucket": bucket, "url": url, "public_key": public_key, "org_code": org_code,
                           "org_name": org_name, "levels": args.levels, "reports": args.reports, "sim_pid": proc.pid}  # fmt: skip
                    for code in codes:
                        for row in run_measure(job, old_tree if code == "old" else None):
                            results.append((rate, code, row))
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

    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench_push: Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load_avg}; "
          f"{args.reports} lab reports, 20 sub-items, PDF {pdf_bytes / 1000:.0f} KB each; simulator in its own "
          "process on loopback")  # fmt: skip
    if args.baseline:
        print(f"old = {describe(args.baseline)}, new = this tree ({describe('HEAD')} + working tree)")
    print()
    head = (f"{'simulator':>9} {'code':>4} {'conc.':>5} {'reports/s':>9} {'new/old':>7} {'wall s':>6} "
            f"{'worker ms':>9} {'CPU ms: push':>12} {'sim':>5} {'pg':>5}  ")  # fmt: skip
    print(head + " ".join(f"{p:>6}" for p in PHASES))
    rates = {(rate, code, r["level"]): r["rate"] for rate, code, r in results}
    for rate, code, r in results:
        mode = "checked" if rate >= 1 else f"fast {rate:g}"
        old = rates.get((rate, "old", r["level"]))
        ratio = f"{r['rate'] / old:.2f}" if old and code == "new" else ""
        print(f"{mode:>9} {code:>4} {r['level']:>5} {r['rate']:>9.1f} {ratio:>7} {r['wall']:>6.2f} "
              f"{r['worker_ms']:>9.2f} {r['push_cpu_ms']:>12.2f} {r['sim_cpu_ms']:>5.2f} {r['pg_cpu_ms']:>5.2f}  "
              + " ".join(f"{r['shares'][p]:>6.1%}" for p in PHASES))  # fmt: skip
    print(
        "\nworker ms: summed worker time per report; CPU ms per report of the push process, the simulator and"
    )
    print(
        "the PostgreSQL backends. Shares of worker time: store = rows + sub-items from PostgreSQL; pdf = S3 get +"
    )
    print(
        "SHA-256; xml = the report's XML (PDF Base64 included); sm4 = seal (SM4-ECB + Base64); soap = zeep envelope/"
    )
    print("answer; wait = HTTP round trip incl. the simulator's work; record = outcome + push_log.")
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
