"""The PACS reconciliation right after a bulk load (PostgreSQL): the day's instances may have no
planner statistics yet (autovacuum gets to them within a minute or so), and without them PostgreSQL
takes the hospital's index and so reads the whole instance table once per ``IN`` list of 500 study
UIDs: 38.9 s instead of 5.5 s to reconcile a day of 2M instance rows loaded just before, autovacuum
off (``bench/bench_pacs.py``'s steps). ``store.analyze_stale`` analyzes what autovacuum would
analyze next, before the reconciliation reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from hurren import pacs, store

pytestmark = pytest.mark.services

ORG = "457759922"
ROWS, PER_STUDY = 200_000, 20
UIDS = [f"s{i}" for i in range(500)]  # one IN list of the reconciliation


def _indexes(plan: dict[str, Any]) -> list[str]:
    out = [plan["Index Name"]] if "Index Name" in plan else []
    for child in plan.get("Plans", []):
        out += _indexes(child)
    return out


def _instance_indexes(engine: Engine) -> list[str]:
    """The indexes PostgreSQL reads for the reconciliation's instance query on ``UIDS``."""
    sql = pacs._INSTANCES.params(org=ORG, uids=UIDS).compile(
        dialect=engine.dialect, compile_kwargs={"literal_binds": True}
    )
    with engine.connect() as conn:
        return _indexes(conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()[0]["Plan"])


def test_a_freshly_loaded_instance_table_is_analyzed_once_and_then_read_by_its_index(
    make_database: Callable[..., str],
) -> None:
    engine = create_engine(make_database("hurren_pacs_stats"))
    try:
        store.create_all(engine)
        with engine.begin() as conn:  # autovacuum left out, so that only analyze_stale can analyze
            conn.exec_driver_sql("ALTER TABLE pacs_instance SET (autovacuum_enabled = false)")
            conn.exec_driver_sql(
                "INSERT INTO pacs_instance (instancesopiuid, studiuiid, institutioncode, studydate, filesize, "
                "etl_content_hash) SELECT 'i' || i, 's' || (i / %s), %s, timestamp '2024-03-11 08:00:00', 1024, "
                "'h' FROM generate_series(1, %s) i",
                (PER_STUDY, ORG, ROWS),
            )
        with engine.connect() as conn:  # the load's changes counted in pg_stat_user_tables
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
            conn.commit()
        # no statistics: the hospital's index, as if the hospital were one of many (it is all the
        # table's rows: a 2M-row table read once per IN list, 0.9 s each)
        assert _instance_indexes(engine) == ["ix_pacs_instance_day"]

        assert store.analyze_stale(engine, pacs.READ_TABLES) == ["pacs_instance"]
        assert _instance_indexes(engine) == ["ix_pacs_instance_study"]  # the UIDs' rows only
        # analyzed now: the next reconciliation does not analyze again
        assert store.analyze_stale(engine, pacs.READ_TABLES) == []
        summary = pacs.reconcile(
            engine, org_code=ORG, first_day=date(2024, 3, 11), last_day=date(2024, 3, 11)
        )
        assert (summary.studies, summary.instances) == (ROWS // PER_STUDY + 1, ROWS)
    finally:
        engine.dispose()
