"""What the push DAGs' tasks call (dags/push_reports.py, dags/push_requeue.py), and the CLI too.

Imports nothing heavy at module level: DAG files import this module while being parsed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("hurren.push")

__all__ = ["push_hospital", "push_reports", "requeue_entries", "run_push", "show_letters"]

RUN_PARAMS = ("concurrency", "max_run_s", "entities", "org_codes")


def run_push(
    *,
    options: Any = None,
    run_id: str = "manual",
    platform: Any = None,
    settings_: Any = None,
    raise_when_down: bool = True,
    after_answer: Any = None,
) -> dict[str, Any]:
    """One push run with the store, S3 and platform of the site; the run's counts (JSON-safe).

    ``platform``: a ``PlatformConfig``, which carries the profile the run follows (default: the
    Airflow connection ``hurren_platform``, else HURREN_PLATFORM_*, with the site's profile,
    ``hurren.site``). ``after_answer``: the runner's hook between an answer and its record (crash
    tests only). Raises ``PlatformUnavailable`` after recording everything when the run
    ended with the platform not answering (``raise_when_down``)."""
    from hurren.clients import minio_client, store_engine
    from hurren.push import outbox
    from hurren.push.connection import TimedSession, platform_config
    from hurren.push.exceptions import PlatformUnavailable
    from hurren.push.options import PushOptions
    from hurren.push.runner import Pusher
    from hurren.site import site

    options = options or PushOptions()
    if platform is None or settings_ is None:
        here = site()  # resolved once per process
        s = settings_ or here.connected_settings()  # the store's and S3's connections, else the env
        config = platform or platform_config(spec_options=here.spec_options, settings_=s.platform)
    else:
        s, config = settings_, platform
    engine = store_engine(s, pool_size=options.concurrency + 2, max_overflow=4)
    session = TimedSession(options.concurrency)
    try:
        outbox.check_schema(engine)
        outbox.upgrade(engine)
        with config.client(pool_size=options.concurrency, session=session) as client:
            result = Pusher(
                engine=engine, client=client, objects=minio_client(s), bucket=s.s3_bucket_reports,
                options=options, spec_options=config.spec_options, text_encoding=config.crypto_options.text_encoding,
                session=session, run_id=run_id, after_answer=after_answer,
            ).run()  # fmt: skip
    finally:
        session.close()
        engine.dispose()
    out = result.as_dict()
    if result.platform_down and raise_when_down:
        queued = sum(s_.get("queued", 0) for orgs in result.outbox.values() for s_ in orgs.values())
        raise PlatformUnavailable(
            f"the region platform at {config.endpoint} did not answer (circuit breaker opened "
            f"{result.breaker_opened} time(s), still {result.breaker} at the end); {queued} version(s) stay "
            "queued and go out when it answers. Check the endpoint and the platform's status; nothing is lost."
        )
    return out


def push_reports() -> dict[str, Any]:
    """Task of ``push_reports``: one run with the DAG run's params."""
    from airflow.sdk import get_current_context

    from hurren.push.options import PushOptions

    ctx = get_current_context()
    params = ctx["params"]
    values = {k: params.get(k) for k in RUN_PARAMS if params.get(k) not in (None, "", [])}
    return run_push(options=PushOptions.from_mapping(values), run_id=str(ctx["run_id"]))


def push_hospital(entity: str, org_code: str, *, max_run_s: float = 600.0) -> dict[str, Any]:
    """Task of the ``records__<id>`` and ``daily_counts`` DAGs: push what the task before queued (one
    hospital, one entity) now, through the outbox. Raises ``PushRefused`` naming the rows the
    platform refused (or that went dead) after everything else is recorded; ``PlatformUnavailable``
    when it did not answer. Whatever stays queued goes out with ``push_reports``' runs."""
    from airflow.sdk import get_current_context

    from hurren.push.exceptions import PushRefused
    from hurren.push.options import PushOptions

    ctx = get_current_context()
    options = PushOptions(entities=(entity,), org_codes=(org_code,), max_run_s=max_run_s)
    result = run_push(options=options, run_id=str(ctx["run_id"]))
    refused = result["rejected"] + result["dead_letters"]
    if refused:
        shown = [{k: r.get(k) for k in ("outbox_id", "report_form_no", "answer", "last_error") if r.get(k)}
                 for r in refused[:5]]  # fmt: skip
        raise PushRefused(
            f"{entity} of {org_code}: {len(refused)} row(s) refused or dead (the rest were sent): {shown}. Read them "
            "with `python -m hurren.push dead --status rejected --status dead`; a corrected row at the source is "
            "sent with its next load, or requeue after a fix"
        )
    return result


