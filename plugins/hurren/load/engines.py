"""The write engines: ``copy`` (PostgreSQL: COPY into a temporary table, one set-based upsert that
keeps the newer version, sub-items replaced set-based) and ``portable`` (SQLAlchemy Core, any store)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from hurren import spec, store
from hurren.load.common import _IN_GROUP
from hurren.load.units import _link, _Unit


def _key_columns(table: Table, entity: spec.Entity) -> list[Any]:
    return [table.c[store.column_name(entity, k)] for k in entity.key]


def _existing(
    conn: Connection, entity: spec.Entity, units: Sequence[_Unit], cursor: str, *, lock: bool = False
) -> dict[tuple[Any, ...], tuple[str, datetime | None]]:
    """(store hash, stored change time) of each unit's key, found by the first selective key
    column in IN groups; ``lock``: FOR UPDATE (the portable path's check inside its transaction)."""
    table = store.SPEC_TABLES[entity.name]
    keys = _key_columns(table, entity)
    probe_name = next((k for k in entity.key if k != "org_code"), entity.key[0])
    probe = table.c[store.column_name(entity, probe_name)]
    values = sorted({u.typed_master[probe.name] for u in units if u.typed_master})
    stmt = select(*keys, table.c.etl_content_hash, table.c[store.column_name(entity, cursor)])
    stmt = stmt.where(probe.in_(bindparam("values", expanding=True)))
    if lock:
        stmt = stmt.with_for_update()
    params: dict[str, Any] = {}
    if "org_code" in entity.key and probe.name != "org_code":  # form numbers repeat across hospitals
        stmt = stmt.where(table.c.org_code.in_(bindparam("orgs", expanding=True)))
        params["orgs"] = sorted({u.typed_master["org_code"] for u in units if u.typed_master})
    found: dict[tuple[Any, ...], tuple[str, datetime | None]] = {}
    for i in range(0, len(values), _IN_GROUP):
        for row in conn.execute(stmt, {**params, "values": values[i : i + _IN_GROUP]}):
            found[tuple(row[:-2])] = (row[-2], row[-1])
    return found


def _write_portable(
    conn: Connection, master: spec.Entity, item: spec.Entity | None, new: list[_Unit], changed: list[_Unit]
) -> None:
    table = store.SPEC_TABLES[master.name]
    if new:
        conn.execute(insert(table), [u.typed_master for u in new])
    if changed:
        keys = _key_columns(table, master)
        cols = [c for c in changed[0].typed_master if c not in {k.name for k in keys}]
        stmt = (
            update(table)
            .where(and_(*(k == bindparam(f"k_{k.name}") for k in keys)))
            .values({c: bindparam(f"v_{c}") for c in cols} | {"etl_loaded_at": func.current_timestamp()})
        )
        conn.execute(
            stmt,
            [
                {f"k_{k.name}": u.typed_master[k.name] for k in keys}
                | {f"v_{c}": u.typed_master[c] for c in cols}
                for u in changed
            ],
        )
    if item is not None:
        itable = store.SPEC_TABLES[item.name]
        link = _link(master, item)
        if changed:
            stmt = delete(itable).where(and_(*(itable.c[c] == bindparam(f"l_{c}") for c in link)))
            conn.execute(stmt, [{f"l_{c}": u.typed_master[c] for c in link} for u in changed])
        units = [u for u in (*new, *changed) if u.item_pos]
        if units:
            sub = units[0].sub
            names, columns, _ = sub.store_rows(
                [p for u in units for p in u.item_pos], units[0].typed_master.get("etl_run_id")
            )
            conn.execute(
                insert(itable), [dict(zip(names, r, strict=True)) for r in zip(*columns, strict=True)]
            )


def copy_in(copy: Any, text: bytes | None, columns: Sequence[Sequence[Any]]) -> None:
    """Into an open COPY: ``text`` (:func:`hurren.rows.copy_text`), or, without it, the typed
    ``columns`` row by row."""
    if text is not None:
        copy.write(text)
    else:
        for row in zip(*columns, strict=True):
            copy.write_row(row)


def _same(a: Any, b: Any, names: Iterable[str]) -> Any:
    """``a.c = b.c AND ...`` for the columns ``names`` (psycopg SQL)."""
    from psycopg import sql

    ident = sql.Identifier
    return sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, ident(c), b, ident(c)) for c in names)


