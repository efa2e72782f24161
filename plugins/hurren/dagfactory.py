"""The extraction DAGs, one per hospital and stream, built from the sources configuration.

A DAG file (``dags/lab_reports.py`` …) holds only its docs and one loop over the enabled
hospitals; everything here is wiring. Nothing touches a database at parse time: the sources
file is read (plain JSON), the rest happens inside the tasks.

Per hospital and stream, one DAG (``<stream>_reports__<source id>``), so that a hospital's
broken database fails only its own runs, each hospital keeps its own schedule and time zone,
and a backfill of one hospital is one CLI call. Its ``extract_validate_load`` task runs in the
hospital's pool (``Source.pool``: caps concurrent queries against that database across streams
and backfills) and updates the stream's Asset, which the push DAG consumes.

Every task resolves the site once (``hurren.site.site()``: sources, profile, rule book) and passes
what each component needs explicitly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, get_current_context, task

from hurren.sources import Source

STREAM_ASSETS = {
    "lab": Asset("hurren://store/lab_reports"),
    "exam": Asset("hurren://store/exam_reports"),
}
DEFAULT_ARGS = {
    "owner": "hurren",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}
START = datetime(2024, 1, 1)  # noqa: DTZ001 - pendulum-free; Airflow reads naive as UTC


def dag_id(stream: str, source: Source) -> str:
    return f"{stream}_reports__{source.id}"


def hospital_schedule(source: Source) -> str | CronDataIntervalTimetable | None:
    """The hospital's cron (or preset) in its time zone, as data intervals: each run covers the
    span since the previous fire, so a backfill (``airflow backfill create``) reads exactly its
    intervals. (A bare cron string would be Airflow 3's CronTriggerTimetable, in UTC, whose runs
    have empty intervals.) ``@once`` / ``@continuous`` / none stay as they are."""
    if source.schedule is None or source.schedule in ("@once", "@continuous"):
        return source.schedule
    return CronDataIntervalTimetable(source.schedule, timezone=source.timezone)


def hospital_dag(
    source: Source, *, dag_id: str, what: str, tag: str, doc_md: str, params: dict[str, Any]
) -> DAG:
    """A DAG of one hospital with the settings every hospital DAG shares: its schedule, one run
    at a time, no catch-up (the watermark catches up), our default args, tags to filter by."""
    return DAG(
        dag_id=dag_id,
        description=f"{source.org_name} ({source.org_code}): {what}",
        doc_md=doc_md,
        schedule=hospital_schedule(source),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["hurren", tag, f"org:{source.org_code}"],
        params=params,
    )


def prepare_store() -> None:
    """Create the store schema where it is missing and bring an older store's push state up to date
    (idempotent; before any hospital task)."""
    from hurren.clients import store_engine
    from hurren.push import outbox
    from hurren.site import site

    # store.create_all, then the outbox's keys and senders
    outbox.upgrade(store_engine(site().connected_settings()))


def extract_validate_load(source_id: str, stream: str) -> dict[str, Any]:
    """One window of one hospital's stream into the store; returns the run's counts."""
    from hurren import incremental, load, pipeline
    from hurren.clients import minio_client, store_engine
    from hurren.site import site
    from hurren.source_engines import source_engine

    ctx = get_current_context()
    here = site()
    source = here.sources.get(source_id)
    params, run = ctx["params"], ctx["dag_run"]
    backfill_since, until = incremental.airflow_window(ctx)
    summary = pipeline.run_stream(
        source=source,
        stream=stream,
        source_engine=source_engine(source.conn_id),
        store_engine=store_engine(connected := here.connected_settings()),
        pdfs=load.Pdfs(client=minio_client(connected), bucket=connected.s3_bucket_reports),
        run_id=run.run_id,
        dag_id=run.dag_id,
        until=until,
        backfill_since=backfill_since,
        options=here.spec_options,
        rulebook=here.rulebook,
        max_quarantine_ratio=float(params["max_quarantine_ratio"]),
    )
    return summary.as_dict()


def _window_params() -> dict[str, Param]:
    """An extraction DAG's params for a backfill window (``hurren.incremental.airflow_window``) and
    its quarantine threshold."""
    return {
        "since": Param(None, type=["null", "string"], description="backfill from (source local time, YYYY-MM-DD HH:MM:SS); leaves the watermark alone"),
        "until": Param(None, type=["null", "string"], description="backfill until (exclusive); default the run's data interval end"),
        "max_quarantine_ratio": Param(0.5, type="number", minimum=0, maximum=1, description="fail the task (after loading) when more than this share is quarantined"),
    }  # fmt: skip


def report_dag(source: Source, stream: str, *, doc_md: str) -> DAG:
    """The DAG that moves ``stream`` ("lab" or "exam") reports of ``source`` into the store."""
    with hospital_dag(
        source, dag_id=dag_id(stream, source), what=f"{stream} reports → municipal store", tag=stream, doc_md=doc_md,
        params=_window_params(),
    ) as dag:  # fmt: skip
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


# ============================================================================================
# PACS views, accept/quote records, daily counts (dags/pacs_views.py, dags/mutual_recognition_records.py,
# dags/daily_counts.py). Wiring only; the work is in hurren.pipeline, hurren.pacs, hurren.daily_counts.

PACS_ASSET = Asset("hurren://store/pacs")
RECORD_ASSETS = {
    "accept": Asset("hurren://store/accept_records"),
    "quote": Asset("hurren://store/quote_records"),
}
DAILY_COUNTS_ASSET = Asset("hurren://store/daily_counts")
PACS_CHUNK_SIZE = 50_000  # instance rows per batch: bench/bench_pacs.py (memory vs. GX's cost per batch)
BEIJING = "Asia/Shanghai"


def pacs_dag_id(source: Source) -> str:
    return f"pacs__{source.id}"


def records_dag_id(source: Source) -> str:
    return f"records__{source.id}"


def _run_scope(ctx: Any) -> str:
    """The etl run id of a task's rows: the DAG id with its run id (run ids alone repeat across
    hospitals' DAGs)."""
    return f"{ctx['dag_run'].dag_id}:{ctx['dag_run'].run_id}"


