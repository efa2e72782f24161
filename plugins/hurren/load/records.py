"""Records without sub-items, PDFs or push entries (the PACS views) loaded column by column.

A day of a large hospital's PACS is millions of instance rows, so a batch here holds no object per
row. The outcome is the per-unit path's (:mod:`hurren.load.units` and the batch flow in
:mod:`hurren.load`), row for row: the same content hash (the canonical row as key-sorted JSON,
built column by column with :mod:`hurren.rows`), the same holds and reasons, the same counts.

* Rows that a check holds — validation's holds, a change time beyond the source's clock, a value
  that does not convert to its column, a key twice in the batch — are few: they are found column by
  column and then go through the per-unit path itself (``_units``/``_prepare``), so their holds
  and quarantine entries read exactly as before.
* The rest is COPYed into the stage as typed columns, and sorted out by the store in the batch's
  one transaction: rows stored with the same hash leave the stage (unchanged), rows whose stored
  version is newer leave it (stale), the rest is upserted (the upsert compares again, so a run
  racing this one never stores an older version). No read of the stored hashes before.

A batch is staged first (:func:`stage_frame`: CPU only, no store read) and committed after
(:meth:`StagedFrame.commit`: the store's transaction), so the pipeline can commit one batch while
it reads and stages the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy.engine import Engine

from hurren import rows, spec, store
from hurren.incremental import CursorState, settle_batch
from hurren.load.common import Hold, LoadCounts, SourceClock
from hurren.load.engines import Staging, copy_in
from hurren.load.quarantine import _quarantine, _resolve_keys
from hurren.load.units import _change_time, _column, _prepare, _stored_fields, _Typed, _units
from hurren.push import outbox as push_outbox
from hurren.sources import Source


def columnwise(how: str, master: spec.Entity, item: spec.Entity | None) -> bool:
    """Whether a batch of ``master`` takes this path: the copy engine, no sub-items, no PDF and
    no push entries (accept/quote records are queued row by row: the per-unit path)."""
    return (
        how == "copy"
        and item is None
        and not any(f.type == "pdf" for f in master.fields)
        and master.name not in push_outbox.RECORD_ENTITIES
        and master.name not in push_outbox.REPORT_ENTITIES
    )


def content_hashes(
    master: spec.Entity, frame: pd.DataFrame, texts: Mapping[str, pa.Array] | None = None
) -> list[str]:
    """``hurren.rows.content_hash`` of each row of a canonical frame of records (no sub-items, no
    PDF), column by column: the key-sorted JSON of the row under "master", "items" empty.
    ``texts``: the frame's columns already in Arrow (:func:`hurren.rows.arrow_texts`)."""
    columns = {f: _column(frame, f).to_numpy(dtype=object) for f in master.names}
    hashes = rows.record_hashes(columns, len(frame), texts)
    if hashes is not None:
        return hashes
    master_json = rows.json_rows({f: rows.json_column(v) for f, v in columns.items()}, len(frame))
    return rows.sha256_hex([f'{{"items":[],"master":{m}}}' for m in master_json])


def _future(
    master: spec.Entity, frame: pd.DataFrame, typed: _Typed, cursor: str, limit: datetime
) -> np.ndarray:
    """Rows whose change time is ``limit`` or later (``_change_time``: the strict form only). A
    datetime field's typed column holds just those values (others None or BAD): compared at once."""
    f = next(f for f in master.fields if f.name == cursor)
    if f.type != "datetime":
        return np.fromiter(
            ((t := _change_time(v)) is not None and t >= limit for v in _column(frame, cursor)),
            dtype=bool,
            count=len(frame),
        )
    times = typed.columns[store.column_name(master, cursor)]
    out = np.zeros(len(times), dtype=bool)
    known = np.fromiter((type(t) is datetime for t in times), dtype=bool, count=len(times))
    out[known] = times[known] >= limit
    return out


def _suspects(
    master: spec.Entity,
    frame: pd.DataFrame,
    typed: _Typed,
    keys: np.ndarray,
    holds: Mapping[str, Hold],
    cursor: str,
    clock: SourceClock | None,
) -> np.ndarray:
    """Rows some check may hold: held by validation, changed in the future, not typed, or whose
    typed key is in the batch twice (each of the pair)."""
    n = len(frame)
    out = typed.first_fail >= 0
    if holds:
        out |= np.fromiter((k in holds for k in keys), dtype=bool, count=n)
    if clock is not None:
        out |= _future(master, frame, typed, cursor, clock.future_from)
    ok = np.flatnonzero(typed.first_fail < 0)
    if len(ok):
        key_columns = {k: typed.columns[store.column_name(master, k)][ok] for k in master.key}
        out[ok[pd.DataFrame(key_columns).duplicated(keep=False).to_numpy()]] = True
    return out


