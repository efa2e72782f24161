"""``python -m hurren.reports publish|serve``: the Data Docs site and the pages, from a shell.

publish [--keep-days N] [--on YYYY-MM-DD] [--org ORG ...]
    build every stale hospital-day of the retention window into the docs bucket, remove older
    ones, drop their GX results from the store, rewrite the site index (HURREN_* settings)
serve [--host 127.0.0.1] [--port 8765]
    the analysts' pages without Airflow and WITHOUT sign-in: a developer's loopback only
"""

from __future__ import annotations

import argparse
import sys
from datetime import date


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hurren.reports", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="bring the Data Docs site in the docs bucket up to date")
    pub.add_argument(
        "--keep-days", type=int, default=None, help="retention (default $HURREN_DOCS_RETENTION_DAYS or 30)"
    )
    pub.add_argument(
        "--on", type=date.fromisoformat, default=None, help="the last day kept (default today, Beijing)"
    )
    pub.add_argument("--org", action="append", default=None, help="only this org_code (repeatable)")
    srv = sub.add_parser("serve", help="the pages on loopback, without sign-in (development)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8765)
    args = p.parse_args(argv)

    from hurren.clients import minio_client, store_engine
    from hurren.reports import datadocs
    from hurren.settings import settings

    if args.command == "publish":
        keep = args.keep_days or datadocs.keep_days_from_env()
        out = datadocs.publish(store_engine(), minio_client(), settings().s3_bucket_docs, keep_days=keep, on=args.on,
                               org_codes=args.org)  # fmt: skip
        print(
            f"built {len(out.built)} hospital-day(s), removed {len(out.removed)}, pruned {out.pruned_results} result(s)"
        )
        return 0
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("serve has no sign-in: it listens on loopback only", file=sys.stderr)
        return 2
    import uvicorn

    from hurren.reports.web import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
