"""One extraction run of one hospital and one stream: extract → map codes → validate → load.

This is what a DAG task calls (``dags/*_reports.py``); it takes engines and clients, so tests
call it directly too. The invariant it keeps, and reports: every extracted master (or record)
is either loaded, unchanged (already in the store), stale (older than the stored version) or
quarantined with its reasons — ``extracted == loaded + unchanged + stale + quarantined`` for
every batch and for the run.

One run, top-down (:func:`run_stream`): :func:`hurren.incremental.run` plans the windows and
opens the run's ``etl_run`` row; each batch :mod:`hurren.extract` reads from the window is mapped
(:mod:`hurren.mapping`), validated (:mod:`hurren.validation`) and loaded (:mod:`hurren.load`),
whose transaction also adds the batch's counts to the run's row and moves the watermark (a
scheduled run's window only); a scheduled run then reads the future range, the rows beyond the
source's clock, and quarantines them (rule ``future_dtime``, naming the value and the source's
now; counted in ``future_rows``); the run's row ends with its summary. A batch's store part (its
transaction, then its validation results) runs in a thread of its own while the next batch is
read and validated (:class:`_InTurn`): one batch at a time and in their order, so the watermark
moves as before and no batch commits after one that failed. The windows, the overlap,
backfills and the clock are explained in :mod:`hurren.incremental`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection, Engine

from hurren import extract, incremental, load, mapping, pdf, reports, rules, spec, validation
from hurren.incremental import Mode
from hurren.sources import STREAMS, Source

log = logging.getLogger(__name__)

THRESHOLD_MIN_RECORDS = 20  # below this many records a run's quarantine share is noise, not a signal


class QuarantineThresholdExceeded(RuntimeError):
    """More of a run was quarantined than the configured share: the source needs a look.

    Everything valid was loaded and everything else is in quarantine before this is raised."""


@dataclass(slots=True)
class RunSummary:
    """What one run of (source, stream) did: the counts that prove nothing was lost."""

    source: str
    org_code: str
    stream: str
    mode: Mode
    since: str
    until: str
    batches: int = 0
    future_rows: int = 0  # rows with a change time beyond the source's clock: quarantined
    counts: load.LoadCounts = field(default_factory=load.LoadCounts)
    errors_by_rule: Counter[str] = field(default_factory=Counter)  # failures that held a record
    warnings_by_rule: Counter[str] = field(default_factory=Counter)
    mapped: Counter[str] = field(default_factory=Counter)  # local codes mapped to standard ones
    gx: dict[str, Any] | None = None  # GX once over the run (validator "gx"): calls, rows, disagreements

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (XCom, run details); carries counts and rule ids only, no patient data."""
        return {
            "source": self.source,
            "org_code": self.org_code,
            "stream": self.stream,
            "mode": self.mode,
            "window": [self.since, self.until],
            "batches": self.batches,
            "future_rows": self.future_rows,
            **self.counts.as_dict(),
            "errors_by_rule": dict(self.errors_by_rule),
            "warnings_by_rule": dict(self.warnings_by_rule),
            "mapped": dict(self.mapped),
            **({"gx": self.gx} if self.gx is not None else {}),
        }


def _rule_counts(verdicts: validation.Verdicts) -> tuple[Counter[str], Counter[str]]:
    f = verdicts.failures
    if f.empty:
        return Counter(), Counter()
    errors = Counter(f.loc[f["severity"] == "error", "rule"].tolist())
    warnings = Counter(f.loc[f["severity"] == "warning", "rule"].tolist())
    return errors, warnings


def _map(frame: Any, entity: str, codes: mapping.CodeMapping | None, summary: RunSummary) -> Any:
    if codes is None or frame.empty:
        return frame
    result = mapping.apply_mapping(frame, entity, codes)
    summary.mapped.update(result.mapped)
    return result.frame


