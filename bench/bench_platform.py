"""Benchmark the platform client against the simulator on loopback, in one run (< 2 min).

Run from the repository root: ``.venv/bin/python bench/bench_platform.py [--calls 200]``

The simulator runs as its own process (``python -m hurren_testkit.simulator --port 0``), so client and
server do not share a GIL. The payload is one lab report with 20 sub-items and a ~130 KB PDF
(~180 KB of XML, ~240 KB once encrypted and Base64-encoded). Measured:

- SOAP calls per second: sequential, then 4 and 8 threads sharing one client (one keep-alive pool);
  the same sequentially with a small payload (a daily-count report) for the fixed cost per call;
- where the time of one sequential call goes: XML build (lxml), SM4 + Base64 (payload and the
  cached credential), zeep's envelope serialisation, and the rest: HTTP on loopback plus the
  simulator (unwrap from cache, decrypt, parse, check every field, store).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(1, str(ROOT / "testkit"))

import zeep  # noqa: E402
from lxml import etree  # noqa: E402

from hurren.platform import Credential, PlatformClient  # noqa: E402
from hurren.platform import xml as px  # noqa: E402
from hurren.spec import DEFAULT_OPTIONS  # noqa: E402
from hurren_testkit import samples  # noqa: E402

PDF_SIZE = 130_000
ITEMS = 20


def start_simulator(tmp: Path) -> tuple[subprocess.Popen[str], str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'plugins'}{os.pathsep}{ROOT / 'testkit'}",
        "HURREN_SIM_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hurren_testkit.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--key-file",
            str(tmp / "sim-key.json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    url = re.search(r"serving (\S+) ", proc.stdout.readline())
    key = re.search(r"public key (\S+)", proc.stdout.readline())
    if not url or not key:
        proc.kill()
        raise SystemExit(
            "the simulator did not start; run python -m hurren_testkit.simulator --port 0 to see why"
        )
    return proc, url.group(1), key.group(1)


def timed(count: int, func: Callable[[int], object]) -> list[float]:
    out = []
    for n in range(count):
        start = time.perf_counter()
        func(n)
        out.append(time.perf_counter() - start)
    return out


def rate(count: int, threads: int, func: Callable[[int], object]) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(func, range(count)))
    return count / (time.perf_counter() - start)


def ms(values: list[float]) -> str:
    values = sorted(values)
    return (
        f"mean {statistics.fmean(values) * 1000:6.2f} ms  p50 {values[len(values) // 2] * 1000:6.2f}  "
        f"p95 {values[int(len(values) * 0.95)] * 1000:6.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement (default 200)")
    args = parser.parse_args()
    n = args.calls
    started = time.perf_counter()
    credential = Credential(
        org_code="457759922", org_name="bench", visitor_code="bench", visitor_key="bench-key"
    )
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, public_key = start_simulator(Path(tmp))
        try:
            client = PlatformClient(
                endpoint=url,
                credential=credential,
                public_key=public_key,
                pool_size=8,
                timeout=30,
                spec_options=DEFAULT_OPTIONS,
            )
            reports = [
                samples.lab_report(report_form_no=f"B-{i}", items=ITEMS, pdf_size=PDF_SIZE) for i in range(50)
            ]
            xml_size = len(px.build_lab_report(*reports[0]))
            sealed_size = len(client.seal(px.build_lab_report(*reports[0])).payload)

            def archive(i: int) -> object:
                return client.archive_lab_report(*reports[i % len(reports)])

            counts_rows = samples.daily_counts()
            for i in range(20):  # warm up: WSDL, pool, key ring, simulator key cache
                archive(i)
                client.archive_daily_counts(counts_rows)

            # --- where one call's time goes --------------------------------------------------
            build = timed(n, lambda i: px.build_lab_report(*reports[i % len(reports)]))
            payloads = [px.build_lab_report(*r) for r in reports[:10]]
            seal = timed(n, lambda i: client.seal(payloads[i % len(payloads)]))
            proxy = client._service_proxy().service  # zeep's ServiceProxy
            zclient: zeep.Client = proxy._client
            sealed = client.seal(payloads[0])
            envelope = timed(
                n,
                lambda i: etree.tostring(
                    zclient.create_message(
                        proxy, "ArchiveAutoReport", sealed.payload, sealed.credential, sealed.key
                    )
                ),
            )
            sequential = timed(n, archive)
            small = timed(n, lambda i: client.archive_daily_counts(counts_rows))

            # --- throughput ------------------------------------------------------------------
            seq_rate = n / sum(sequential)
            rates = {t: rate(2 * n, t, archive) for t in (4, 8)}
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    total = statistics.fmean(sequential)
    parts = {
        "XML build (lxml)": statistics.fmean(build),
        "SM4 + Base64 (envelope)": statistics.fmean(seal),
        "SOAP envelope (zeep)": statistics.fmean(envelope),
    }
    parts["HTTP + simulator (rest)"] = max(0.0, total - sum(parts.values()))
    print(
        f"bench_platform: Python {platform.python_version()}, zeep {zeep.__version__}, {os.cpu_count()} CPUs"
    )
    print(
        f"payload: lab report, {ITEMS} sub-items, {PDF_SIZE // 1000} KB PDF -> {xml_size / 1024:.0f} KiB XML, "
        f"{sealed_size / 1024:.0f} KiB encrypted+Base64; {n} calls per measurement\n"
    )
    print("SOAP calls per second against the simulator (loopback, separate process)")
    print(f"  sequential         {seq_rate:7.1f} calls/s   {ms(sequential)}")
    for t, r in rates.items():
        print(f"  {t} threads          {r:7.1f} calls/s")
    print(f"  small payload, seq {n / sum(small):7.1f} calls/s   {ms(small)}  (daily counts, ~1 KB)\n")
    print("share of one sequential call")
    for name, value in parts.items():
        print(f"  {name:26s} {value * 1000:6.2f} ms  {value / total:6.1%}")
    print(f"  {'total':26s} {total * 1000:6.2f} ms")
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
