"""Incremental extraction: which rows a run of (source, stream) reads, and what it leaves behind.

The cursor model follows dlt's incremental loading:

- The **cursor** (:class:`CursorState`) of one (source, stream) is the stream's change time:
  ``initial_value`` (where a new cursor starts) and ``last_value`` (the highest value committed
  to the store), kept in ``store.watermark`` (:mod:`~hurren.incremental.watermark`).
- A **scheduled run** reads the **window** ``[since, until)`` from the watermark, less the
  source's **overlap** (:func:`apply_overlap`: rows committed late at the source with a change
  time just below it; re-read rows are counted unchanged or stale, never written twice), to the
  end of its data interval. Each batch the load commits moves the watermark to its highest
  cursor value *in the same transaction* (batches come oldest first), so the watermark never
  passes a row that is not committed, and a run that fails half-way resumes after its last
  committed batch.
- A **backfill** reads exactly the window it is given (the DAG params ``since`` / ``until``, or
  a backfill run's data interval: :func:`airflow_window`) and never moves the watermark (moving
  it from a past window would skip the rows between).
- The **source's clock** (:class:`SourceClock`): no window ends after the source's now plus its
  ``future_tolerance_minutes``. A row whose change time lies beyond (a wrong clock, a 9999-12-31
  placeholder) would never be in a window, so each scheduled run also reads that **future
  range**, open-ended (:func:`future_range`): every row in it is quarantined (``future_dtime``)
  and it never moves the watermark. Once the source corrects the row, a later window reads it.
- The **run log** (:mod:`~hurren.incremental.runlog`): one ``etl_run`` row per (run, source,
  stream), its tries (a retried task adds one; a try killed without a word is found
  ``interrupted``) and counts (each committed batch adds its own in its transaction).

:func:`run` is the one entry point (``hurren.pipeline.run_stream``): it plans the run's windows
from the cursor, the Airflow interval and the source's clock, opens the run's ``etl_run`` row and
closes it, ``success`` or ``failed``, with the run's summary.

Times are the source's naive local time, to the second (:func:`to_source_time`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.engine import Connection, Engine

from hurren.incremental.runlog import RUN_LEASE, LoadCounts, add_run_counts, finish_run, start_run
from hurren.incremental.watermark import advance_watermark, read_cursor
from hurren.incremental.windows import (
    CursorState,
    SourceClock,
    Window,
    airflow_window,
    apply_overlap,
    backfill_window,
    capped,
    future_range,
    next_window,
    to_source_time,
    window,
)
from hurren.sources import Source

__all__ = [
    "RUN_LEASE",
    "CursorState",
    "LoadCounts",
    "Mode",
    "Run",
    "SourceClock",
    "Window",
    "add_run_counts",
    "advance_watermark",
    "airflow_window",
    "apply_overlap",
    "backfill_window",
    "capped",
    "finish_run",
    "future_range",
    "next_window",
    "read_cursor",
    "run",
    "settle_batch",
    "start_run",
    "to_source_time",
    "window",
]

log = logging.getLogger(__name__)

Mode = Literal["incremental", "backfill"]


@dataclass(slots=True)
class Run:
    """One run of (source, stream), as :func:`run` planned it."""

    mode: Mode
    window: Window  # the rows to validate and load
    future: Window | None  # beyond the source's clock, open-ended: quarantined; None in a backfill
    cursor: CursorState | None  # moved by each committed batch of the window; None: a backfill
    clock: SourceClock
    pk: int  # the etl_run row; each committed batch adds its counts to it
    details: Callable[[], Mapping[str, Any]] = dict  # the run's summary, kept when the run ends


@contextmanager
def run(
    store_engine: Engine,
    *,
    source: Source,
    stream: str,
    run_id: str,
    dag_id: str,
    until: datetime,
    backfill_since: datetime | None = None,
    now: datetime | None = None,
) -> Iterator[Run]:
    """Plan the run of ``stream`` from ``source`` ending at ``until`` and keep it in ``etl_run``.

    ``until`` is Airflow's data interval end (aware values are converted to the source's time
    zone). With ``backfill_since`` the window is exactly [backfill_since, until), there is no
    future range and no cursor; otherwise the window starts at the watermark less the overlap.
    No window ends after ``now`` (default: the current time) plus the source's tolerance. The
    run's row is ``running`` inside the block and ends ``success``, or ``failed`` when the block
    raises, with ``Run.details()`` as its summary.
    """
    clock = SourceClock.of(source, now or datetime.now(UTC))
    if backfill_since is not None:
        mode: Mode = "backfill"
        cursor, w, future = None, backfill_window(backfill_since, until, tz=source.tz), None
    else:
        mode = "incremental"
        with store_engine.connect() as conn:
            cursor = read_cursor(conn, source, stream)
        w, future = next_window(source, cursor, until), future_range(clock)
    if (due := capped(w, clock)) != w:
        log.warning("%s/%s: the window ends at %s, after the source's now %s + %s min: read until then",
                    source.id, stream, w.until, clock.now, source.future_tolerance_minutes)  # fmt: skip
        w = due
    pk = start_run(
        store_engine, run_id=run_id, dag_id=dag_id, source=source.id, stream=stream,
        interval_start=w.since, interval_end=w.until,
    )  # fmt: skip
    log.info("%s/%s: %s window [%s, %s)", source.id, stream, mode, w.since, w.until)
    r = Run(mode, w, future, cursor, clock, pk)
    try:
        yield r
    except BaseException:
        finish_run(store_engine, pk, status="failed", details=r.details())
        raise
    finish_run(store_engine, pk, status="success", details=r.details())


def settle_batch(
    conn: Connection,
    *,
    run_pk: int | None,
    counts: LoadCounts,
    cursor: CursorState | None,
    max_cursor: datetime | None,
    source: str,
    stream: str,
    run_id: str,
) -> None:
    """A committed batch's counts added to its run and the cursor (None in a backfill) moved to the
    batch's highest change time, in the batch's transaction: rows, counts and watermark together."""
    if run_pk is not None:
        add_run_counts(conn, run_pk, counts)
    if cursor is not None and max_cursor is not None:
        advance_watermark(conn, source=source, stream=stream, last_value=max_cursor,
                          initial_value=cursor.initial_value, run_id=run_id)  # fmt: skip
