"""Validation results kept for analysts: one row per hospital, day, stream and entity.

The extraction task calls :func:`keep_validation` once per validated batch (the hook in
``hurren.pipeline._load_batch``) and, for a hospital validated with GX, :func:`keep_gx_day` once
at the end of the run (GX over the run's batches at once). They fold into the row of its
hospital-day:

- ``summary``: rows validated, and per rule how many rows (and, on the master entity's row, how
  many reports/records) broke it; the daily scorecard is drawn from these counts;
- ``gx_result``: the Great Expectations result (``Verdicts.gx_results``) of the entity, slimmed
  to counts (no unexpected values, no row ids: :func:`slim`) and merged with the day's earlier
  batches expectation by expectation (:func:`merge`): Data Docs render one page per row;
- ``summary.gx_disagreements``: where GX's failing rows differed from the pandas verdicts (never
  expected; logged as errors too).

Why this granularity: Data Docs slow down with thousands of validation results (each batch of
each 30-minute run would be one); a hospital-day has a handful of rows whatever the number of
runs and batches, each hospital-day gets its own small Data Docs index, and the overall index is
one indexed query over this table. A window re-read by a later run (overlap, re-run, backfill)
is counted again: the counts are "validations performed that day", the rates stay rates.

The day is the *data day*: the source-local date of the end of the run's window (minus one
microsecond: a nightly run up to 00:00 fills the day before). Retention (:func:`prune_results`)
drops the GX results of days older than N days and keeps the small summaries for the scorecard.

The table lives in its own :class:`~sqlalchemy.MetaData` (``hurren.store`` holds the spec's and
the pipeline's tables) and is created on first use (:func:`ensure_table`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)

metadata = MetaData()

validation_result = Table(
    "etl_validation_result",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("org_code", String(128), nullable=False),
    Column("org_name", String(256)),
    Column("source", String(128), nullable=False),
    Column("stream", String(64), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("master_entity", String(64), nullable=False, comment="the report/record entity of the batch"),
    Column("day", Date, nullable=False, comment="data day: source-local date of the window's end"),
    Column("batches", Integer, nullable=False, server_default="0"),
    Column(
        "row_count", BigInteger, nullable=False, server_default="0", comment="rows of this entity validated"
    ),
    Column("summary", Text, nullable=False, comment="JSON: rows (and records) failing per rule; no values"),
    Column(
        "gx_result",
        Text,
        comment="JSON: slimmed, merged GX ExpectationSuiteValidationResult; NULL once pruned",
    ),
    Column("suite_name", String(250)),
    Column("last_run_id", String(250)),
    Column("first_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("org_code", "source", "stream", "entity", "day", name="uq_etl_validation_result"),
    Index("ix_etl_validation_result_day", "day", "org_code"),
    comment="validation results per hospital, day, stream and entity, for Data Docs and the scorecard",
)

# the counts GX computes for a column map expectation; everything else (values, row ids) goes
_COUNT_KEYS = (
    "element_count",
    "unexpected_count",
    "missing_count",
)
_CREATED: set[str] = set()
_CREATED_LOCK = threading.Lock()


class ReportsError(RuntimeError):
    """The reports could not be built or read; the message says what to fix."""


def ensure_table(engine: Engine) -> None:
    """Create ``etl_validation_result`` where missing (once per engine URL and process)."""
    key = engine.url.render_as_string(hide_password=True)
    if key in _CREATED:
        return
    with _CREATED_LOCK:
        if key not in _CREATED:
            metadata.create_all(engine, checkfirst=True)
            _CREATED.add(key)


def data_day(until: str | datetime) -> date:
    """The data day of a window ending at ``until`` (naive, source-local): the day of the last
    instant inside the window."""
    end = until if isinstance(until, datetime) else datetime.fromisoformat(str(until))
    return (end - timedelta(microseconds=1)).date()


# --- slimming and merging GX results ----------------------------------------------------------


def slim(result: Mapping[str, Any]) -> dict[str, Any]:
    """A GX ExpectationSuiteValidationResult (``to_json_dict()``) reduced to what Data Docs
    need: expectation configurations, success and counts. No unexpected values, no partial
    lists, no row ids, no query: nothing in it comes from a row's content."""
    out_results = []
    for r in result.get("results") or ():
        cfg = dict(r.get("expectation_config") or {})
        kwargs = {k: v for k, v in (cfg.get("kwargs") or {}).items() if k != "batch_id"}
        counts = {k: (r.get("result") or {}).get(k) for k in _COUNT_KEYS}
        info = r.get("exception_info") or {}
        out_results.append(
            {
                "success": bool(r.get("success")),
                "expectation_config": {
                    "type": cfg.get("type"),
                    "kwargs": kwargs,
                    "meta": dict(cfg.get("meta") or {}),
                    "description": cfg.get("description"),
                    "severity": cfg.get("severity") or "critical",
                    "id": cfg.get("id"),
                },
                "result": _with_percents({k: int(v or 0) for k, v in counts.items()}),
                "exception_info": {
                    "raised_exception": bool(info.get("raised_exception")),
                    "exception_message": info.get("exception_message")
                    if info.get("raised_exception")
                    else None,
                    "exception_traceback": None,
                },
            }
        )
    meta = result.get("meta") or {}
    slimmed = {
        "suite_name": result.get("suite_name"),
        "results": out_results,
        "meta": {
            "great_expectations_version": meta.get("great_expectations_version"),
            "active_batch_definition": {
                k: v
                for k, v in (meta.get("active_batch_definition") or {}).items()
                if k != "batch_identifiers"
            },
        },
    }
    return _restat(slimmed)