def load_stream(source_id: str, stream: str) -> dict[str, Any]:
    """One window of a record stream (PACS views, accept/quote records) into the store.

    As :func:`extract_validate_load`, plus the DAG's ``chunk_size`` (PACS instance rows come by
    the million: rows per batch bound the memory) and ``validator`` params; the rows written carry
    ``etl_run_id`` = ``<dag id>:<run id>``."""
    import dataclasses

    from hurren import incremental, pipeline
    from hurren.clients import store_engine
    from hurren.site import site
    from hurren.source_engines import source_engine

    ctx = get_current_context()
    here = site()
    source = here.sources.get(source_id)
    params = ctx["params"]
    if params.get("chunk_size"):
        source = dataclasses.replace(source, chunk_size=int(params["chunk_size"]))
    since, until = incremental.airflow_window(ctx)
    engine = store_engine(here.connected_settings())
    try:
        summary = pipeline.run_stream(
            source=source,
            stream=stream,
            source_engine=source_engine(source.conn_id),
            store_engine=engine,
            pdfs=None,
            run_id=_run_scope(ctx),
            dag_id=ctx["dag_run"].dag_id,
            until=until,
            backfill_since=since,
            options=here.spec_options,
            rulebook=here.rulebook,
            validator=params.get("validator"),  # None: the hospital's (sources configuration)
            max_quarantine_ratio=float(params["max_quarantine_ratio"]),
        )
    finally:
        engine.dispose()
    return summary.as_dict()


