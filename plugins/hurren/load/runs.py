"""The run record (``etl_run``: tries, counts) and the stream's watermark."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from hurren import store
from hurren.load.common import LoadCounts, _json

log = logging.getLogger(__name__)


def _add_run_counts(conn: Connection, run_pk: int, counts: LoadCounts) -> None:
    r = store.run
    conn.execute(
        update(r)
        .where(r.c.id == run_pk)
        .values(
            extracted=r.c.extracted + counts.extracted,
            loaded=r.c.loaded + counts.loaded,
            quarantined=r.c.quarantined + counts.quarantined,
            stale=func.coalesce(r.c.stale, 0) + counts.stale,
        )
    )


def _settle_batch(
    conn: Connection,
    *,
    run_pk: int | None,
    counts: LoadCounts,
    cursor: Any,
    max_cursor: datetime | None,
    source: str,
    stream: str,
    run_id: str,
) -> None:
    """A batch's counts added to its run and the cursor (a ``CursorState``; None for a backfill)
    moved to its highest value, in the batch's transaction."""
    if run_pk is not None:
        _add_run_counts(conn, run_pk, counts)
    if cursor is not None and max_cursor is not None:
        advance_watermark(
            conn,
            source=source,
            stream=stream,
            last_value=max_cursor,
            initial_value=cursor.initial_value,
            run_id=run_id,
        )


def advance_watermark(
    conn: Connection,
    *,
    source: str,
    stream: str,
    last_value: datetime,
    initial_value: datetime,
    run_id: str | None = None,
) -> datetime:
    """Move the cursor of (source, stream) forward to ``last_value`` — never back — in the
    caller's transaction (commit it with the rows). Returns the cursor's value afterwards."""
    wm = store.watermark
    where = (wm.c.source == source, wm.c.stream == stream)
    current = conn.execute(select(wm.c.last_value).where(*where).with_for_update()).scalar_one_or_none()
    if current is None:
        conn.execute(
            insert(wm).values(
                source=source,
                stream=stream,
                initial_value=initial_value,
                last_value=last_value,
                run_id=run_id,
            )
        )
        return last_value
    if last_value <= current:
        return current
    conn.execute(
        update(wm)
        .where(*where)
        .values(last_value=last_value, run_id=run_id, updated_at=func.current_timestamp())
    )
    return last_value


RUN_LEASE = timedelta(hours=3)
"""A ``running`` etl_run try older than this is over: no extraction task lives that long (each has
an ``execution_timeout`` of at most 2 h, ``hurren.dagfactory``; Airflow ends it then)."""


_SUMMED = (
    *(f.name for f in fields(LoadCounts)),
    "batches",
    "future_rows",
)  # per-try numbers that add up to the run's


def _db_now(conn: Connection) -> datetime:
    """The store's clock, as its DateTime columns hold it (``started_at`` is the server's)."""
    now = conn.execute(select(func.current_timestamp())).scalar_one()
    now = datetime.fromisoformat(now) if isinstance(now, str) else now
    return now.replace(tzinfo=None, microsecond=0)


