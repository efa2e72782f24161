"""hurren.incremental against a PostgreSQL store: the watermark and the whole runs of
tests/unit/test_incremental.py again, each on a fresh store database of its own, so the load takes
its COPY path and the watermark its row lock (``SELECT … FOR UPDATE``) as in production."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from hurren import store
from tests.unit.test_incremental import (  # noqa: F401 - collected here again, with this module's db
    hospital,
    test_a_backfill_reads_exactly_its_window_and_leaves_the_watermark_alone,
    test_a_failed_run_is_logged_failed_and_keeps_the_watermark_of_its_committed_batches,
    test_a_scheduled_run_logs_itself_and_moves_the_watermark_to_its_last_row,
    test_rows_beyond_the_sources_clock_are_quarantined_and_never_move_the_watermark,
    test_the_overlap_is_read_again_and_counts_as_unchanged,
    test_the_watermark_moves_only_when_its_transaction_commits_and_never_back,
)

pytestmark = pytest.mark.services


@pytest.fixture
def db(make_database) -> Iterator[Engine]:
    engine = create_engine(make_database("hurren_incremental"), pool_pre_ping=True)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    store.create_all(engine)
    yield engine
    engine.dispose()
