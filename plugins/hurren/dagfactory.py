"""The extraction DAGs, one per hospital and stream, built from the sources configuration.

A DAG file (``dags/lab_reports.py`` …) holds only its docs and one loop over the enabled
hospitals; everything here is wiring. Nothing touches a database at parse time: the sources
file is read (plain JSON), the rest happens inside the tasks.

Per hospital and stream, one DAG (``<stream>_reports__<source id>``), so that a hospital's
broken database fails only its own runs, each hospital keeps its own schedule and time zone,
and a backfill of one hospital is one CLI call. Its ``extract_validate_load`` task runs in the
hospital's pool (``Source.pool``: caps concurrent queries against that database across streams
and backfills) and updates the stream's Asset, which the push DAG consumes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, get_current_context, task

from hurren.sources import Source

STREAM_ASSETS = {
    "lab": Asset("hurren://store/lab_reports"),
    "exam": Asset("hurren://store/exam_reports"),
}
DEFAULT_ARGS = {"owner": "hurren", "retries": 2, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True}
START = datetime(2024, 1, 1)  # noqa: DTZ001 - pendulum-free; Airflow reads naive as UTC


def dag_id(stream: str, source: Source) -> str:
    return f"{stream}_reports__{source.id}"


def prepare_store() -> None:
    """Create the store schema where it is missing (idempotent; before any hospital task)."""
    from hurren import store
    from hurren.connections import store_engine

    store.create_all(store_engine())


def extract_validate_load(source_id: str, stream: str) -> dict[str, Any]:
    """One window of one hospital's stream into the store; returns the run's counts."""
    from hurren import load, pipeline
    from hurren.connections import minio_client, store_engine
    from hurren.hooks import source_engine
    from hurren.settings import settings
    from hurren.sources import resolve_sources

    ctx = get_current_context()
    source = resolve_sources().get(source_id)
    params, run = ctx["params"], ctx["dag_run"]
    interval_start, interval_end = ctx["data_interval_start"], ctx["data_interval_end"]
    backfill_since, until = None, interval_end or run.run_after
    if params.get("since"):
        backfill_since = datetime.fromisoformat(params["since"])
        until = datetime.fromisoformat(params["until"]) if params.get("until") else until
    elif str(run.run_type).endswith("backfill") and interval_start is not None:
        backfill_since = interval_start
    summary = pipeline.run_stream(
        source=source,
        stream=stream,
        source_engine=source_engine(source.conn_id),
        store_engine=store_engine(),
        pdfs=load.Pdfs(client=minio_client(), bucket=settings().s3_bucket_reports),
        run_id=run.run_id,
        dag_id=run.dag_id,
        until=until,
        backfill_since=backfill_since,
        max_quarantine_ratio=float(params["max_quarantine_ratio"]),
    )
    return summary.as_dict()


def report_dag(source: Source, stream: str, *, doc_md: str) -> DAG:
    """The DAG that moves ``stream`` ("lab" or "exam") reports of ``source`` into the store."""
    with DAG(
        dag_id=dag_id(stream, source),
        description=f"{source.org_name} ({source.org_code}): {stream} reports → municipal store",
        doc_md=doc_md,
        schedule=source.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["hurren", stream, f"org:{source.org_code}"],
        params={
            "since": Param(None, type=["null", "string"], description="backfill from (source local time, YYYY-MM-DD HH:MM:SS); leaves the watermark alone"),
            "until": Param(None, type=["null", "string"], description="backfill until (exclusive); default the run's data interval end"),
            "max_quarantine_ratio": Param(0.5, type="number", minimum=0, maximum=1, description="fail the task (after loading) when more than this share is quarantined"),
        },
    ) as dag:
        prepare = task(prepare_store, task_id="prepare_store")()
        evl = task(
            extract_validate_load,
            task_id="extract_validate_load",
            pool=source.pool.name,
            outlets=[STREAM_ASSETS[stream]],
            execution_timeout=timedelta(hours=2),
        )(source_id=source.id, stream=stream)
        prepare >> evl
    return dag