def _with_percents(c: dict[str, int]) -> dict[str, Any]:
    n, bad, missing = c["element_count"], c["unexpected_count"], c["missing_count"]
    nonmissing = n - missing
    return {
        **c,
        "unexpected_percent": 100.0 * bad / nonmissing if nonmissing else 0.0,
        "unexpected_percent_total": 100.0 * bad / n if n else 0.0,
        "unexpected_percent_nonmissing": 100.0 * bad / nonmissing if nonmissing else 0.0,
        "missing_percent": 100.0 * missing / n if n else 0.0,
    }


def _restat(res: dict[str, Any]) -> dict[str, Any]:
    results = res["results"]
    ok = sum(1 for r in results if r["success"])
    res["success"] = ok == len(results)
    res["statistics"] = {
        "evaluated_expectations": len(results),
        "successful_expectations": ok,
        "unsuccessful_expectations": len(results) - ok,
        "success_percent": 100.0 * ok / len(results) if results else None,
    }
    return res


def _expectation_key(r: Mapping[str, Any]) -> str:
    cfg = r["expectation_config"]
    return str(
        (cfg.get("meta") or {}).get("check_id")
        or json.dumps([cfg.get("type"), cfg.get("kwargs")], sort_keys=True)
    )


def merge(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Two slimmed results of the same suite as one: counts added expectation by expectation,
    an expectation succeeds when it succeeded in both. A changed suite (rules changed during the
    day) keeps the expectations of both, counted separately."""
    if not old:
        return json.loads(json.dumps(new))
    merged = {_expectation_key(r): json.loads(json.dumps(r)) for r in old["results"]}
    for r in new["results"]:
        k = _expectation_key(r)
        if k not in merged:
            merged[k] = json.loads(json.dumps(r))
            continue
        m = merged[k]
        counts = {c: int(m["result"].get(c) or 0) + int(r["result"].get(c) or 0) for c in _COUNT_KEYS}
        m["result"] = _with_percents(counts)
        m["success"] = bool(m["success"] and r["success"])
        if r["exception_info"].get("raised_exception"):
            m["exception_info"] = r["exception_info"]
    out = {
        "suite_name": new.get("suite_name") or old.get("suite_name"),
        "results": list(merged.values()),
        "meta": dict(new.get("meta") or old.get("meta") or {}),
    }
    return _restat(out)


# --- per-rule counts from verdicts ------------------------------------------------------------


def _applicable_rules(entity: str) -> list[str]:
    from hurren import rules as R
    from hurren import spec

    # which rules apply to an entity does not depend on the site's profile (only how they check)
    return sorted({c.rule for c in R.plan(entity, spec.DEFAULT_OPTIONS).checks})


def summarize(verdicts: Any) -> dict[str, dict[str, Any]]:
    """Per entity of the batch: rows validated and, per rule, rows that broke it; on the
    master/record entity also the reports/records (distinct record keys) validated, held, and
    breaking each rule. Counts only: no key, no value."""
    failures = verdicts.failures
    entities = [verdicts.entity] + ([verdicts.item_entity] if verdicts.item_entity else [])
    rows_of = dict((verdicts.stats or {}).get("rows") or {})
    out: dict[str, dict[str, Any]] = {}
    for ent in entities:
        f = failures[failures["entity"] == ent] if not failures.empty else failures
        rules: dict[str, dict[str, Any]] = {r: {"rows": 0, "severity": None} for r in _applicable_rules(ent)}
        if not f.empty:
            for rule, grp in f.groupby("rule", sort=True):
                sev = "error" if (grp["severity"] == "error").any() else "warning"
                rules[str(rule)] = {"rows": int(grp["row"].nunique()), "severity": sev}
        out[ent] = {"rows": int(rows_of.get(ent, 0)), "rules": rules}
    keys = set(verdicts.record_keys.tolist())
    if verdicts.item_record_keys is not None:
        keys.update(verdicts.item_record_keys.tolist())
    record_rules: dict[str, dict[str, Any]] = {}
    for ent in entities:
        for r in out[ent]["rules"]:
            record_rules.setdefault(r, {"records": 0, "severity": None})
    if not failures.empty:
        for rule, grp in failures.groupby("rule", sort=True):
            sev = "error" if (grp["severity"] == "error").any() else "warning"
            record_rules[str(rule)] = {"records": int(grp["record_key"].nunique()), "severity": sev}
    out[verdicts.entity].update(records=len(keys), held=len(verdicts.held_keys), record_rules=record_rules)
    return out


def merge_summary(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Two summaries of the same hospital-day-entity as one (counts added)."""
    if not old:
        return json.loads(json.dumps(new))
    out: dict[str, Any] = {"rows": int(old.get("rows", 0)) + int(new.get("rows", 0))}
    for part, unit in (("rules", "rows"), ("record_rules", "records")):
        if part not in old and part not in new:
            continue
        merged: dict[str, dict[str, Any]] = {}
        for src in (old.get(part) or {}, new.get(part) or {}):
            for rule, v in src.items():
                m = merged.setdefault(rule, {unit: 0, "severity": None})
                m[unit] += int(v.get(unit) or 0)
                if v.get("severity") == "error" or m["severity"] is None:
                    m["severity"] = v.get("severity") or m["severity"]
        out[part] = merged
    for k in ("records", "held"):
        if k in old or k in new:
            out[k] = int(old.get(k, 0)) + int(new.get(k, 0))
    return out


# --- the hook ---------------------------------------------------------------------------------


def keep_validation(
    store_engine: Engine, verdicts: Any, summary: Any, *, source: Any, run_id: str | None = None
) -> None:
    """Fold one validated batch into its hospital-day rows (the pipeline's hook).

    ``summary`` is the run's :class:`hurren.pipeline.RunSummary` (stream and window end),
    ``source`` the :class:`hurren.sources.Source`. Never raises: Data Docs must not stop a load;
    a failure is logged (without data) and the batch is simply missing from the docs.
    """
    try:
        _keep(
            store_engine,
            verdicts,
            org_code=source.org_code,
            org_name=getattr(source, "org_name", None),
            source=source.id,
            stream=summary.stream,
            day=data_day(summary.until),
            run_id=run_id,
        )
    except Exception as exc:  # noqa: BLE001 - reported, never raised into the load
        log.warning(
            "validation results of %s/%s not kept for Data Docs (%s: %s)",
            getattr(source, "id", "?"),
            getattr(summary, "stream", "?"),
            type(exc).__name__,
            str(exc)[:200],
        )


def keep(
    store_engine: Engine,
    verdicts: Any,
    *,
    org_code: str,
    source: str,
    stream: str,
    day: date,
    org_name: str | None = None,
    run_id: str | None = None,
) -> None:
    """:func:`keep_validation` with explicit arguments, raising on failure (tests, tools)."""
    _keep(
        store_engine,
        verdicts,
        org_code=org_code,
        org_name=org_name,
        source=source,
        stream=stream,
        day=day,
        run_id=run_id,
    )


def _keep(
    engine: Engine,
    verdicts: Any,
    *,
    org_code: str,
    org_name: str | None,
    source: str,
    stream: str,
    day: date,
    run_id: str | None,
) -> None:
    ensure_table(engine)
    summaries = summarize(verdicts)
    gx = {
        ent: slim(res.to_json_dict()) for ent, res in (verdicts.gx_results or {}).items() if res is not None
    }
    t = validation_result
    for ent, s in summaries.items():
        where = and_(
            t.c.org_code == org_code,
            t.c.source == source,
            t.c.stream == stream,
            t.c.entity == ent,
            t.c.day == day,
        )
        for attempt in (1, 2):  # a concurrent first insert of the same day: update it instead
            try:
                with engine.begin() as conn:
                    row = conn.execute(
                        select(t.c.id, t.c.summary, t.c.gx_result, t.c.batches, t.c.row_count)
                        .where(where)
                        .with_for_update()
                    ).first()
                    now = datetime.now()  # noqa: DTZ005 - the store's timestamps are naive local
                    new_gx = gx.get(ent)
                    if row is None:
                        conn.execute(
                            insert(t).values(
                                org_code=org_code, org_name=org_name, source=source, stream=stream, entity=ent,
                                master_entity=verdicts.entity, day=day, batches=1, row_count=s["rows"],
                                summary=_dump(s), gx_result=_dump(new_gx) if new_gx else None,
                                suite_name=(new_gx or {}).get("suite_name"), last_run_id=run_id,
                                first_at=now, updated_at=now,
                            )
                        )  # fmt: skip
                    else:
                        merged_gx = (
                            merge(json.loads(row.gx_result), new_gx) if (new_gx and row.gx_result) else new_gx
                        )
                        values: dict[str, Any] = {
                            "summary": _dump(merge_summary(json.loads(row.summary), s)),
                            "batches": row.batches + 1,
                            "row_count": row.row_count + s["rows"],
                            "updated_at": now,
                            "org_name": org_name,
                            "last_run_id": run_id,
                        }
                        if merged_gx is not None:
                            values["gx_result"] = _dump(merged_gx)
                            values["suite_name"] = merged_gx.get("suite_name")
                        conn.execute(update(t).where(t.c.id == row.id).values(**values))
                break
            except IntegrityError:
                if attempt == 2:
                    raise


def keep_gx_day(
    store_engine: Engine, gx_day: Any, summary: Any, *, source: Any, run_id: str | None = None
) -> dict[str, Any]:
    """Run GX once over a run's staged batches (:class:`hurren.validation.GxDay`) and fold its
    results into the hospital-day rows the run's batches were kept in (the pipeline's hook at the
    end of a run of a hospital whose ``validator`` is ``"gx"``).

    GX's failing rows must be the pandas engine's: each disagreement is logged as an error and
    recorded in its entity row's summary (``gx_disagreements``: check, counts, (batch, row)
    positions; no value). Returns what the run's details record: GX calls, rows, seconds and
    the disagreements. Never raises: a GX failure is logged and the day has no GX result for it.
    """
    src, stream = getattr(source, "id", "?"), getattr(summary, "stream", "?")
    try:
        outcome = gx_day.run()
    except Exception as exc:  # noqa: BLE001 - the load is done; the analysts' GX results are missing
        log.error("%s/%s: GX over the run's %s batch(es) failed (%s: %s); no GX results for them",
                  src, stream, gx_day.batches, type(exc).__name__, str(exc)[:200])  # fmt: skip
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    for d in outcome.disagreements:
        log.error("%s/%s: GX and the pandas verdicts disagree on %s", src, stream, d)
    report = {
        "calls": outcome.calls,
        "batches": outcome.batches,
        "rows": dict(outcome.rows),
        "seconds": round(outcome.seconds, 3),
        "disagreements": [d.as_dict() for d in outcome.disagreements],
    }
    try:
        _keep_gx(
            store_engine, outcome, org_code=source.org_code, source=source.id, stream=summary.stream,
            day=data_day(summary.until), run_id=run_id,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - reported, never raised into the load
        log.warning("GX results of %s/%s not kept for Data Docs (%s: %s)",
                    src, stream, type(exc).__name__, str(exc)[:200])  # fmt: skip
    log.info("%s/%s: GX once over %s batch(es): %s call(s), rows %s, %.1f s, %s disagreement(s)",
             src, stream, outcome.batches, outcome.calls, report["rows"], outcome.seconds,
             len(outcome.disagreements))  # fmt: skip
    return report


def _keep_gx(
    engine: Engine, outcome: Any, *, org_code: str, source: str, stream: str, day: date, run_id: str | None
) -> None:
    ensure_table(engine)
    t = validation_result
    for ent in sorted(set(outcome.results) | {d.entity for d in outcome.disagreements}):
        new_gx = None
        for res in outcome.results.get(ent, ()):
            new_gx = merge(new_gx, slim(res.to_json_dict()))
        disagreements = [d.as_dict() for d in outcome.disagreements if d.entity == ent]
        where = and_(t.c.org_code == org_code, t.c.source == source, t.c.stream == stream, t.c.entity == ent,
                     t.c.day == day)  # fmt: skip
        with engine.begin() as conn:
            row = conn.execute(
                select(t.c.id, t.c.summary, t.c.gx_result).where(where).with_for_update()
            ).first()
            if row is None:  # the batches' summaries were not kept (logged then): nothing to attach to
                raise ReportsError(f"no validation result row of {source}/{stream}/{ent} on {day}")
            values: dict[str, Any] = {"updated_at": datetime.now(), "last_run_id": run_id}  # noqa: DTZ005
            if new_gx is not None:
                merged = merge(json.loads(row.gx_result), new_gx) if row.gx_result else new_gx
                values |= {"gx_result": _dump(merged), "suite_name": merged.get("suite_name")}
            if disagreements:
                s = json.loads(row.summary)
                s["gx_disagreements"] = [*(s.get("gx_disagreements") or []), *disagreements]
                values["summary"] = _dump(s)
            conn.execute(update(t).where(t.c.id == row.id).values(**values))


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# --- readers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayRow:
    """One row of ``etl_validation_result`` as pages read it."""

    id: int
    org_code: str
    org_name: str | None
    source: str
    stream: str
    entity: str
    master_entity: str
    day: date
    batches: int
    row_count: int
    summary: Mapping[str, Any]
    suite_name: str | None
    last_run_id: str | None
    updated_at: datetime
    has_gx: bool

    @property
    def is_master(self) -> bool:
        return self.entity == self.master_entity


def _day_row(r: Any) -> DayRow:
    return DayRow(
        id=r.id, org_code=r.org_code, org_name=r.org_name, source=r.source, stream=r.stream, entity=r.entity,
        master_entity=r.master_entity, day=as_date(r.day), batches=r.batches, row_count=r.row_count,
        summary=json.loads(r.summary), suite_name=r.suite_name, last_run_id=r.last_run_id,
        updated_at=r.updated_at, has_gx=bool(r.has_gx),
    )  # fmt: skip


def as_date(v: Any) -> date:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    return date.fromisoformat(str(v)[:10])


def _row_columns() -> list[Any]:
    t = validation_result
    return [
        t.c.id, t.c.org_code, t.c.org_name, t.c.source, t.c.stream, t.c.entity, t.c.master_entity, t.c.day,
        t.c.batches, t.c.row_count, t.c.summary, t.c.suite_name, t.c.last_run_id, t.c.updated_at,
        t.c.gx_result.is_not(None).label("has_gx"),
    ]  # fmt: skip


def table_exists(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table(validation_result.name)


def day_rows(
    conn: Connection,
    *,
    org_code: str | None = None,
    since: date | None = None,
    until: date | None = None,
    days: Sequence[date] | None = None,
) -> list[DayRow]:
    """Rows (without their GX results) of one hospital or all, in a day range, oldest first."""
    if not table_exists(conn):
        return []
    t = validation_result
    q = select(*_row_columns())
    if org_code is not None:
        q = q.where(t.c.org_code == org_code)
    if since is not None:
        q = q.where(t.c.day >= since)
    if until is not None:
        q = q.where(t.c.day <= until)
    if days is not None:
        q = q.where(t.c.day.in_(list(days)))
    q = q.order_by(t.c.day, t.c.org_code, t.c.source, t.c.stream, t.c.master_entity != t.c.entity, t.c.entity)
    return [_day_row(r) for r in conn.execute(q)]


def gx_result(conn: Connection, row_id: int) -> dict[str, Any] | None:
    """The slimmed, merged GX result of one row (None when pruned or validated without GX)."""
    t = validation_result
    raw = conn.execute(select(t.c.gx_result).where(t.c.id == row_id)).scalar_one_or_none()
    return json.loads(raw) if raw else None


@dataclass(frozen=True)
class HospitalDay:
    org_code: str
    org_name: str | None
    day: date
    rows: int
    records: int
    held: int
    with_docs: int  # rows with a GX result
    updated_at: datetime


def hospital_days(
    conn: Connection, *, since: date | None = None, org_code: str | None = None
) -> list[HospitalDay]:
    """One line per hospital and day (newest day first): the overall index, from one query."""
    if not table_exists(conn):
        return []
    t = validation_result
    q = (
        select(
            t.c.org_code,
            func.max(t.c.org_name).label("org_name"),
            t.c.day,
            func.sum(t.c.row_count).label("rows"),
            func.count(t.c.gx_result).label("with_docs"),
            func.max(t.c.updated_at).label("updated_at"),
        )
        .group_by(t.c.org_code, t.c.day)
        .order_by(t.c.day.desc(), t.c.org_code)
    )
    if since is not None:
        q = q.where(t.c.day >= since)
    if org_code is not None:
        q = q.where(t.c.org_code == org_code)
    lines = conn.execute(q).all()
    # records and held come from the masters' summaries: a second, equally narrow read
    totals: dict[tuple[str, date], list[int]] = {}
    q2 = select(t.c.org_code, t.c.day, t.c.summary).where(t.c.entity == t.c.master_entity)
    if since is not None:
        q2 = q2.where(t.c.day >= since)
    if org_code is not None:
        q2 = q2.where(t.c.org_code == org_code)
    for r in conn.execute(q2):
        s = json.loads(r.summary)
        acc = totals.setdefault((r.org_code, as_date(r.day)), [0, 0])
        acc[0] += int(s.get("records", 0))
        acc[1] += int(s.get("held", 0))
    return [
        HospitalDay(
            org_code=r.org_code, org_name=r.org_name, day=as_date(r.day), rows=int(r.rows or 0),
            records=totals.get((r.org_code, as_date(r.day)), [0, 0])[0],
            held=totals.get((r.org_code, as_date(r.day)), [0, 0])[1],
            with_docs=int(r.with_docs or 0), updated_at=r.updated_at,
        )
        for r in lines
    ]  # fmt: skip


def fingerprint(rows: Iterable[DayRow]) -> str:
    """What a hospital-day's Data Docs were built from: changes whenever a batch is added."""
    import hashlib

    text = "|".join(
        f"{r.id}:{r.batches}:{r.updated_at.isoformat()}:{int(r.has_gx)}"
        for r in sorted(rows, key=lambda r: r.id)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prune_results(engine: Engine, *, before: date) -> int:
    """Drop the GX results of days before ``before`` (the summaries stay for the scorecard).
    Returns how many rows were pruned."""
    ensure_table(engine)
    t = validation_result
    with engine.begin() as conn:
        res = conn.execute(
            update(t).where(t.c.day < before, t.c.gx_result.is_not(None)).values(gx_result=None)
        )
        return int(res.rowcount or 0)