def reconcile_pacs(source_id: str) -> dict[str, Any]:
    """The PACS reconciliation of the hospital's last ``reconcile_days`` days (Beijing) up to the
    run's data interval end; the summary is the task's result and the ``etl_run`` row's details
    (stream ``pacs_recon``)."""
    from hurren import incremental, pacs, store
    from hurren.clients import store_engine
    from hurren.daily_counts import BEIJING as TZ
    from hurren.site import site

    ctx = get_current_context()
    here = site()
    source = here.sources.get(source_id)
    params, run = ctx["params"], ctx["dag_run"]
    _, until = incremental.airflow_window(ctx)
    last = (until.astimezone(TZ) if until.tzinfo else until) - timedelta(seconds=1)
    first_day, last_day = pacs.days_ending(last.date(), int(params["reconcile_days"]))
    engine = store_engine(here.connected_settings())
    try:
        store.create_reconciliation(engine)
        run_pk = incremental.start_run(engine, run_id=_run_scope(ctx), dag_id=run.dag_id, source=source.id, stream="pacs_recon",
                                       interval_start=datetime.combine(first_day, datetime.min.time()),
                                       interval_end=datetime.combine(last_day + timedelta(days=1), datetime.min.time()))  # fmt: skip
        try:
            summary = pacs.reconcile(engine, org_code=source.org_code, first_day=first_day, last_day=last_day,
                                     run_id=_run_scope(ctx))  # fmt: skip
        except BaseException:
            incremental.finish_run(engine, run_pk, status="failed")
            raise
        incremental.finish_run(engine, run_pk, status="success", details=summary.as_dict())
    finally:
        engine.dispose()
    return summary.as_dict()


def prepare_reconciliation() -> None:
    """The store schema, the reconciliation tables and their day indexes, where missing."""
    from hurren import store
    from hurren.clients import store_engine
    from hurren.site import site

    engine = store_engine(site().connected_settings())
    try:
        store.create_reconciliation(engine)
    finally:
        engine.dispose()


def _stream_params(chunk_size: int) -> dict[str, Param]:
    return {
        **_window_params(),
        "chunk_size": Param(chunk_size, type="integer", minimum=1, maximum=200_000, description="rows per batch (memory is bounded by one batch)"),
        "validator": Param(None, type=["null", "string"], enum=[None, "pandas", "gx"], description="GX results for this run: pandas (none; the pandas engine always decides) or gx (Great Expectations once over the run's batches at its end, for Data Docs); default the hospital's validator (sources configuration)"),
    }  # fmt: skip


def pacs_dag(source: Source, *, doc_md: str) -> DAG:
    """The DAG that moves ``source``'s PACS views into the store and reconciles them per study."""
    with hospital_dag(
        source, dag_id=pacs_dag_id(source), what="PACS v_web_jcjg / v_web_jctj → municipal store, per-study reconciliation", tag="pacs", doc_md=doc_md,
        params={
            **_stream_params(PACS_CHUNK_SIZE),
            "reconcile_days": Param(2, type="integer", minimum=1, maximum=366, description="days of studies reconciled, ending with the run's day (Beijing)"),
        },
    ) as dag:  # fmt: skip
        prepare = task(prepare_reconciliation, task_id="prepare_store")()
        loads = [
            task(
                load_stream,
                task_id=stream,
                pool=source.pool.name,
                outlets=[PACS_ASSET],
                execution_timeout=timedelta(hours=2),
            )(source_id=source.id, stream=stream)  # fmt: skip
            for stream in ("pacs_study", "pacs_instance")
            if stream in source.streams
        ]
        recon = task(reconcile_pacs, task_id="reconcile", execution_timeout=timedelta(hours=1))(
            source_id=source.id
        )
        prepare >> loads >> recon
    return dag


# --- accept / quote records -------------------------------------------------------------------


def push_records(source_id: str, stream: str) -> dict[str, Any]:
    """The hospital's queued accept or quote records to the platform now (``push_hospital``)."""
    from hurren.push.tasks import push_hospital
    from hurren.site import site
    from hurren.sources import STREAMS

    return push_hospital(STREAMS[stream].master, site().sources.get(source_id).org_code)