def run_stream(
    *,
    source: Source,
    stream: str,
    source_engine: Engine,
    store_engine: Engine,
    pdfs: load.Pdfs | None,
    run_id: str,
    dag_id: str,
    until: datetime,
    options: spec.SpecOptions,
    rulebook: rules.RuleBook,
    backfill_since: datetime | None = None,
    validator: validation.Engine | None = None,
    max_quarantine_ratio: float = 1.0,
    now: datetime | None = None,
) -> RunSummary:
    """Extract, validate and load one window of ``stream`` from ``source`` into the store.

    ``until`` ends the window (Airflow's data interval end; aware values are converted to the
    source's time zone). With ``backfill_since`` the window is exactly [backfill_since, until)
    and the watermark does not move. No window ends after ``now`` (default: the current time)
    plus the source's ``future_tolerance_minutes``; a scheduled run quarantines the rows beyond
    (see the module's docstring; the windows are :func:`hurren.incremental.run`'s). Raises
    :class:`QuarantineThresholdExceeded` after loading when more than ``max_quarantine_ratio`` of
    the extracted records were held (in a window of at least ``THRESHOLD_MIN_RECORDS``).
    ``options`` and ``rulebook`` are the site's (``hurren.site``): the validation and the load
    follow them. The pandas engine decides each batch; ``validator`` (default: the source's)
    ``"gx"`` adds GX results for the analysts, once over the run's batches at its end
    (:class:`hurren.validation.GxDay`, :func:`hurren.reports.keep_gx_day`).
    """
    d = STREAMS[stream]
    validator = validator or source.validator
    codes = mapping.mapping_for(source)
    with incremental.run(store_engine, source=source, stream=stream, run_id=run_id, dag_id=dag_id, until=until,
                         backfill_since=backfill_since, now=now) as run, ExitStack() as stack:  # fmt: skip
        summary = RunSummary(
            source.id, source.org_code, stream, run.mode, str(run.window.since), str(run.window.until)
        )
        run.details = summary.as_dict  # etl_run's details when the run ends, however it ends
        conn = _connect(stack, source_engine, source, stream)
        gx_day = stack.enter_context(validation.GxDay(rulebook)) if validator == "gx" else None
        with _InTurn(summary) as in_turn:
            for batch in _read(conn, source, stream, run.window):
                in_turn.hand(_load_batch(batch, d, codes, summary, options, rulebook, gx_day, store_engine,
                                         source=source, run_id=run_id, pdfs=pdfs, run_pk=run.pk,
                                         cursor=run.cursor, clock=run.clock))  # fmt: skip
                del batch
        if run.future is not None:  # a scheduled run: the rows beyond the source's clock, quarantined
            for batch in _read(conn, source, stream, run.future):
                summary.batches += 1
                counts = _load_future(batch, d, store_engine, options, source=source, run_id=run_id, pdfs=pdfs,
                                      run_pk=run.pk, clock=run.clock)  # fmt: skip
                summary.future_rows += counts.extracted
                summary.errors_by_rule["future_dtime"] += counts.quarantined
                summary.counts += counts
            if summary.future_rows:
                log.warning(
                    "%s/%s: the source holds %s row(s) changed after its now %s + %s min (a wrong "
                    "clock?): quarantined as future_dtime until corrected", source.id, stream,
                    summary.future_rows, run.clock.now, source.future_tolerance_minutes,
                )  # fmt: skip
        if gx_day is not None:
            summary.gx = reports.keep_gx_day(store_engine, gx_day, summary, source=source, run_id=run_id)
    if pdfs is not None:
        _sweep(store_engine, pdfs, source)
    c = summary.counts
    log.info(
        "%s/%s: extracted %s, loaded %s, unchanged %s, stale %s, quarantined %s in %s batch(es); errors by "
        "rule %s", source.id, stream, c.extracted, c.loaded, c.unchanged, c.stale, c.quarantined,
        summary.batches, dict(summary.errors_by_rule),
    )  # fmt: skip
    if c.extracted >= THRESHOLD_MIN_RECORDS and c.quarantined / c.extracted > max_quarantine_ratio:
        raise QuarantineThresholdExceeded(
            f"{source.id}/{stream}: {c.quarantined} of {c.extracted} records quarantined "
            f"(over the allowed {max_quarantine_ratio:.0%}); the valid ones are loaded. Look at the "
            f"rules broken {dict(summary.errors_by_rule)} with the hospital, then re-run."
        )
    return summary


def _connect(stack: ExitStack, source_engine: Engine, source: Source, stream: str) -> Connection:
    """A connection that reads one snapshot of the source (``extract.source_snapshot``), closed with
    ``stack``; failing to connect is a ``SourceReadError``."""
    try:
        return stack.enter_context(extract.source_snapshot(source_engine, source))
    except load.db_errors() as exc:
        raise _source_error(exc, source, stream) from None


def _source_error(exc: BaseException, source: Source, stream: str) -> extract.SourceReadError:
    return extract.SourceReadError(
        f"{source.id}/{stream}: reading the hospital database ({source.dialect}, connection {source.conn_id}) "
        f"failed: {load.db_error_summary(exc)}. What was loaded before stays, with the watermark after its "
        "last batch: a retry continues from there",
        exc,
    )


def _read(conn: Connection, source: Source, stream: str, w: incremental.Window) -> Iterator[Any]:
    """The source's batches of ``w``; a database error while reading one becomes a
    ``SourceReadError`` (errors of the load, between two reads, pass through as they are)."""
    read = extract.read_reports if STREAMS[stream].item else extract.read_records
    batches = read(conn, source, stream, w.since, w.until)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except load.db_errors() as exc:
            raise _source_error(exc, source, stream) from None
        yield batch
        del batch  # one batch in memory at a time (here, in the caller's loop and in the reader)


