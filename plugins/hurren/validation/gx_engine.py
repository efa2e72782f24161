"""The Great Expectations engine: one ExpectationSuite per entity, generated from the plan.

Each check is one expectation (``meta``: rule, check, entity, field, check_id) on the raw column
where GX can express it, or on a derived column (:mod:`hurren.validation.derived`). One validation
run per entity per call (:func:`run_gx`, one batch; :mod:`hurren.validation.gx_day`, a run's
batches at once), with ``result_format`` COMPLETE and the row id column ``__row`` as
``unexpected_index_column_names``; the result carries row ids and counts but no values
(``exclude_unexpected_values``, then :func:`_scrub`), so no patient identifier leaks through it.
Uniqueness holds within a pipeline batch (the rows one run of the pandas engine decides): the
compound key of each uniqueness expectation starts with the batch number ``__batch``, so a run
over many batches checks what one over each batch did. The GX context quiets the ``great_expectations`` loggers (WARNING) for the whole process, and GX
runs are serialised by a lock.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from hurren import rules as R
from hurren import spec
from hurren.validation.derived import ROW_ID, Frame
from hurren.validation.exceptions import ValidationError

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "return_unexpected_index_query": False,
    "exclude_unexpected_values": True,  # row ids and counts only: no values, no identifiers
    "partial_unexpected_count": 20,
}
BATCH_ID = "__batch"  # the pipeline batch a row came from: uniqueness holds within one
_VALUE_KEYS = ("partial_unexpected_list", "unexpected_list", "partial_unexpected_counts", "unexpected_rows")


_GX_LOCK = threading.RLock()
_GX_STATE: dict[str, Any] = {}
_GX_SUITES: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def gx_context() -> tuple[Any, Any]:
    """One ephemeral GX context per process: no progress bars, no analytics, quiet loggers."""
    if "ctx" not in _GX_STATE:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)  # before the import logs
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        for name, obj in list(logging.root.manager.loggerDict.items()):  # some set their own level
            if name.startswith("great_expectations.") and isinstance(obj, logging.Logger) and obj.level:
                obj.setLevel(max(obj.level, logging.WARNING))

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        with _quiet():
            ctx = gx.get_context(mode="ephemeral", project_config=config)
            _GX_STATE["ds"] = ctx.data_sources.add_pandas(name="hurren_validation")
        _GX_STATE["ctx"] = ctx
        _GX_STATE["assets"] = {}
    return _GX_STATE["ctx"], _GX_STATE["ds"]


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", module="great_expectations")
        yield


@contextmanager
def _configurations_once() -> Iterator[None]:
    """Within one GX validation (under ``_GX_LOCK``), each expectation's ``configuration`` built
    once. GX 1.x rebuilds it (a pydantic ``dict()`` and a new ExpectationConfiguration) for every
    kwarg it looks up while planning the validation: that was ~40 % of its fixed cost per
    expectation, paid per GX call. Nothing in GX changes what the property returns (it makes a
    new object each time); the results are the same with and without (``tests/unit/test_validation_gx_day.py``)."""
    from great_expectations.expectations.expectation import Expectation

    built = Expectation.__dict__["configuration"]
    cache: dict[int, tuple[Any, Any]] = {}

    def configuration(self: Any) -> Any:
        if id(self) not in cache:
            cache[id(self)] = (self, built.fget(self))  # self kept alive: its id is not reused meanwhile
        return cache[id(self)][1]

    Expectation.configuration = property(configuration)
    try:
        yield
    finally:
        Expectation.configuration = built


def gx_suite(plan_: R.Plan, rb: R.RuleBook) -> tuple[Any, Any]:
    """The (ExpectationSuite, whole-dataframe BatchDefinition) of an entity, built once per
    process for each plan and rule book."""
    key = (plan_.entity, plan_.fingerprint, rb.fingerprint)
    with _GX_LOCK:
        if key in _GX_SUITES:
            return _GX_SUITES[key]
        ctx, ds = gx_context()  # first: it quiets GX's loggers before GX is imported
        import great_expectations as gx

        assets = _GX_STATE["assets"]
        if plan_.entity not in assets:
            asset = ds.add_dataframe_asset(name=plan_.entity)
            assets[plan_.entity] = asset.add_batch_definition_whole_dataframe(f"{plan_.entity}_whole_batch")
        with _quiet():
            # All at once: add_expectation() compares each new expectation with every one
            # already in the suite (quadratic, ~14 ms each at 150 expectations).
            suite = gx.ExpectationSuite(
                name=f"hurren.{plan_.entity}.{plan_.fingerprint}.{rb.fingerprint}",
                expectations=[_gx_expectation(c, rb) for c in plan_.checks],
                meta={"entity": plan_.entity, "generated_by": "hurren.validation", "rules": rb.fingerprint},
            )
            if len(suite.expectations) != len(plan_.checks):
                raise ValidationError(
                    f"{plan_.entity}: {len(plan_.checks)} checks became {len(suite.expectations)} expectations"
                )
            suite = ctx.suites.add(suite)
        _GX_SUITES[key] = (suite, assets[plan_.entity])
        return _GX_SUITES[key]


def _gx_expectation(c: R.Check, rb: R.RuleBook) -> Any:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.row_conditions import Column

    severity = rb.severity(c.rule, c.entity, c.field)
    text = rb.rules[c.rule]
    common: dict[str, Any] = {
        "meta": {
            "rule": c.rule,
            "check": c.check or "(outcome)",
            "entity": c.entity,
            "field": c.field,
            "check_id": c.id,
            "severity": severity,
            "title_zh": text.title_zh,
        },
        "severity": FailureSeverity.CRITICAL if severity == "error" else FailureSeverity.WARNING,
        "description": f"{c.rule}: {text.title_en} ({c.entity}.{c.field})",
    }

    def cond(w: R.When | None) -> dict[str, Any]:
        return {} if w is None else {"row_condition": Column(w.column) == w.value}

    match c.test:
        case R.NotNull(column=col, when=w):
            return gxe.ExpectColumnValuesToNotBeNull(column=col, **cond(w), **common)
        case R.IsNull(column=col, when=w):
            return gxe.ExpectColumnValuesToBeNull(column=col, **cond(w), **common)
        case R.InSet(column=col, values=values):
            return gxe.ExpectColumnValuesToBeInSet(column=col, value_set=list(values), **common)
        case R.Matches(column=col, pattern=p, when=w):
            return gxe.ExpectColumnValuesToMatchRegex(column=col, regex=p, **cond(w), **common)
        case R.NotMatches(column=col, pattern=p):
            return gxe.ExpectColumnValuesToNotMatchRegex(column=col, regex=p, **common)
        case R.MaxChars(column=col, limit=limit):
            return gxe.ExpectColumnValueLengthsToBeBetween(column=col, max_value=limit, **common)
        case R.AtMost(column=col, limit=limit):
            return gxe.ExpectColumnValuesToBeBetween(column=col, max_value=limit, **common)
        case R.Outcome(column=col):
            return gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[R.OK], **common)
        case R.UniqueTogether(columns=cols):  # unique within a pipeline batch: its number is in the key
            return gxe.ExpectCompoundColumnsToBeUnique(
                column_list=[BATCH_ID, *cols], ignore_row_if="any_value_is_missing", **common
            )
        case R.NotLess(a=a, b=b):
            return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing", **common
            )
    raise ValidationError(f"no GX expectation for {c.test!r}")


def gx_columns(plan_: R.Plan) -> list[str]:
    """The prepared columns GX reads for ``plan_`` (the row id, the raw spec columns its tests read and
    its derived columns: never a PDF's Base64 text, only its outcome)."""
    return [ROW_ID, *plan_.columns, *(d.name for d in plan_.derived)]


def run_gx(frame: Frame, plan_: R.Plan, rb: R.RuleBook) -> tuple[dict[str, np.ndarray], Any]:
    """One GX validation run of the whole batch of one entity."""
    data = frame.to_pandas(gx_columns(plan_))
    data[BATCH_ID] = np.zeros(len(data), dtype=np.int32)
    return validate_gx(data, plan_, rb)


def validate_gx(data: pd.DataFrame, plan_: R.Plan, rb: R.RuleBook) -> tuple[dict[str, np.ndarray], Any]:
    """One GX validation run over ``data`` (the :func:`gx_columns` of one entity and the pipeline
    batch number :data:`BATCH_ID`, possibly of many batches): the failing row ids (``__row``) of
    every check, and the scrubbed result."""
    suite, batch_definition = gx_suite(plan_, rb)
    with _GX_LOCK, _quiet(), _configurations_once():
        batch = batch_definition.get_batch(batch_parameters={"dataframe": data})
        result = batch.validate(suite, result_format=RESULT_FORMAT)
    by_id = {c.id: c for c in plan_.checks}
    hits: dict[str, np.ndarray] = {}
    for r in result.results:
        cid = (r.expectation_config.meta or {}).get("check_id")
        if cid not in by_id:
            raise ValidationError(
                f"GX returned a result for an unknown expectation: {r.expectation_config.type}"
            )
        if _raised(r.exception_info):
            raise ValidationError(f"GX could not evaluate {cid}: {_exception_text(r.exception_info)}")
        rows = _unexpected_rows(r.result or {})
        expected = (r.result or {}).get("unexpected_count") or 0
        if len(rows) != expected:
            raise ValidationError(f"GX result for {cid}: {expected} unexpected, {len(rows)} row ids")
        hits[cid] = rows
    missing = sorted(set(by_id) - set(hits))
    if missing:
        raise ValidationError(f"GX returned no result for {missing}")
    _scrub(result)
    return hits, result


def _raised(info: Any) -> bool:
    if not info:
        return False
    if "raised_exception" in info:
        return bool(info["raised_exception"])
    return any(_raised(v) for v in info.values() if isinstance(v, Mapping))


def _exception_text(info: Mapping[str, Any]) -> str:
    if "exception_message" in info:
        return str(info["exception_message"])
    return "; ".join(_exception_text(v) for v in info.values() if isinstance(v, Mapping) and _raised(v))


def _unexpected_rows(result: Mapping[str, Any]) -> np.ndarray:
    """Row ids from unexpected_index_list: [{'__row': [ids]}] (values excluded) or one dict per row."""
    ids: list[int] = []
    for entry in result.get("unexpected_index_list") or ():
        v = entry[ROW_ID] if isinstance(entry, Mapping) else entry
        if isinstance(v, list | tuple | np.ndarray):
            ids.extend(int(x) for x in v)
        else:
            ids.append(int(v))
    return np.unique(np.asarray(ids, dtype=np.int64))


def _scrub(result: Any) -> None:
    """Leave no value of a patient identifier in the stored GX result (defence in depth: the
    result format already excludes values)."""
    for r in result.results:
        meta = r.expectation_config.meta or {}
        fields_ = set(str(meta.get("field", "")).split(","))
        res = r.result or {}
        if fields_ & spec.PATIENT_IDENTIFIERS or meta.get("rule", "").startswith("id_"):
            for k in _VALUE_KEYS:
                res.pop(k, None)
            for k in ("unexpected_index_list", "partial_unexpected_index_list"):
                if k in res:
                    res[k] = [
                        {ROW_ID: e[ROW_ID]} if isinstance(e, Mapping) and ROW_ID in e else e for e in res[k]
                    ]
