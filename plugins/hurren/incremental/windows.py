"""Windows of cursor values: the cursor, the overlap, the source's clock, backfills, Airflow's interval.

Every time here is the source's naive local time, to the second, as its change times are; an aware
value (Airflow's data interval, UTC) is converted with :func:`to_source_time`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hurren.extract import ExtractSettingsError
from hurren.sources import Source


@dataclass(frozen=True, slots=True)
class CursorState:
    """The incremental cursor of one (source, stream), as kept in ``store.watermark``."""

    initial_value: datetime  # where a new cursor starts (source local time, naive)
    last_value: datetime | None = None  # highest cursor value committed; None: nothing yet

    @property
    def start_value(self) -> datetime:
        return self.initial_value if self.last_value is None else self.last_value


@dataclass(frozen=True, slots=True)
class Window:
    """The half-open window ``[since, until)`` of cursor values to read, source local time;
    ``until`` None: no end (the future range reaches 9999-12-31 too)."""

    since: datetime
    until: datetime | None

    @property
    def empty(self) -> bool:
        return self.until is not None and self.until <= self.since


@dataclass(frozen=True, slots=True)
class SourceClock:
    """The source's current time (naive, in its zone, as its change times are) and how far ahead
    of it a change time may lie before it is a clock problem (``future_tolerance_minutes``)."""

    now: datetime
    tolerance: timedelta

    @property
    def future_from(self) -> datetime:
        """Change times from here on are held (rule ``future_dtime``)."""
        return self.now + self.tolerance

    @classmethod
    def of(cls, source: Source, now: datetime) -> SourceClock:
        """The clock of ``source`` at ``now`` (aware, or naive source local time)."""
        return cls(to_source_time(now, source.tz), timedelta(minutes=source.future_tolerance_minutes))


def apply_overlap(last_value: datetime, overlap: timedelta, initial_value: datetime | None) -> datetime:
    """The window's start: ``overlap`` before ``last_value``, never before ``initial_value``.

    Re-reading the overlap picks up rows committed late with a cursor value just below the
    watermark; loading them again is a no-op (same content hash: counted unchanged, or stale).
    """
    if overlap < timedelta(0):
        raise ExtractSettingsError(f"overlap must not be negative, got {overlap}; use 0 for no overlap")
    start = last_value - overlap
    if initial_value is not None and start < initial_value:
        return initial_value
    return start


def to_source_time(value: datetime, tz: ZoneInfo | str) -> datetime:
    """``value`` as the source's naive local time, to the second (the spec's precision).

    An aware value (Airflow's data interval, UTC) is converted to the source's zone; a naive one
    is taken to be in source local time already.
    """
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    if value.tzinfo is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    return value.replace(microsecond=0)


def window(state: CursorState, *, until: datetime, overlap: timedelta, tz: ZoneInfo | str) -> Window:
    """The next incremental window of a cursor, ending at ``until`` (exclusive).

    An empty window (``until`` not after the start) means there is nothing to read yet.
    """
    end = to_source_time(until, tz)
    if state.last_value is None:
        return Window(state.initial_value, end)
    return Window(apply_overlap(state.last_value, overlap, state.initial_value), end)


def next_window(source: Source, state: CursorState, until: datetime) -> Window:
    """:func:`window` with the source's configured overlap and time zone."""
    return window(state, until=until, overlap=timedelta(minutes=source.overlap_minutes), tz=source.tz)


def backfill_window(since: datetime, until: datetime, *, tz: ZoneInfo | str) -> Window:
    """Any past window, for a backfill (which must not advance the cursor)."""
    w = Window(to_source_time(since, tz), to_source_time(until, tz))
    if w.empty:
        raise ExtractSettingsError(f"backfill window is empty: since {w.since} is not before until {w.until}")
    return w


def capped(w: Window, clock: SourceClock) -> Window:
    """``w`` ending no later than the source's now plus its tolerance (never before its start):
    a change time from there on is the source's clock problem, not data (:func:`future_range`)."""
    if w.until is None or w.until <= clock.future_from:
        return w
    return Window(w.since, max(w.since, clock.future_from))


def future_range(clock: SourceClock) -> Window:
    """Change times beyond the source's clock, with no end: a wrong clock, a 9999-12-31
    placeholder. Such a row would never be in a window; a scheduled run reads this range too and
    quarantines what it finds (``future_dtime``), without moving the watermark."""
    return Window(clock.future_from, None)


def airflow_window(ctx: Mapping[str, Any]) -> tuple[datetime | None, datetime]:
    """(backfill_since or None, until) of an Airflow task's run: the params ``since`` / ``until``,
    else a backfill run's data interval, else (scheduled and manual runs) from the watermark to
    the interval's end. Params are source local time; the interval is aware (UTC)."""
    params, run = ctx["params"], ctx["dag_run"]
    interval_start, interval_end = ctx["data_interval_start"], ctx["data_interval_end"]
    since, until = None, interval_end or run.run_after
    if params.get("since"):
        since = datetime.fromisoformat(params["since"])
        until = datetime.fromisoformat(params["until"]) if params.get("until") else until
    elif getattr(run.run_type, "value", run.run_type) == "backfill" and interval_start is not None:
        since = interval_start  # (the task SDK's DagRunType prints as "DagRunType.BACKFILL")
    return since, until
