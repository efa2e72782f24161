"""The push's claim against a backlog: milliseconds per claim as the queue grows, this tree and an older commit.

    .venv/bin/python bench/bench_claim.py [--queued 3000,30000,90000] [--claims 20] [--baseline 6ed390b]

A push run claims ``concurrency × report_batch`` (4 × 8 = 32) due entries whenever its workers run
dry: a city's day pushed after an outage (~90,000 reports) makes ~2,800 claims, so what one claim
costs as the queue grows decides whether the backlog drains in minutes or hours. Per queue length and
tree: a fresh store database made by that tree's ``store.create_all`` (its own indexes), N queued
report registers (one void in a thousand) inserted by SQL and analysed, then ``--claims`` claims of
32, each in its own transaction as ``Pusher._claim`` makes them. The older tree (``--baseline``, a
temporary ``git worktree``) runs in a subprocess with its own code, against the same PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, checkout, child_result, describe  # noqa: E402

LIMIT = 32  # concurrency 4 × report_batch 8, the production PushOptions


def _child(plugins: str, url: str, queued: int, claims: int) -> None:
    sys.path[:0] = [plugins, str(ROOT / "testkit")]  # the test kit: always this tree's
    from sqlalchemy import create_engine

    from hurren import store
    from hurren.push import outbox
    from hurren_testkit.backlog import queue_backlog

    engine = create_engine(url)
    store.create_all(engine)
    with engine.begin() as conn:
        queue_backlog(conn, queued)
    seconds, claimed = [], 0
    for i in range(claims):
        t = time.perf_counter()
        with engine.begin() as conn:
            claimed += len(outbox.claim(conn, limit=LIMIT, claimed_by=f"bench-{i}"))
        seconds.append(time.perf_counter() - t)
    engine.dispose()
    assert claimed == min(claims * LIMIT, queued), claimed
    print("RESULT " + json.dumps({"ms": sorted(seconds)[len(seconds) // 2] * 1e3, "claimed": claimed}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queued", default="3000,30000,90000", help="queue lengths, comma-separated")
    p.add_argument("--claims", type=int, default=20)
    p.add_argument("--baseline", metavar="REF", help="also run the commit REF (a git worktree)")
    p.add_argument("--child", nargs=4, metavar=("PLUGINS", "URL", "QUEUED", "CLAIMS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        plugins, url, queued, claims = args.child
        _child(plugins, url, int(queued), int(claims))
        return 0

    sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "testkit")]
    from sqlalchemy import create_engine, text

    from hurren.settings import settings
    from hurren_testkit.synthetic import drop_database  # retried: FORCE may not end an autovacuum worker

    admin = create_engine(settings().database_url("postgres"), isolation_level="AUTOCOMMIT")
    rows: list[tuple[int, str, float]] = []
    with checkout(args.baseline) if args.baseline else nullcontext() as old:
        trees = {"old": old, "new": ROOT} if old else {"new": ROOT}
        for queued in (int(q) for q in args.queued.split(",")):
            for name, tree in trees.items():
                db = f"hurren_bench_claim_{secrets.token_hex(3)}"
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{db}"'))
                try:
                    url = settings().database_url(db)
                    cmd = [
                        sys.executable,
                        __file__,
                        "--child",
                        str(tree / "plugins"),
                        url,
                        str(queued),
                        str(args.claims),
                    ]
                    r = child_result(cmd, tree)
                finally:
                    drop_database(admin, db)
                rows.append((queued, name, r["ms"]))
                print(
                    f"{queued:>7,} queued  {name}: {r['ms']:.1f} ms a claim (median of {args.claims})",
                    flush=True,
                )
    admin.dispose()
    if args.baseline:
        print(f"\nold = {describe(args.baseline)}, new = this tree ({describe('HEAD')} + working tree)")
    print("\n| queued | tree | ms per claim of 32 (median) |\n|---|---|---|")
    for queued, name, ms in rows:
        print(f"| {queued:,} | {name} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