def _tries(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's tries (details written before tries were kept: one try, its summary)."""
    try:
        details = json.loads(row["details"] or "{}")
    except ValueError:
        details = {}
    if isinstance(details.get("tries"), list):
        return details["tries"]
    first = {"try": 1, "status": row["status"], "started_at": str(row["started_at"])}
    return [{**first, **details}] if details else [first]


def _interrupted(row: Mapping[str, Any], tries: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The last try, found over without having said so: its counts are what its committed batches
    added to the row (the row's counts less the other tries')."""
    last = dict(tries[-1])
    done = {
        k: sum(int(t.get(k) or 0) for t in tries[:-1])
        for k in ("extracted", "loaded", "quarantined", "stale")
    }
    counts = {k: int(row[k] or 0) - done[k] for k in done}
    counts["unchanged"] = counts["extracted"] - counts["loaded"] - counts["quarantined"] - counts["stale"]
    return {**last, **counts, "status": "interrupted", "found_over_at": str(now)}


_TRY_KEYS = ("try", "status", "started_at", "finished_at", "found_over_at")


def _last_summary(tries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The summary of the latest try that ended with one (success or failed)."""
    ended = [t for t in tries if t.get("status") in ("success", "failed")]
    return {k: v for k, v in ended[-1].items() if k not in _TRY_KEYS} if ended else None


def _details(tries: list[dict[str, Any]], latest: Mapping[str, Any] | None) -> str:
    """``details``: the latest try's summary with the run's counts summed over every try (numbers,
    and rule counts), and ``tries``: each try's own."""
    out = dict(latest or {})
    for key in _SUMMED:
        if any(key in t for t in tries):
            out[key] = sum(int(t.get(key) or 0) for t in tries)
    for key in ("errors_by_rule", "warnings_by_rule", "mapped"):
        merged: dict[str, int] = {}
        for t in tries:
            for k, v in (t.get(key) or {}).items():
                merged[k] = merged.get(k, 0) + int(v)
        if merged or key in out:
            out[key] = merged
    return _json({**out, "tries": tries})


def start_run(
    engine: Engine,
    *,
    run_id: str,
    dag_id: str,
    source: str,
    stream: str,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    lease: timedelta = RUN_LEASE,
) -> int:
    """The ``etl_run`` row of (run_id, source, stream), created or (a retried task) set running
    again with its counts kept and a new try added to ``details.tries``; returns its id for the
    batches' count updates.

    A try killed without a word (SIGKILL, OOM, a lost worker) leaves its row ``running``. Two
    things tell it is over, without asking Airflow: the same run starting again (Airflow starts a
    task's next try only once the last one is over), and a ``running`` try of another run of the
    same source and stream that started longer than ``lease`` ago (no task lives that long). Either
    marks it ``interrupted``, with the time it was found so and the counts its committed batches
    left; a run row that stays interrupted gets that status and ``finished_at``."""
    r = store.run
    with engine.begin() as conn:
        now = _db_now(conn)
        stale = conn.execute(
            select(r).where(
                r.c.source == source, r.c.stream == stream, r.c.status == "running", r.c.run_id != run_id
            )
        ).mappings()
        for row in list(stale):
            tries = _tries(row)
            started = datetime.fromisoformat(str(tries[-1].get("started_at") or row["started_at"]))
            if started > now - lease:
                continue  # it may still be working: a backfill next to the scheduled run, say
            tries[-1] = _interrupted(row, tries, now)
            conn.execute(update(r).where(r.c.id == row["id"], r.c.status == "running")
                         .values(status="interrupted", finished_at=now, details=_details(tries, _last_summary(tries))))  # fmt: skip
            log.warning(
                "%s/%s: run %s was left running since %s: interrupted", source, stream, row["run_id"], started
            )
        found = conn.execute(
            select(r).where(r.c.run_id == run_id, r.c.source == source, r.c.stream == stream)
        ).mappings().first()  # fmt: skip
        if found is not None:
            tries = _tries(found)
            if found["status"] == "running":  # the try before this one never finished
                tries[-1] = _interrupted(found, tries, now)
                log.warning("%s/%s: try %s of run %s ended without a word: interrupted", source, stream,
                            tries[-1]["try"], run_id)  # fmt: skip
            tries.append({"try": len(tries) + 1, "status": "running", "started_at": str(now)})
            conn.execute(update(r).where(r.c.id == found["id"])
                         .values(status="running", finished_at=None, details=_details(tries, _last_summary(tries))))  # fmt: skip
            return int(found["id"])
        result = conn.execute(
            insert(r).values(
                run_id=run_id,
                dag_id=dag_id,
                source=source,
                stream=stream,
                interval_start=interval_start,
                interval_end=interval_end,
                status="running",
                details=_json({"tries": [{"try": 1, "status": "running", "started_at": str(now)}]}),
            )
        )
        return int(result.inserted_primary_key[0])


def finish_run(
    engine: Engine,
    run_pk: int,
    *,
    status: Literal["success", "failed"],
    details: Mapping[str, Any] | None = None,
) -> None:
    """The run's try ends: its summary (``details``) is kept as the try's, the row's ``details``
    become the run's (counts summed over its tries, :func:`_details`)."""
    r = store.run
    with engine.begin() as conn:
        now = _db_now(conn)
        row = conn.execute(select(r).where(r.c.id == run_pk)).mappings().one()
        tries = _tries(row)
        if tries[-1].get("status") != "running":  # a row from before tries were kept
            tries.append({"try": len(tries) + 1, "started_at": str(row["started_at"])})
        tries[-1] = {**tries[-1], **(details or {}), "status": status, "finished_at": str(now)}
        conn.execute(
            update(r)
            .where(r.c.id == run_pk)
            .values(status=status, finished_at=func.current_timestamp(), details=_details(tries, details))
        )