def requeue_entries(
    *,
    ids: Sequence[int] = (),
    status: str = "dead",
    entity: str | None = None,
    org_code: str | None = None,
    error_contains: str | None = None,
    dry_run: bool = True,
    engine: Any = None,
) -> dict[str, Any]:
    """Requeue dead / rejected entries (or, ``dry_run``, list them); what happened, per entry."""
    from hurren.clients import store_engine
    from hurren.push import outbox
    from hurren.site import site

    own = engine is None
    engine = engine or store_engine(site().connected_settings())
    try:
        with engine.begin() as conn:
            rows = outbox.requeue(
                conn, ids=ids, statuses=(status,), entity=entity or None, org_code=org_code or None,
                error_contains=error_contains or None, dry_run=dry_run,
            )  # fmt: skip
    finally:
        if own:
            engine.dispose()
    requeued = sum(r["status"] == "queued" for r in rows)
    verb = "would requeue" if dry_run else "requeued"
    log.info("%s %s of %s %s entr(ies); %s superseded by a newer version", verb, requeued, len(rows), status,
             len(rows) - requeued)  # fmt: skip
    for r in rows[:200]:
        log.info("  %s %s %s org %s form %s attempts %s: %s", r["id"], r["entity"], r["action"], r["org_code"],
                 r["report_form_no"], r["attempts"], r["last_error"][:200])  # fmt: skip
    return {"dry_run": dry_run, "matched": len(rows), "requeued": requeued,
            "superseded": len(rows) - requeued, "entries": rows[:200]}  # fmt: skip


def requeue_task() -> dict[str, Any]:
    """Task of ``push_requeue``: the DAG run's params."""
    from airflow.sdk import get_current_context

    p = get_current_context()["params"]
    return requeue_entries(
        ids=[int(i) for i in p.get("ids") or []], status=p.get("status") or "dead", entity=p.get("entity"),
        org_code=p.get("org_code"), error_contains=p.get("error_contains"), dry_run=bool(p.get("dry_run")),
    )  # fmt: skip


def show_letters(conn: Any, *, statuses: Sequence[str], entity: str | None, org_code: str | None,
                 limit: int) -> str:  # fmt: skip
    """Dead letters as text lines, for the CLI."""
    from hurren.push import outbox

    rows = outbox.letters(conn, statuses=statuses, entity=entity, org_code=org_code, limit=limit)
    if not rows:
        return f"no entries in status {', '.join(statuses)}"
    lines = [
        f"{'id':>8} {'entity':<18} {'action':<8} {'org_code':<14} {'report_form_no':<18} {'tries':>5}  last error"
    ]
    for r in rows:
        lines.append(f"{r['id']:>8} {r['entity']:<18} {r['action']:<8} {r['org_code']:<14} "
                     f"{str(r['report_form_no']):<18} {r['attempts']:>5}  {r['last_error'][:160]}")  # fmt: skip
    return "\n".join(lines)


def format_counts(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> str:
    states = ("queued", "sending", "acked", "rejected", "dead", "superseded", "skipped")
    lines = [f"{'entity':<18} {'org_code':<14} " + " ".join(f"{s:>10}" for s in states)]
    for entity, orgs in sorted(counts.items()):
        for org, by in sorted(orgs.items()):
            lines.append(f"{entity:<18} {org:<14} " + " ".join(f"{by.get(s, 0):>10}" for s in states))
    return "\n".join(lines) if len(lines) > 1 else "the outbox is empty"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)
