"""The watermark: the cursor of one (source, stream) in ``store.watermark``.

It moves only in the transaction that commits the rows it covers (:func:`advance_watermark`, called
by :mod:`hurren.load` for each batch of a scheduled run), and never back; a backfill, and the
future range, never move it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from hurren import store
from hurren.incremental.windows import CursorState
from hurren.sources import Source


def read_cursor(store_conn: Connection, source: Source, stream: str) -> CursorState:
    """The cursor of (source, stream) from ``store.watermark``; a new one starts at the source's
    ``initial_value``."""
    wm = store.watermark
    row = store_conn.execute(
        select(wm.c.initial_value, wm.c.last_value).where(wm.c.source == source.id, wm.c.stream == stream)
    ).first()
    if row is None:
        return CursorState(initial_value=source.initial_value)
    return CursorState(initial_value=row.initial_value, last_value=row.last_value)


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
