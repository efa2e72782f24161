"""``python -m hurren.push``: the push from the command line, for the engineer on call.

    python -m hurren.push status                          # outbox counts per report type, hospital, state
    python -m hurren.push dead [--status rejected]        # dead letters (or rejections) with their last error
    python -m hurren.push requeue --status dead [--org-code X] [--error-contains TEXT] [--dry-run]
    python -m hurren.push requeue --ids 17 42             # after a fix: these entries, attempts reset
    python -m hurren.push run [--concurrency 8] [--set max_run_s=60]
    python -m hurren.push sync                            # queue store versions the outbox lacks

Store, S3 and platform settings come from the environment (``hurren.settings``: HURREN_STORE_URL,
HURREN_S3_*, HURREN_PLATFORM_*), not from Airflow; the profile from the site (``hurren.site``). Exit status: 0 done, 1 the platform stayed
down (run), 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from hurren.push.exceptions import PlatformUnavailable, PushConfigError
from hurren.push.options import PUSH_ENTITIES

STATUSES = ("queued", "sending", "acked", "rejected", "dead", "superseded", "skipped")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hurren.push", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="one push run (what the push_reports DAG does)")
    run.add_argument("--concurrency", type=int)
    run.add_argument("--max-run-s", type=float)
    run.add_argument("--batch-size", type=int, help="rows per call for daily counts and accept/quote records")
    run.add_argument("--entity", action="append", choices=PUSH_ENTITIES, dest="entities")
    run.add_argument("--org-code", action="append", dest="org_codes")
    run.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                     help="any PushOptions field, e.g. lease_s=0 max_attempts=3 (values read as JSON)")  # fmt: skip
    run.add_argument("--run-id", default="cli")
    run.add_argument("--json", action="store_true", help="print the run's result as JSON")

    sub.add_parser("status", help="outbox counts per report type, hospital and state")

    dead = sub.add_parser("dead", help="dead letters with their last error")
    dead.add_argument("--status", action="append", choices=STATUSES, dest="statuses")
    dead.add_argument("--entity", choices=PUSH_ENTITIES)
    dead.add_argument("--org-code")
    dead.add_argument("--limit", type=int, default=50)

    rq = sub.add_parser("requeue", help="put dead or rejected entries back in the queue")
    rq.add_argument("--ids", type=int, nargs="+", default=[])
    rq.add_argument("--status", choices=("dead", "rejected"), default="dead")
    rq.add_argument("--entity", choices=PUSH_ENTITIES)
    rq.add_argument("--org-code")
    rq.add_argument("--error-contains")
    rq.add_argument("--dry-run", action="store_true", help="only list what would be requeued")

    sync = sub.add_parser("sync", help="queue every store version the outbox does not hold")
    sync.add_argument("--entity", action="append", choices=PUSH_ENTITIES, dest="entities")
    sync.add_argument("--org-code", action="append", dest="org_codes")
    return p


def _options(args: argparse.Namespace) -> Any:
    from hurren.push.options import PushOptions

    values: dict[str, Any] = {
        "concurrency": args.concurrency, "max_run_s": args.max_run_s, "batch_size": args.batch_size, "entities": args.entities,
        "org_codes": args.org_codes,
    }  # fmt: skip
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep:
            raise PushConfigError(f"--set takes OPTION=VALUE, got {item!r}")
        values[name.strip()] = _value(text)
    return PushOptions.from_mapping(values)


def _run(args: argparse.Namespace) -> int:
    from hurren.clients import store_engine
    from hurren.push import outbox, tasks
    from hurren.push.connection import PlatformConfig
    from hurren.site import site

    if args.command == "run":
        here = site()  # the site's store, S3, platform account and profile
        assert here.settings.platform is not None
        platform = PlatformConfig.from_settings(here.settings.platform, spec_options=here.spec_options)
        result = tasks.run_push(options=_options(args), run_id=args.run_id, platform=platform,
                                settings_=here.settings)  # fmt: skip
        print(tasks.dumps(result) if args.json else tasks.format_counts(result["outbox"]))
        return 0
    if args.command == "requeue":
        out = tasks.requeue_entries(ids=args.ids, status=args.status, entity=args.entity, org_code=args.org_code,
                                    error_contains=args.error_contains, dry_run=args.dry_run)  # fmt: skip
        verb = "would requeue" if args.dry_run else "requeued"
        print(f"{verb} {out['requeued']} of {out['matched']} {args.status} entr(ies); "
              f"{out['superseded']} superseded by a newer version")  # fmt: skip
        return 0
    engine = store_engine()
    try:
        if args.command == "sync":
            outbox.upgrade(engine)
            print(outbox.sync_from_store(engine, entities=args.entities or outbox.SYNCABLE,
                                         org_codes=args.org_codes or (),
                                         void_data_status=site().spec_options.void_data_status))  # fmt: skip
            return 0
        with engine.connect() as conn:
            if args.command == "status":
                print(tasks.format_counts(outbox.counts(conn)))
            else:
                print(tasks.show_letters(conn, statuses=args.statuses or ("dead",), entity=args.entity,
                                         org_code=args.org_code, limit=args.limit))  # fmt: skip
        return 0
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except PushConfigError as exc:
        print(f"push: {exc}", file=sys.stderr)
        return 2
    except PlatformUnavailable as exc:
        print(f"push: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
