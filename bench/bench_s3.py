"""The S3 puts the load makes, alone: what the object store takes on this machine.

    .venv/bin/python bench/bench_s3.py [--count 1000] [--kb 2,100] [--threads 1,8]

Needs ``scripts/services up s3``. Puts ``--count`` objects of each size into a fresh bucket the way
``hurren.load.pdfs`` does (one ``put_object`` per PDF, a thread pool of ``--threads``), then removes
the bucket. It bounds the load stage for reports: each report is one put. The CPU columns: this
process's (the client: signing, HTTP) and the S3 server's (its pid file under
``HURREN_SERVICES_DIR``), per put: on 2 cores their sum says whether the puts are CPU-bound.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(HERE / "plugins"), str(HERE / "bench")]

from benchlib import cpu_seconds  # noqa: E402

from hurren.clients import minio_client  # noqa: E402


def _put(client: Any, bucket: str, body: bytes, key: str) -> None:
    client.put_object(bucket, key, io.BytesIO(body), len(body), content_type="application/pdf")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--kb", default="2,100", help="object sizes in KB, comma-separated")
    p.add_argument("--threads", default="1,8", help="thread pool sizes, comma-separated")
    args = p.parse_args()
    client, bucket = minio_client(), f"hurren-bench-s3-{secrets.token_hex(4)}"
    client.make_bucket(bucket)
    pid_file = Path(os.environ.get("HURREN_SERVICES_DIR", HERE / ".services")) / "run" / "s3.pid"
    server = pid_file.read_text().strip() if pid_file.exists() else None
    print(f"{args.count} puts per row; load average {os.getloadavg()[0]:.1f}")
    print("| object | threads | seconds | puts/s | MB/s | CPU ms per put: client | S3 server |")
    print("|---|---|---|---|---|---|---|")
    try:
        for kb in (float(k) for k in args.kb.split(",")):
            body = b"%PDF-1.4\n" + os.urandom(int(kb * 1024))
            for threads in (int(t) for t in args.threads.split(",")):
                keys = [f"{kb:g}kb/{threads}/{i}.pdf" for i in range(args.count)]
                t, ours, theirs = time.perf_counter(), time.process_time(), cpu_seconds(server or 0)
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    list(pool.map(partial(_put, client, bucket, body), keys))
                s = time.perf_counter() - t
                ours, theirs = time.process_time() - ours, cpu_seconds(server or 0) - theirs
                mb, per = args.count * len(body) / 1e6, 1000 / args.count
                print(f"| {kb:g} KB | {threads} | {s:.1f} | {args.count / s:,.0f} | {mb / s:.1f} | "
                      f"{ours * per:.2f} | {theirs * per:.2f}{'' if server else ' (no pid file)'} |", flush=True)  # fmt: skip
    finally:
        for o in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, o.object_name)
        client.remove_bucket(bucket)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
