"""Validation of extracted batches against the spec: per-row verdicts, held reports, reasons.

One call validates one batch: a batch of reports (masters and their sub-items, e.g. ``labmaster``
+ ``lab_subitem``) with :func:`validate_reports`, or a batch of single-table records
(``lab_exam_report``, ``sehr_accept_record``, ``sehr_quote_record``, ``v_web_jcjg``,
``v_web_jctj``) with :func:`validate_records`. Both return :class:`Verdicts`.

Input: DataFrames whose columns are the spec field names and whose values are canonical strings
or missing (None/NaN). An empty string counts as missing (Oracle stores '' as NULL). Spec
columns absent from the frame count as missing; other columns are ignored, except a report
PDF's outcome column ``__pdf__<field>`` (with ``pdf_size``) when the extraction already checked
the PDF: then that outcome is read and the Base64 text is not.

The checks come from :func:`hurren.rules.plan` and are evaluated by one of two engines that agree
exactly on every rule (a test asserts it):

- ``engine="gx"``: Great Expectations 1.x. One ExpectationSuite per entity, generated from the
  plan and cached per process; each check is one expectation (``meta``: rule, check, entity,
  field) on the raw column where GX can express it, or on a derived column computed here in
  Arrow/numpy (byte lengths, check digits, PDFs, real calendar dates, cross-table links). One
  validation run per entity per call, over the whole batch, with ``result_format`` COMPLETE and
  the row id column ``__row`` as ``unexpected_index_column_names``. The run's
  ``ExpectationSuiteValidationResult`` is kept on the verdicts (``gx_results``) for Data Docs; it
  carries row ids and counts but no values (``exclude_unexpected_values``), so no patient
  identifier can leak through it.
- ``engine="pandas"``: the same tests as vectorised boolean masks over the prepared Arrow/numpy
  columns; the engine the pipeline decides every batch with.

The pipeline gives analysts GX results once per run, not per batch: with ``gx_day=``
(:class:`~hurren.validation.gx_day.GxDay`) each batch's prepared columns are staged to disk and
GX validates a run's batches at the end, its failing rows compared with the pandas engine's (a
hospital's ``validator`` ``"gx"`` in the sources configuration).

Cost (2-core machine, ``bench/bench_validation.py``, bench/README.md): the pandas engine decides
a chunk of 500 lab reports (~10.5k rows) at ≥ 150k rows/s, preparation and messages included.
GX pays ~12 ms per expectation per run whatever the row count (207 expectations for a lab batch:
~2.5 s per call, plus ~7 s for the import and suite build on a process's first call), then runs
~200k rows/s; so give it one big batch (thousands of reports), never one report at a time.
Preparing the derived columns is shared by both engines. The GX context quiets the
``great_expectations`` loggers (WARNING) for the whole process, and GX runs are serialised by a lock.

Records and reports are named by their record key (:func:`hurren.store.record_key` of the values
as given, missing values as null). A sub-item failure is filed under its master's key, so a held
report is held whole. An orphan sub-item (no master in the batch) is filed under the key its
master would have: the master entity's key array with the link values the item carries
(org_code, event_no, report_form_no) and null for the rest, e.g.
``["457759922", "14437173", null, null, "1878"]`` for labmaster; quarantine it under the master
entity with that key.

The package, by concept: :mod:`~hurren.validation.verdicts` (the outcome),
:mod:`~hurren.validation.derived` (normalisation and derived columns, shared by both engines),
:mod:`~hurren.validation.pandas_engine` and :mod:`~hurren.validation.gx_engine`,
:mod:`~hurren.validation.gx_day` (GX once per run over the staged batches), and
:mod:`~hurren.validation.messages` (failures and reasons).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from hurren import rules as R
from hurren import spec, store
from hurren.validation import pandas_engine
from hurren.validation.derived import (
    ROW_ID,
    STR,
    Frame,
    bools,
    calendar,
    derive,
    link_of,
    missing,
    normalize,
    outcome,
    record_keys,
)
from hurren.validation.exceptions import ValidationError
from hurren.validation.gx_day import Disagreement, GxDay, GxDayResult
from hurren.validation.gx_engine import RESULT_FORMAT, gx_context, gx_suite, run_gx
from hurren.validation.messages import FAILURE_COLUMNS, assemble, mask
from hurren.validation.verdicts import Engine, Verdicts

__all__ = [
    "FAILURE_COLUMNS",
    "RESULT_FORMAT",
    "ROW_ID",
    "STR",
    "Disagreement",
    "Engine",
    "GxDay",
    "GxDayResult",
    "ValidationError",
    "Verdicts",
    "gx_context",
    "gx_suite",
    "mask",
    "validate_records",
    "validate_reports",
]


def validate_reports(
    masters: pd.DataFrame,
    items: pd.DataFrame,
    *,
    master_entity: str,
    options: spec.SpecOptions,
    rulebook: R.RuleBook,
    engine: Engine = "gx",
    gx_day: GxDay | None = None,
) -> Verdicts:
    """Validate a batch of reports: the masters and all their sub-items, in one run per entity.
    With ``gx_day`` the prepared batch is also staged there for GX once per run."""
    rb = rulebook
    _check_engine(engine)
    m_ent = spec.entity(master_entity)
    if m_ent.kind != "report":
        raise ValidationError(f"{master_entity} is a {m_ent.kind}, not a report master; use validate_records")
    i_ent = spec.entity(R.item_entity_of(master_entity))
    stats: dict[str, Any] = {"rows": {m_ent.name: len(masters), i_ent.name: len(items)}}
    t0 = time.perf_counter()
    m_plan = R.plan(m_ent.name, options, pdf_max_bytes=rb.pdf_max_bytes)
    i_plan = R.plan(i_ent.name, options, pdf_max_bytes=rb.pdf_max_bytes)
    m_frame, i_frame = normalize(masters, m_ent), normalize(items, i_ent)

    link = R.link_columns(i_ent)
    m_link, i_link = link_of(m_frame, link), link_of(i_frame, link)
    # each item's master: the first master row with the same link values (null: an orphan)
    master_pos = pc.index_in(i_link, value_set=m_link, skip_nulls=True).to_numpy(zero_copy_only=False)
    master_pos = np.asarray(master_pos, dtype=float)
    has_master = ~np.isnan(master_pos)
    m_has_link = bools(pc.is_valid(m_link))
    has_items = bools(pc.is_in(m_link, value_set=i_link, skip_nulls=True))
    cross: dict[str, Any] = {
        "__has_items": outcome(m_has_link, has_items, "no_items"),
        "__has_master": outcome(np.ones(len(i_frame), bool), has_master, "orphan"),
    }
    m_epoch = (
        calendar(m_frame, R.MASTER_TIME_FIELD, R.DATETIME_RE)[2] if R.MASTER_TIME_FIELD in m_frame else None
    )
    for d in i_plan.derived:
        if d.kind == "drift":
            item_epoch = calendar(i_frame, d.source[0], R.DATETIME_RE)[2]
            master_epoch = np.full(len(i_frame), np.nan)
            if m_epoch is not None:
                master_epoch[has_master] = m_epoch[master_pos[has_master].astype(np.int64)]
            cross[d.name] = np.abs(item_epoch - master_epoch)
    derive(m_frame, m_plan, options, cross)
    derive(i_frame, i_plan, options, cross)
    stats["prepare_s"] = time.perf_counter() - t0

    m_keys = record_keys(masters, m_ent)
    i_keys = np.empty(len(i_frame), dtype=object)
    i_keys[has_master] = m_keys.to_numpy()[master_pos[has_master].astype(np.int64)]
    orphans = np.flatnonzero(~has_master)
    if orphans.size:  # filed under the key their master would have: link values, null for the rest
        raw = items.iloc[orphans]
        values = {k: raw[k].tolist() if k in raw.columns else [None] * orphans.size for k in link}
        for j, p in enumerate(orphans.tolist()):
            row = {k: (None if k not in values or missing(values[k][j]) else values[k][j]) for k in m_ent.key}
            i_keys[p] = store.record_key(m_ent, row)
    i_keys_s = pd.Series(i_keys, index=items.index, dtype=object)

    t1 = time.perf_counter()
    hits, results = {}, {}
    for plan_, frame in ((m_plan, m_frame), (i_plan, i_frame)):
        hits[plan_.entity], res = _run(engine, frame, plan_, rb)
        if res is not None:
            results[plan_.entity] = res
    stats["engine_s"] = time.perf_counter() - t1
    if gx_day is not None:
        gx_day.add([(m_plan, m_frame, hits[m_ent.name]), (i_plan, i_frame, hits[i_ent.name])])

    t2 = time.perf_counter()
    item_extra = [k for k in i_ent.key if k not in link]
    failures, labels = assemble(
        [
            (m_plan, m_frame, masters, hits[m_ent.name], m_keys.to_numpy(), ()),
            (i_plan, i_frame, items, hits[i_ent.name], i_keys, tuple(item_extra)),
        ],
        rb,
    )
    stats["assemble_s"] = time.perf_counter() - t2
    stats["expectations"] = {m_ent.name: len(m_plan.checks), i_ent.name: len(i_plan.checks)}
    held = frozenset(failures.loc[failures["severity"] == "error", "record_key"].unique())
    return Verdicts(
        entity=m_ent.name,
        item_entity=i_ent.name,
        engine=engine,
        failures=failures,
        held_keys=held,
        gx_results=results,
        stats=stats,
        _keys=lambda: m_keys,
        _item_keys=i_keys_s,
        _labels=labels,
    )


def validate_records(
    rows: pd.DataFrame,
    *,
    entity: str,
    options: spec.SpecOptions,
    rulebook: R.RuleBook,
    engine: Engine = "gx",
    gx_day: GxDay | None = None,
) -> Verdicts:
    """Validate a batch of single-table records (daily counts, accept/quote records, PACS views).
    With ``gx_day`` the prepared batch is also staged there for GX once per run."""
    rb = rulebook
    _check_engine(engine)
    ent = spec.entity(entity)
    if ent.kind in ("report", "item"):
        raise ValidationError(f"{entity} is part of a report; validate it with validate_reports")
    t0 = time.perf_counter()
    plan_ = R.plan(ent.name, options, pdf_max_bytes=rb.pdf_max_bytes)
    frame = normalize(rows, ent)
    derive(frame, plan_, options, {})
    stats: dict[str, Any] = {"rows": {ent.name: len(rows)}, "prepare_s": time.perf_counter() - t0}
    t1 = time.perf_counter()
    hits, res = _run(engine, frame, plan_, rb)
    stats["engine_s"] = time.perf_counter() - t1
    if gx_day is not None:
        gx_day.add([(plan_, frame, hits)])

    failing = np.unique(np.concatenate([v for v in hits.values()] or [np.empty(0, np.int64)]))
    keys = np.empty(len(frame), dtype=object)
    if failing.size:
        keys[failing] = record_keys(rows.iloc[failing], ent).to_numpy()
    t2 = time.perf_counter()
    failures, labels = assemble([(plan_, frame, rows, hits, keys, ())], rb)
    stats["assemble_s"] = time.perf_counter() - t2
    stats["expectations"] = {ent.name: len(plan_.checks)}
    held = frozenset(failures.loc[failures["severity"] == "error", "record_key"].unique())
    return Verdicts(
        entity=ent.name,
        item_entity=None,
        engine=engine,
        failures=failures,
        held_keys=held,
        gx_results={ent.name: res} if res is not None else {},
        stats=stats,
        _keys=lambda: record_keys(rows, ent),
        _item_keys=None,
        _labels=labels,
    )


def _check_engine(engine: str) -> None:
    if engine not in ("gx", "pandas"):
        raise ValidationError(f"engine must be 'gx' or 'pandas', got {engine!r}")


def _run(engine: Engine, frame: Frame, plan_: R.Plan, rb: R.RuleBook) -> tuple[dict[str, np.ndarray], Any]:
    if len(frame) == 0:
        return {c.id: np.empty(0, np.int64) for c in plan_.checks}, None
    if engine == "pandas":
        return pandas_engine.run(frame, plan_), None
    return run_gx(frame, plan_, rb)
