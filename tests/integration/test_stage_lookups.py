"""A batch's load costs what the batch holds, not what the store holds (PostgreSQL).

The copy engine joins its stage with the store table twice a batch (rows stored unchanged or newer
leave the stage; the written reports' old sub-items go). Left to itself, PostgreSQL hashes the
whole store table for that while it is under about twenty times the stage: at a million PACS rows
~1 s per batch, and more every day the store keeps. Under ``Staging.lookups`` each staged row is
looked up along the table's key index instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest
from psycopg import sql
from sqlalchemy import Date, DateTime, Integer, SmallInteger, Table, create_engine, text

from hurren import spec, store
from hurren.load.engines import Staging

STORED = 60_000  # rows already in the store table
STAGED = 5_000  # one batch


def _fill(conn: Any, table: Table, rows: int, *, into: str | None = None, key_offset: int = 0) -> None:
    """``rows`` rows of made-up values in every column of ``table`` (keys unique), into ``table`` or
    the table named ``into`` (its stage), by generate_series."""
    exprs = []
    for c in table.columns:
        if isinstance(c.type, SmallInteger):
            exprs.append("mod(i, 30000)")
        elif isinstance(c.type, Integer):
            exprs.append("i")
        elif isinstance(c.type, (DateTime, Date)):
            exprs.append("timestamp '2024-03-11 08:00:00' + make_interval(secs => i)")
        else:
            exprs.append(f"left('v' || (i + {key_offset}), {getattr(c.type, 'length', None) or 64})")
    cols = ", ".join(f'"{c.name}"' for c in table.columns)
    conn.exec_driver_sql(
        f'INSERT INTO "{into or table.name}" ({cols}) SELECT {", ".join(exprs)} FROM generate_series(1, {rows}) i'
    )


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(plan["Node Type"], plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        out += _scans(child)
    return out


def _plans(conn: Any, st: Staging, statements: list[Any], *, looked_up: bool) -> list[list[tuple[str, str]]]:
    raw = conn.connection.driver_connection
    plans = []
    with raw.cursor() as cur:
        for stmt in statements:
            with st.lookups(cur) if looked_up else nullcontext():
                cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + stmt)
                plans.append(_scans(cur.fetchone()[0][0]["Plan"]))
    return plans


@pytest.mark.parametrize("master_name", ["v_web_jcjg", "labmaster"])
def test_a_batch_looks_its_rows_up_and_reads_no_whole_store_table(
    make_database: Callable[..., str], master_name: str
) -> None:
    master = spec.entity(master_name)
    item = next((spec.entity(e) for e in ("lab_subitem",) if master_name == "labmaster"), None)
    table = store.SPEC_TABLES[master.name]
    engine = create_engine(make_database("hurren_lookups"))
    try:
        store.create_all(engine)
        with engine.begin() as conn:
            _fill(conn, table, STORED)
            if item is not None:
                _fill(conn, store.SPEC_TABLES[item.name], STORED)
            conn.execute(text(f'ANALYZE "{table.name}"'))
        with engine.begin() as conn:
            cursor = next(f.name for f in master.fields if f.type == "datetime")
            st = Staging(master, [c.name for c in table.columns], cursor)
            with conn.connection.driver_connection.cursor() as cur:
                st.create(cur)
            _fill(
                conn, table, STAGED, into=f"etl_stage_{table.name}", key_offset=STORED - STAGED // 2
            )  # half stored
            statements = [st.drop_stored_sql(), st.drop_same_hash_sql()]
            if item is not None:
                statements.append(st.drop_items_sql(master, item))
            stored_tables = {table.name} | ({store.SPEC_TABLES[item.name].name} if item else set())
            if master_name == "v_web_jcjg":  # narrow rows: the planner's own choice reads the whole table
                left_alone = _plans(conn, st, statements, looked_up=False)
                assert any(("Seq Scan", t) in p for p in left_alone for t in stored_tables), left_alone
            for plan in _plans(conn, st, statements, looked_up=True):
                whole = [n for n in plan if n[1] in stored_tables and n[0] == "Seq Scan"]
                assert not whole, json.dumps(plan)
                assert any(n[0] == "Nested Loop" for n in plan), plan
            # and the settings are back for the rest of the transaction
            assert conn.exec_driver_sql("SHOW enable_hashjoin").scalar_one() == "on"
    finally:
        engine.dispose()