class Staging:
    """The SQL of the copy engine for one entity: a temporary stage like the store table, COPY
    into it, and the set-based upsert that keeps the newer version (psycopg SQL)."""

    def __init__(self, master: spec.Entity, cols: Sequence[str], cursor: str) -> None:
        from psycopg import sql

        table = store.SPEC_TABLES[master.name]
        ident = sql.Identifier
        self.cols = list(cols)
        self.keys = [k.name for k in _key_columns(table, master)]
        self.table, self.stage = ident(table.name), ident(f"etl_stage_{table.name}")
        self.col_list = sql.SQL(", ").join(map(ident, self.cols))
        self.key_list = sql.SQL(", ").join(map(ident, self.keys))
        self.stage_keys = sql.SQL(", ").join(sql.SQL("{}.{}").format(self.stage, ident(k)) for k in self.keys)
        self.same = _same(self.table, self.stage, self.keys)
        self.ct = ident(store.column_name(master, cursor))

    def create(self, cur: Any) -> None:
        from psycopg import sql

        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                self.stage, self.table
            )
        )

    def copy_sql(self) -> Any:
        from psycopg import sql

        return sql.SQL("COPY {} ({}) FROM STDIN").format(self.stage, self.col_list)

    @contextmanager
    def lookups(self, cur: Any) -> Iterator[None]:
        """The statements joining the stage with a store table, each staged row looked up along
        the table's key index: a batch then costs what the batch holds, however large the store
        grows. Left to itself, the planner hashes the whole store table while it is under about
        twenty times the stage (at a million PACS rows: ~1 s per batch, growing with every day
        stored; ``tests/integration/test_stage_lookups.py``). No reset after an error: the
        transaction is rolled back, ``SET LOCAL`` with it."""
        cur.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        yield
        cur.execute("RESET enable_hashjoin; RESET enable_mergejoin")

    def drop_stored_sql(self) -> Any:
        """Staged rows stored with the same hash (unchanged) or stored in a newer version (stale)
        leave the stage, in one pass, returning their keys and whether they were unchanged."""
        from psycopg import sql

        return sql.SQL(
            "DELETE FROM {s} USING {t} WHERE {same} AND ({t}.etl_content_hash = {s}.etl_content_hash "
            "OR {t}.{ct} > {s}.{ct}) RETURNING {keys}, {t}.etl_content_hash = {s}.etl_content_hash"
        ).format(s=self.stage, t=self.table, same=self.same, ct=self.ct, keys=self.stage_keys)

    def drop_items_sql(self, master: spec.Entity, item: spec.Entity) -> Any:
        """The stored sub-items of the staged reports go (the new ones are COPYed after)."""
        from psycopg import sql

        itable = sql.Identifier(store.SPEC_TABLES[item.name].name)
        return sql.SQL("DELETE FROM {i} USING {s} WHERE {same}").format(
            i=itable, s=self.stage, same=_same(itable, self.stage, _link(master, item))
        )

    def drop_same_hash_sql(self) -> Any:
        """Staged rows whose key is stored with the same hash leave the stage (unchanged)."""
        from psycopg import sql

        return sql.SQL(
            "DELETE FROM {s} USING {t} WHERE {same} AND {t}.etl_content_hash = {s}.etl_content_hash"
        ).format(s=self.stage, t=self.table, same=self.same)

    def upsert_sql(self, *, returning: bool = True) -> Any:
        """INSERT … ON CONFLICT from the stage: a stored row is replaced only by other content at
        least as new (its change time); RETURNING the keys written (or only their count)."""
        from psycopg import sql

        ident = sql.Identifier
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c))
            for c in [*self.cols, "etl_loaded_at"]
            if c not in self.keys
        )
        return sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} "
            "ON CONFLICT ({keys}) DO UPDATE SET {updates} "
            "WHERE {t}.etl_content_hash IS DISTINCT FROM EXCLUDED.etl_content_hash "
            "AND ({t}.{ct} IS NULL OR EXCLUDED.{ct} IS NULL OR {t}.{ct} <= EXCLUDED.{ct})"
            + (" RETURNING {keys}" if returning else "")
        ).format(
            t=self.table, cols=self.col_list, s=self.stage, keys=self.key_list, updates=updates, ct=self.ct
        )


def _write_copy(
    conn: Connection, master: spec.Entity, item: spec.Entity | None, units: list[_Unit], cursor: str
) -> tuple[list[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """COPY into a temporary table, then one INSERT … ON CONFLICT; returns the keys written and
    the keys found stale (a newer version stored meanwhile). The upsert itself compares the change
    times (column ``cursor``): a stored row is only ever replaced by a version at least as new.

    Masters go through psycopg's ``write_row``, sub-items as the COPY text Arrow built for them
    (:func:`hurren.rows.copy_text`, else ``write_row``): text format, not CSV, so an empty string
    stays an empty string and only None becomes NULL."""
    from psycopg import sql  # the copy path is taken only with psycopg

    raw = conn.connection.driver_connection
    cols = list(units[0].typed_master)
    st = Staging(master, cols, cursor)
    keys, ident, stage = st.keys, sql.Identifier, st.stage
    with raw.cursor() as cur:
        st.create(cur)
        with cur.copy(st.copy_sql()) as copy:
            for u in units:
                copy.write_row([u.typed_master[c] for c in cols])
        with st.lookups(cur):
            cur.execute(st.drop_same_hash_sql())  # rows stored meanwhile with the same hash leave the stage
        cur.execute(st.upsert_sql())
        written = [tuple(r) for r in cur.fetchall()]
        stale: set[tuple[Any, ...]] = set()
        by_key = {tuple(u.typed_master[k] for k in keys): u for u in units}
        missed = set(by_key) - set(written)
        if missed:  # the rare race: another run stored a version of these keys meanwhile
            found = _existing(conn, master, [by_key[k] for k in missed], cursor)
            stale = {k for k in missed if k in found and found[k][0] != by_key[k].hash}
            cur.executemany(  # only the written reports' sub-items are replaced below
                sql.SQL("DELETE FROM {s} WHERE {match}").format(
                    s=stage, match=sql.SQL(" AND ").join(sql.SQL("{} = %s").format(ident(k)) for k in keys)
                ),
                sorted(missed, key=repr),
            )
        if item is None or not written:
            return written, stale
        # the old sub-items of every written report go, the new ones come in by COPY
        itable = ident(store.SPEC_TABLES[item.name].name)
        with st.lookups(cur):
            cur.execute(st.drop_items_sql(master, item))
        done = set(written)
        mine = [u for u in units if u.item_pos and tuple(u.typed_master[k] for k in keys) in done]
        if mine:
            icols, columns, text = mine[0].sub.store_rows([p for u in mine for p in u.item_pos],
                                                          mine[0].typed_master.get("etl_run_id"))  # fmt: skip
            with cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(itable, sql.SQL(", ").join(map(ident, icols)))
            ) as copy:
                copy_in(copy, text, columns)
    return written, stale
