"""The store schema created by many tasks at once: on a new store the first runs of every
hospital start together, and each one's ``prepare_store`` calls ``store.create_all``. Without a
lock, PostgreSQL refuses all but one (``duplicate key value violates unique constraint
"pg_type_typname_nsp_index"``) and those tasks fail their first try (seen with the real
scheduler, tests/stack/test_scheduler.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, inspect

from hurren import store

pytestmark = pytest.mark.services


def test_concurrent_create_all_on_a_new_store(make_database):
    url = make_database("hurren_test_create")
    engines = [create_engine(url) for _ in range(6)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            list(pool.map(store.create_reconciliation, engines))  # raises the first error of any
        tables = set(inspect(engines[0]).get_table_names())
        assert {t.name for t in store.metadata.sorted_tables} <= tables
    finally:
        for e in engines:
            e.dispose()