def records_dag(source: Source, *, doc_md: str) -> DAG:
    """The DAG that moves ``source``'s accept and quote records into the store and pushes them."""
    streams = [s for s in ("accept", "quote") if s in source.streams]
    with hospital_dag(
        source, dag_id=records_dag_id(source), what="accept/quote records → municipal store → SubmitAccept/SubmitQuote", tag="records", doc_md=doc_md,
        params=_stream_params(source.chunk_size),
    ) as dag:  # fmt: skip
        prepare = task(prepare_store, task_id="prepare_store")()
        for stream in streams:
            evl = task(load_stream, task_id=stream, pool=source.pool.name, outlets=[RECORD_ASSETS[stream]],
                       execution_timeout=timedelta(hours=1))(source_id=source.id, stream=stream)  # fmt: skip
            push = task(push_records, task_id=f"push_{stream}", execution_timeout=timedelta(hours=1))(
                source_id=source.id, stream=stream
            )
            prepare >> evl >> push
    return dag


# --- daily counts -------------------------------------------------------------------------------


def _count_days(ctx: Any) -> list[Any]:
    from hurren import daily_counts

    params, run = ctx["params"], ctx["dag_run"]
    if params.get("date"):
        last = datetime.strptime(params["date"], "%Y-%m-%d").date()
    else:
        last = daily_counts.report_day(ctx["logical_date"] or run.run_after)
    return daily_counts.days_to_count(last, int(params["recount_days"]))


def count_daily(source_id: str) -> list[dict[str, Any]]:
    """The hospital's daily counts of the run's day(s), from the store, into ``lab_exam_report``."""
    from hurren import daily_counts
    from hurren.clients import store_engine
    from hurren.site import site

    ctx = get_current_context()
    here = site()
    source = here.sources.get(source_id)
    engine = store_engine(here.connected_settings())
    try:
        return [
            daily_counts.compute_day(
                engine, org_code=source.org_code, day=day, run_id=_run_scope(ctx), options=here.spec_options
            ).as_dict()  # fmt: skip
            for day in _count_days(ctx)
        ]
    finally:
        engine.dispose()


def push_daily(source_id: str) -> dict[str, Any]:
    """The hospital's queued daily-count rows to the platform now (``push_hospital``): only rows
    whose counts changed since the platform acknowledged them are queued."""
    from hurren.push.tasks import push_hospital
    from hurren.site import site

    return push_hospital("lab_exam_report", site().sources.get(source_id).org_code)


def reconcile_daily(source_id: str) -> list[dict[str, Any]]:
    """Counts against what the platform acknowledged, per day (``daily_count_recon``)."""
    from hurren import daily_counts
    from hurren.clients import store_engine
    from hurren.site import site

    ctx = get_current_context()
    here = site()
    source = here.sources.get(source_id)
    engine = store_engine(here.connected_settings())
    try:
        return [daily_counts.reconcile_day(engine, org_code=source.org_code, day=day, options=here.spec_options)
                for day in _count_days(ctx)]  # fmt: skip
    finally:
        engine.dispose()


def daily_counts_dag(
    sources: list[Source], *, doc_md: str, cron: str = "0 3 * * *", timezone: str = BEIJING
) -> DAG:
    """One DAG for every hospital: per hospital count → push → reconcile, at ``cron`` in ``timezone``."""
    from airflow.sdk import CronTriggerTimetable, TaskGroup

    with DAG(
        dag_id="daily_counts",
        description="per hospital: yesterday's audited lab + exam reports by ordering department → ArchiveAutoReport (lab_exam_report)",
        doc_md=doc_md,
        schedule=CronTriggerTimetable(cron, timezone=timezone),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["hurren", "daily_counts", "platform"],
        params={
            "date": Param(
                None,
                type=["null", "string"],
                description="the day to count (YYYY-MM-DD, Beijing); default the day before the run",
            ),
            "recount_days": Param(
                3,
                type="integer",
                minimum=1,
                maximum=366,
                description="also recount this many days up to it (late reports); only changed days are sent again",
            ),
        },  # fmt: skip
    ) as dag:
        prepare = task(prepare_reconciliation, task_id="prepare_store")()
        for source in sources:
            with TaskGroup(group_id=source.id, tooltip=f"{source.org_name} ({source.org_code})"):
                count = task(count_daily, task_id="count", outlets=[DAILY_COUNTS_ASSET])(source_id=source.id)
                push = task(push_daily, task_id="push")(source_id=source.id)
                recon = task(reconcile_daily, task_id="reconcile")(source_id=source.id)
                prepare >> count >> push >> recon
    return dag