def _sweep(store_engine: Engine, pdfs: load.Pdfs, source: Source) -> None:
    """The source's PDFs of batches that never committed, once past the grace period; a failure
    only delays that (the next run sweeps again), it never fails a run that loaded its data."""
    try:
        removed = load.sweep_pdfs(store_engine, pdfs.client, source=source.id)
    except Exception as exc:  # noqa: BLE001 - logged; the objects stay pending for the next run
        log.warning("%s: sweeping uncommitted PDFs failed (%s: %s); the next run tries again",
                    source.id, type(exc).__name__, str(exc)[:200])  # fmt: skip
        return
    if removed:
        log.info("%s: removed %s PDF(s) of batches that never committed", source.id, removed)


def _load_future(
    batch: extract.ReportBatch | extract.RecordBatch,
    d: Any,
    store_engine: Engine,
    options: spec.SpecOptions,
    **load_args: Any,
) -> load.LoadCounts:
    """A batch of the future range: not validated (the rows are not due yet; the corrected version
    is), every record held by the clock (``future_dtime``), and no watermark moved."""
    if isinstance(batch, extract.ReportBatch):
        return load.load_reports(store_engine, batch, cursor=None, options=options, **load_args)
    load_args.pop("pdfs")
    return load.load_records(store_engine, batch, cursor=None, **load_args)


def _load_batch(
    batch: extract.ReportBatch | extract.RecordBatch,
    d: Any,
    codes: mapping.CodeMapping | None,
    summary: RunSummary,
    options: spec.SpecOptions,
    rulebook: rules.RuleBook,
    gx_day: validation.GxDay | None,
    store_engine: Engine,
    **load_args: Any,
) -> Callable[[], load.LoadCounts]:
    """Map and validate one batch, stage it for the store; returns the store's part (the load,
    then the batch's validation results and rule counts), for :class:`_InTurn`."""
    if isinstance(batch, extract.ReportBatch):
        batch = replace(
            batch,  # the PDFs decoded and checked once, here; the frames carry no Base64 text from now on
            masters=_map(pdf.detach(batch.masters, "pdf", rulebook.pdf_max_bytes), d.master, codes, summary),
            items=_map(batch.items, d.item, codes, summary),
        )
        verdicts = validation.validate_reports(
            batch.masters,
            batch.items,
            master_entity=d.master,
            options=options,
            rulebook=rulebook,
            engine="pandas",
            gx_day=gx_day,
        )
        holds = load.holds_from_verdicts(verdicts)
        load_step = partial(load.load_reports, store_engine, batch, holds=holds, options=options, **load_args)
    else:
        batch = replace(batch, records=_map(batch.records, d.master, codes, summary))
        verdicts = validation.validate_records(
            batch.records, entity=d.master, options=options, rulebook=rulebook, engine="pandas", gx_day=gx_day
        )
        holds = load.holds_from_verdicts(verdicts)
        load_args.pop("pdfs")
        load_step = load.stage_records(store_engine, batch, holds=holds, **load_args)

    def store_part() -> load.LoadCounts:
        counts = load_step()
        reports.keep_validation(
            store_engine, verdicts, summary, source=load_args["source"], run_id=load_args["run_id"]
        )
        errors, warnings = _rule_counts(verdicts)
        summary.errors_by_rule.update(errors)
        summary.warnings_by_rule.update(warnings)
        return counts

    return store_part


class _InTurn:
    """The store's part of each batch, in one thread and in the batches' order, while the caller
    reads and validates the next batch: PostgreSQL's share of one batch (the upsert) overlaps our
    CPU's share of the next. At most one batch is in the store's hands: its counts (or its error)
    are taken before the next is handed over, so no batch commits after one that failed (the
    watermark)."""

    def __init__(self, summary: RunSummary) -> None:
        self._summary = summary
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hurren-store")
        self._pending: Future[load.LoadCounts] | None = None

    def hand(self, store_part: Callable[[], load.LoadCounts]) -> None:
        self.wait()
        self._summary.batches += 1
        self._pending = self._thread.submit(store_part)

    def wait(self) -> None:
        """Until the batch handed over is in the store; its error, if it failed, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._summary.counts += pending.result()

    def __enter__(self) -> _InTurn:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:  # the caller's error goes on; the batch handed over ends whole
                try:
                    self.wait()
                except Exception as exc:  # noqa: BLE001 - the caller's error is the one raised
                    log.warning("the batch before also failed: %s: %s", type(exc).__name__, str(exc)[:200])
        finally:
            self._thread.shutdown(wait=True)
