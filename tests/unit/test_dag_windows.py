"""The window a hospital task reads, from its run (``hurren.incremental.airflow_window``), with the
run types the task SDK hands a task: a backfill reads its data interval (before, the SDK's
``DagRunType.BACKFILL`` printed as "DagRunType.BACKFILL" and was taken for a scheduled run, so
``airflow backfill create`` read from the watermark instead: tests/stack/test_scheduler.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType

from hurren.incremental import airflow_window as _window

START, END = datetime(2024, 3, 10, 16, tzinfo=UTC), datetime(2024, 3, 11, 16, tzinfo=UTC)


def _ctx(run_type: DagRunType, **params: str) -> dict:
    run = SimpleNamespace(run_type=run_type, run_after=datetime(2026, 1, 1, tzinfo=UTC))
    return {"params": params, "dag_run": run, "data_interval_start": START, "data_interval_end": END}


def test_a_backfill_run_reads_its_data_interval() -> None:
    assert _window(_ctx(DagRunType.BACKFILL)) == (START, END)


@pytest.mark.parametrize("run_type", [DagRunType.SCHEDULED, DagRunType.MANUAL, DagRunType.ASSET_TRIGGERED])
def test_other_runs_read_from_the_watermark_to_the_interval_end(run_type: DagRunType) -> None:
    assert _window(_ctx(run_type)) == (None, END)


def test_params_since_until_win() -> None:
    since, until = _window(_ctx(DagRunType.MANUAL, since="2024-02-01 00:00:00", until="2024-02-02 00:00:00"))
    assert (since, until) == (datetime(2024, 2, 1), datetime(2024, 2, 2))