@dataclass(slots=True)
class StagedFrame:
    """A batch of records made ready for the store without touching it: its typed columns, hashes
    and COPY text, its held rows. :meth:`commit` is the store's part, in one transaction."""

    master: spec.Entity
    change_time: str
    keys: np.ndarray  # each row's record key
    clean: np.ndarray  # the rows COPYed (positions)
    units: list[Any]  # the suspects, per unit: held, or (rarely) written row by row
    names: list[str]
    columns: list[Any]
    text: bytes | None
    counts: LoadCounts
    # the batch's place in its run
    source: Source
    run_id: str
    stream: str
    max_cursor: datetime | None
    run_pk: int | None
    cursor: CursorState | None

    def commit(self, engine: Engine) -> LoadCounts:
        """Write the batch, its quarantine and its counts, and move the watermark, in one
        transaction. Database errors pass through (the caller words them)."""
        master, counts, names, columns = self.master, self.counts, self.names, self.columns
        source, run_id = self.source, self.run_id
        held = [u for u in self.units if u.hold is not None]
        extra = [
            u.typed_master | {"etl_run_id": run_id} for u in self.units if u.hold is None
        ]  # none expected
        with engine.begin() as conn:
            stale = (
                _write(conn, master, self.change_time, names, columns, self.text, extra, counts)
                if len(self.clean) or extra
                else set()
            )

            def valid_keys() -> tuple[set[str], set[str]]:
                valid = set(self.keys[self.clean]) | {u.key for u in self.units if u.hold is None}
                if stale:
                    key_at = [names.index(store.column_name(master, k)) for k in master.key]
                    by_typed = dict(
                        zip(
                            zip(*(columns[i] for i in key_at), strict=True),
                            self.keys[self.clean],
                            strict=True,
                        )
                    )
                    valid -= {by_typed[k] for k in stale if k in by_typed}
                return valid, set()

            counts.quarantine_written = _quarantine(conn, master, held, source=source, run_id=run_id)
            counts.resolved = _resolve_keys(conn, master, valid_keys, source=source)
            settle_batch(conn, run_pk=self.run_pk, counts=counts, cursor=self.cursor, max_cursor=self.max_cursor,
                         source=source.id, stream=self.stream, run_id=run_id)  # fmt: skip
        return counts


def stage_frame(
    *,
    master: spec.Entity,
    frame: pd.DataFrame,
    change_time: str,
    stream: str,
    max_cursor: datetime | None,
    source: Source,
    run_id: str,
    holds: Mapping[str, Hold] | None,
    run_pk: int | None,
    cursor: CursorState | None,
    clock: SourceClock | None,
) -> StagedFrame:
    """One batch of records (a canonical frame) made ready for :meth:`StagedFrame.commit`; with
    it, what ``hurren.load._load`` does for the same batch, with the same counts. Reads no store:
    the store's part can run later, in another thread (``hurren.pipeline``)."""
    holds = holds or {}
    frame = frame.reset_index(drop=True)
    n = len(frame)
    keys = rows.record_keys(master, frame)
    typed = _Typed.of(master, frame)
    suspect = _suspects(master, frame, typed, keys, holds, change_time, clock)
    # the per-unit path for the suspects: their holds, hashes and quarantine entries as ever
    units = []
    if suspect.any():
        some = frame.iloc[np.flatnonzero(suspect)].reset_index(drop=True)
        units = _units(master, None, some, None)
        _prepare(units, master, None, holds, source.org_code, masters=some, cursor=change_time, clock=clock)
    clean = np.flatnonzero(~suspect)
    ok = frame.iloc[clean]
    texts = rows.arrow_texts({f: _column(ok, f).to_numpy(dtype=object) for f in master.names})
    hashes = content_hashes(master, ok, texts)
    clean_typed = {c: v[clean] for c, v in typed.columns.items()}
    stored = rows.stored_texts(_stored_fields(master), texts, clean_typed) if texts is not None else None
    return StagedFrame(
        master=master,
        change_time=change_time,
        keys=keys,
        clean=clean,
        units=units,
        names=[*clean_typed, "etl_content_hash", "etl_run_id"],
        columns=[*clean_typed.values(), hashes, [run_id] * len(clean)],
        text=rows.copy_text(_stored_fields(master), stored, hashes, run_id) if stored is not None else None,
        counts=LoadCounts(extracted=n, quarantined=sum(u.hold is not None for u in units)),
        source=source,
        run_id=run_id,
        stream=stream,
        max_cursor=max_cursor,
        run_pk=run_pk,
        cursor=cursor,
    )


def _write(
    conn: Any,
    master: spec.Entity,
    change_time: str,
    names: list[str],
    columns: list[Any],
    text: bytes | None,
    extra: list[dict[str, Any]],
    counts: LoadCounts,
) -> set[tuple[Any, ...]]:
    """COPY the rows into the stage and let the store sort them: unchanged, stale, written (counted
    in ``counts``). Returns the stale rows' keys (typed)."""
    from psycopg import sql  # the copy engine is PostgreSQL with psycopg

    st = Staging(master, names, change_time)
    staged = len(columns[0]) + len(extra)
    with conn.connection.driver_connection.cursor() as cur:
        st.create(cur)
        with cur.copy(st.copy_sql()) as copy:
            copy_in(copy, text, columns)
            for r in extra:
                copy.write_row([r[c] for c in names])
        with st.lookups(cur):  # unchanged or stale (never replaced by this older version): out of the stage
            cur.execute(st.drop_stored_sql())
            gone = cur.fetchall()
        stale = {tuple(r[:-1]) for r in gone if not r[-1]}
        counts.unchanged = len(gone) - len(stale)
        cur.execute(st.upsert_sql(returning=False))
        written = cur.rowcount
        missed = staged - counts.unchanged - len(stale) - written
        if missed:  # the rare race: another run stored a version of these keys meanwhile
            cur.execute(
                sql.SQL(
                    "SELECT {keys} FROM {s} JOIN {t} ON {same} "
                    "WHERE {t}.etl_content_hash <> {s}.etl_content_hash"
                ).format(s=st.stage, t=st.table, same=st.same, keys=st.stage_keys)
            )  # what this batch wrote is stored with its own hash: these are the newer versions
            late = {tuple(r) for r in cur.fetchall()}
            stale |= late
            counts.unchanged += missed - len(late)
    counts.stale = len(stale)
    counts.loaded = written
    return stale
