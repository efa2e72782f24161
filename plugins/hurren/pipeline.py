"""One extraction run of one hospital and one stream: extract → map codes → validate → load.

This is what a DAG task calls (``dags/*_reports.py``); it takes engines and clients, so tests
call it directly too. The invariant it keeps, and reports: every extracted master (or record)
is either loaded, unchanged (already in the store), stale (older than the stored version) or
quarantined with its reasons — ``extracted == loaded + unchanged + stale + quarantined`` for
every batch and for the run.

Windows: a scheduled run reads from the stream's watermark (less the source's overlap) to the
end of its data interval and moves the watermark with each committed batch. A backfill reads
exactly the window it is given and leaves the watermark alone (moving it from a past window
would skip the rows between).

The source's clock: no window reaches past the source's now plus its
``future_tolerance_minutes``. A row whose change time lies beyond that (a wrong clock, a
9999-12-31 placeholder) would never be in a window; so each scheduled run also reads that
future range, with the same queries, as batches of its own: every row in them is quarantined
(rule ``future_dtime``, naming the value and the source's now), counted as extracted and
quarantined and in ``future_rows``, and never moves the watermark. Once the source corrects the
row, a later window reads it and its quarantine entry is resolved. Rows between the window's
end and now plus the tolerance are read by a later run, as usual.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.engine import Engine

from hurren import extract, load, mapping, reports, spec, validation
from hurren.sources import STREAMS, Source

log = logging.getLogger(__name__)

Mode = Literal["incremental", "backfill"]

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
    backfill_since: datetime | None = None,
    options: spec.SpecOptions | None = None,
    validator: validation.Engine | None = None,
    max_quarantine_ratio: float = 1.0,
    now: datetime | None = None,
) -> RunSummary:
    """Extract, validate and load one window of ``stream`` from ``source`` into the store.

    ``until`` ends the window (Airflow's data interval end; aware values are converted to the
    source's time zone). With ``backfill_since`` the window is exactly [backfill_since, until)
    and the watermark does not move. No window ends after ``now`` (default: the current time)
    plus the source's ``future_tolerance_minutes``; a scheduled run quarantines the rows beyond
    (see the module's docstring). Raises :class:`QuarantineThresholdExceeded` after loading
    when more than ``max_quarantine_ratio`` of the extracted records were held (in a window of
    at least ``THRESHOLD_MIN_RECORDS``). The pandas engine decides each batch; ``validator``
    (default: the source's) ``"gx"`` adds GX results for the analysts, once over the run's batches
    at its end (:class:`hurren.validation.GxDay`, :func:`hurren.reports.keep_gx_day`).
    """
    d = STREAMS[stream]
    options = options or spec.SpecOptions()
    validator = validator or source.validator
    codes = mapping.mapping_for(source)
    clock = load.SourceClock(
        extract.to_source_time(now or datetime.now(UTC), source.tz),
        timedelta(minutes=source.future_tolerance_minutes),
    )
    with store_engine.connect() as conn:
        state = extract.read_cursor(conn, source, stream)  # type: ignore[arg-type]
    if backfill_since is not None:
        w = extract.backfill_window(backfill_since, until, tz=source.tz)
        cursor, mode = None, "backfill"
    else:
        w = extract.next_window(source, state, until)
        cursor, mode = state, "incremental"
    if w.until > clock.future_from:  # a row from there on is the source's clock problem, not data
        log.warning("%s/%s: the window ends at %s, after the source's now %s + %s min: read until then",
                    source.id, stream, w.until, clock.now, source.future_tolerance_minutes)  # fmt: skip
        w = replace(w, until=max(w.since, clock.future_from))
    summary = RunSummary(source.id, source.org_code, stream, mode, str(w.since), str(w.until))  # type: ignore[arg-type]
    run_pk = load.start_run(
        store_engine, run_id=run_id, dag_id=dag_id, source=source.id, stream=stream,
        interval_start=w.since, interval_end=w.until,
    )  # fmt: skip
    log.info("%s/%s: %s window [%s, %s)", source.id, stream, mode, w.since, w.until)
    try:
        with ExitStack() as stack:
            try:
                conn = stack.enter_context(extract.source_snapshot(source_engine, source))
            except load.db_errors() as exc:
                raise _source_error(exc, source, stream) from None
            gx_day = stack.enter_context(validation.GxDay()) if validator == "gx" else None
            read = extract.read_reports if d.item else extract.read_records
            for batch in _read(read(conn, source, stream, w.since, w.until), source, stream):  # type: ignore[operator]
                summary.batches += 1
                summary.counts += _load_batch(batch, d, codes, summary, options, gx_day, store_engine,
                                              source=source, run_id=run_id, pdfs=pdfs, run_pk=run_pk, cursor=cursor,
                                              clock=clock)  # fmt: skip
            if mode == "incremental":
                future = read(conn, source, stream, clock.future_from, None)  # no end: 9999-12-31 too  # type: ignore[operator]
                for batch in _read(future, source, stream):
                    summary.batches += 1
                    counts = _load_future(batch, d, store_engine, source=source, run_id=run_id, pdfs=pdfs,
                                          run_pk=run_pk, clock=clock)  # fmt: skip
                    summary.future_rows += counts.extracted
                    summary.errors_by_rule["future_dtime"] += counts.quarantined
                    summary.counts += counts
                if summary.future_rows:
                    log.warning(
                        "%s/%s: the source holds %s row(s) changed after its now %s + %s min (a wrong "
                        "clock?): quarantined as future_dtime until corrected", source.id, stream,
                        summary.future_rows, clock.now, source.future_tolerance_minutes,
                    )  # fmt: skip
            if gx_day is not None:
                summary.gx = reports.keep_gx_day(store_engine, gx_day, summary, source=source, run_id=run_id)
    except BaseException:
        load.finish_run(store_engine, run_pk, status="failed", details=summary.as_dict())
        raise
    load.finish_run(store_engine, run_pk, status="success", details=summary.as_dict())
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


def _source_error(exc: BaseException, source: Source, stream: str) -> extract.SourceReadError:
    return extract.SourceReadError(
        f"{source.id}/{stream}: reading the hospital database ({source.dialect}, connection {source.conn_id}) "
        f"failed: {load.db_error_summary(exc)}. What was loaded before stays, with the watermark after its "
        "last batch: a retry continues from there",
        exc,
    )


def _read(batches: Iterator[Any], source: Source, stream: str) -> Iterator[Any]:
    """The source's batches; a database error while reading one becomes a ``SourceReadError``
    (errors of the load, between two reads, pass through as they are)."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except load.db_errors() as exc:
            raise _source_error(exc, source, stream) from None
        yield batch


def _sweep(store_engine: Engine, pdfs: load.Pdfs, source: Source) -> None:
    """The source's PDFs of batches that never committed, once past the grace period; a failure
    only delays that (the next run sweeps again), it never fails a run that loaded its data."""
    try:
        removed = load.sweep_pdfs(store_engine, pdfs.client, source=source.id)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - logged; the objects stay pending for the next run
        log.warning("%s: sweeping uncommitted PDFs failed (%s: %s); the next run tries again",
                    source.id, type(exc).__name__, str(exc)[:200])  # fmt: skip
        return
    if removed:
        log.info("%s: removed %s PDF(s) of batches that never committed", source.id, removed)


def _load_future(
    batch: extract.ReportBatch | extract.RecordBatch, d: Any, store_engine: Engine, **load_args: Any
) -> load.LoadCounts:
    """A batch of the future range: not validated (the rows are not due yet; the corrected version
    is), every record held by the clock (``future_dtime``), and no watermark moved."""
    if isinstance(batch, extract.ReportBatch):
        return load.load_reports(store_engine, batch, cursor=None, **load_args)
    load_args.pop("pdfs")
    return load.load_records(store_engine, batch, cursor=None, **load_args)


def _load_batch(
    batch: extract.ReportBatch | extract.RecordBatch,
    d: Any,
    codes: mapping.CodeMapping | None,
    summary: RunSummary,
    options: spec.SpecOptions,
    gx_day: validation.GxDay | None,
    store_engine: Engine,
    **load_args: Any,
) -> load.LoadCounts:
    if isinstance(batch, extract.ReportBatch):
        batch = replace(
            batch,
            masters=_map(batch.masters, d.master, codes, summary),
            items=_map(batch.items, d.item, codes, summary),
        )
        verdicts = validation.validate_reports(
            batch.masters,
            batch.items,
            master_entity=d.master,
            options=options,
            engine="pandas",
            gx_day=gx_day,
        )
        holds = load.holds_from_verdicts(verdicts)
        counts = load.load_reports(store_engine, batch, holds=holds, **load_args)
    else:
        batch = replace(batch, records=_map(batch.records, d.master, codes, summary))
        verdicts = validation.validate_records(
            batch.records, entity=d.master, options=options, engine="pandas", gx_day=gx_day
        )
        holds = load.holds_from_verdicts(verdicts)
        load_args.pop("pdfs")
        counts = load.load_records(store_engine, batch, holds=holds, **load_args)
    reports.keep_validation(
        store_engine, verdicts, summary, source=load_args["source"], run_id=load_args["run_id"]
    )
    errors, warnings = _rule_counts(verdicts)
    summary.errors_by_rule.update(errors)
    summary.warnings_by_rule.update(warnings)
    return counts
