"""Validation of extracted batches against the spec: per-row verdicts, held reports, reasons.

One call validates one batch: a batch of reports (masters and their sub-items, e.g. ``labmaster``
+ ``lab_subitem``) with :func:`validate_reports`, or a batch of single-table records
(``lab_exam_report``, ``sehr_accept_record``, ``sehr_quote_record``, ``v_web_jcjg``,
``v_web_jctj``) with :func:`validate_records`. Both return :class:`Verdicts`.

Input: DataFrames whose columns are the spec field names and whose values are canonical strings
or missing (None/NaN). An empty string counts as missing (Oracle stores '' as NULL). Spec
columns absent from the frame count as missing; other columns are ignored.

The checks come from :func:`hurren.rules.plan` and are evaluated by one of two engines that agree
exactly on every rule (a test asserts it):

- ``engine="gx"``: Great Expectations 1.x. One ExpectationSuite per entity, generated from the
  plan and cached per process; each check is one expectation (``meta``: rule, check, entity,
  field) on the raw column where GX can express it, or on a derived column computed here in
  pandas (byte lengths, check digits, Base64 PDFs, real calendar dates, cross-table links). One
  validation run per entity per call, over the whole batch, with ``result_format`` COMPLETE and
  the row id column ``__row`` as ``unexpected_index_column_names``. The run's
  ``ExpectationSuiteValidationResult`` is kept on the verdicts (``gx_results``) for Data Docs; it
  carries row ids and counts but no values (``exclude_unexpected_values``), so no patient
  identifier can leak through it.
- ``engine="pandas"``: the same tests as vectorised boolean masks (several times faster).

Cost (2-core machine, ``bench/bench_validation.py``): GX pays ~12 ms per expectation per run
whatever the row count (207 expectations for a lab batch: ~2.5 s per call, plus ~7 s for the
import and suite build on a process's first call), then runs ~200k rows/s; so give it one big
batch (thousands of reports), never one report at a time. Preparing the derived columns is shared
by both engines. The GX context quiets the ``great_expectations`` loggers (WARNING) for the whole
process, and GX runs are serialised by a lock.

Records and reports are named by their record key (:func:`hurren.store.record_key` of the values
as given, missing values as null). A sub-item failure is filed under its master's key, so a held
report is held whole. An orphan sub-item (no master in the batch) is filed under the key its
master would have: the master entity's key array with the link values the item carries
(org_code, event_no, report_form_no) and null for the rest, e.g.
``["457759922", "14437173", null, null, "1878"]`` for labmaster; quarantine it under the master
entity with that key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hurren import rules as R
from hurren import spec, store

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

log = logging.getLogger(__name__)

Engine = Literal["gx", "pandas"]
ROW_ID = "__row"
STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas 3 "str", backed by Arrow
FAILURE_COLUMNS = ("entity", "row", "record_key", "field", "rule", "check", "severity", "message")
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "return_unexpected_index_query": False,
    "exclude_unexpected_values": True,  # row ids and counts only: no values, no identifiers
    "partial_unexpected_count": 20,
}
_VALUE_KEYS = ("partial_unexpected_list", "unexpected_list", "partial_unexpected_counts", "unexpected_rows")

_XML_BAD = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"  # literal characters: the same in re and RE2
_XML_BAD_PY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHAR_RULES = {"xml_chars": _XML_BAD_PY, "invisible_chars": re.compile(R.INVISIBLE_RE)}  # {char}, {position}
_B64_SPACE = r"[\t\n\r ]"  # MIME / Oracle UTL_ENCODE line breaks are tolerated
_B64_RE = r"\A(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z"
_PDF_TAIL = 1024  # %%EOF must be within the last 1024 bytes (ISO 32000 implementation note)
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class ValidationError(RuntimeError):
    """Validation could not run (bad arguments, or an engine failed): fix the call, not the data."""


# --- verdicts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdicts:
    """The outcome of validating one batch.

    ``failures`` has one row per (row, field, rule, check) broken: ``entity``, ``row`` (position
    in the frame given for that entity), ``record_key`` (the master's for sub-items), ``field``,
    ``rule``, ``check`` (which part of the rule), ``severity`` and a bilingual ``message`` that
    never shows a patient identifier in clear. ``held_keys`` are the record keys with at least
    one error; warnings never hold a record.
    """

    entity: str  # the master (reports) or record entity
    item_entity: str | None
    engine: Engine
    failures: pd.DataFrame
    held_keys: frozenset[str]
    gx_results: Mapping[str, ExpectationSuiteValidationResult] = field(repr=False)
    stats: Mapping[str, Any] = field(repr=False)
    _keys: Callable[[], pd.Series] = field(repr=False)
    _item_keys: pd.Series | None = field(repr=False)
    _labels: Mapping[tuple[str, int], str] = field(repr=False)

    @property
    def gx_result(self) -> ExpectationSuiteValidationResult | None:
        """The GX result of the master/record entity (``gx_results`` has the sub-items' too)."""
        return self.gx_results.get(self.entity)

    @cached_property
    def record_keys(self) -> pd.Series:
        """The record key of every master/record row, indexed like the frame given."""
        return self._keys()

    @property
    def item_record_keys(self) -> pd.Series | None:
        """The record key every sub-item row is filed under (its master's, or its orphan key)."""
        return self._item_keys

    @cached_property
    def master_held(self) -> pd.Series:
        """True for each master/record row whose record is held."""
        return self.record_keys.isin(self.held_keys)

    @cached_property
    def item_held(self) -> pd.Series | None:
        """True for each sub-item row whose report is held (or that is an orphan)."""
        return None if self._item_keys is None else self._item_keys.isin(self.held_keys)

    def _mask(self, frame: pd.DataFrame, which: Literal["masters", "items"]) -> np.ndarray:
        mask = self.master_held if which == "masters" else self.item_held
        if mask is None or len(mask) != len(frame):
            raise ValidationError(f"the frame given is not the {which} frame these verdicts were made from")
        return mask.to_numpy()

    def passed(self, frame: pd.DataFrame, *, which: Literal["masters", "items"] = "masters") -> pd.DataFrame:
        """The rows of ``frame`` (the masters/records given, or the items with ``which="items"``)
        whose record is not held."""
        return frame[~self._mask(frame, which)]

    def held(self, frame: pd.DataFrame, *, which: Literal["masters", "items"] = "masters") -> pd.DataFrame:
        """The rows of ``frame`` whose record is held (the whole report, sub-items included)."""
        return frame[self._mask(frame, which)]

    @cached_property
    def _by_key(self) -> dict[str, np.ndarray]:
        if self.failures.empty:
            return {}
        return {str(k): v for k, v in self.failures.groupby("record_key", sort=False).indices.items()}

    def rules_broken(self, record_key: str) -> list[dict[str, Any]]:
        """Every failure of one record, without values: for the quarantine's ``rules`` column."""
        idx = self._by_key.get(record_key)
        if idx is None:
            return []
        # Which sub-item, by its own key (e.g. "[serial_no=3]"), never by position: a record's
        # rules must not depend on how the batch around it was cut.
        cols = ["entity", "row", "field", "rule", "check", "severity"]
        out = []
        for entity, row, *rest in self.failures.iloc[idx][cols].itertuples(index=False, name=None):
            item = self._labels.get((entity, int(row)), "")
            out.append(dict(zip(["entity", "item", *cols[2:]], [entity, item, *rest], strict=True)))
        return out

    def reason(self, record_key: str) -> str:
        """A readable text for analysts: every rule the record broke, field by field, with no
        patient identifier in clear. Empty when the record broke nothing."""
        idx = self._by_key.get(record_key)
        if idx is None:
            return ""
        rows = self.failures.iloc[idx]
        n_err = int((rows["severity"] == "error").sum())
        n_warn = len(rows) - n_err
        verdict = "暂扣 held" if record_key in self.held_keys else "放行 passed"
        lines = [f"{self.entity}: {verdict}; {n_err} 项错误 error(s), {n_warn} 项警告 warning(s)"]
        for r in rows.itertuples(index=False):
            where = f"{r.entity}{self._labels.get((r.entity, int(r.row)), '')}.{r.field}"
            label = _field_label(r.entity, r.field)
            sev = "错误 error" if r.severity == "error" else "警告 warning"
            lines.append(f"- [{sev}] {where} ({label}) {r.rule}: {r.message}")
        return "\n".join(lines)


# --- entry points -----------------------------------------------------------------------------


def validate_reports(
    masters: pd.DataFrame,
    items: pd.DataFrame,
    *,
    master_entity: str,
    options: spec.SpecOptions,
    rulebook: R.RuleBook,
    engine: Engine = "gx",
) -> Verdicts:
    """Validate a batch of reports: the masters and all their sub-items, in one run per entity."""
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
    m_frame, m_sur = _normalize(masters, m_ent)
    i_frame, i_sur = _normalize(items, i_ent)

    link = R.link_columns(i_ent)
    m_link, i_link = _link(m_frame, link), _link(i_frame, link)
    first = pd.Series(np.arange(len(m_frame)), index=m_link.to_numpy()).loc[lambda s: s.index.notna()]
    first = first[~first.index.duplicated(keep="first")]
    master_pos = i_link.map(first).to_numpy(dtype=float)  # NaN: orphan
    has_master = ~np.isnan(master_pos)
    m_has_link = m_link.notna().to_numpy()
    has_items = m_link.isin(i_link.dropna().unique()).to_numpy()
    cross: dict[str, Any] = {
        "__has_items": _outcome(m_has_link, has_items, "no_items"),
        "__has_master": _outcome(np.ones(len(i_frame), bool), has_master, "orphan"),
    }
    m_epoch = (
        _calendar(m_frame[R.MASTER_TIME_FIELD], R.DATETIME_RE)[2] if R.MASTER_TIME_FIELD in m_frame else None
    )
    for d in i_plan.derived:
        if d.kind == "drift":
            item_epoch = _calendar(i_frame[d.source[0]], R.DATETIME_RE)[2]
            master_epoch = np.full(len(i_frame), np.nan)
            if m_epoch is not None:
                master_epoch[has_master] = m_epoch[master_pos[has_master].astype(np.int64)]
            cross[d.name] = np.abs(item_epoch - master_epoch)
    _derive(m_frame, m_plan, options, m_sur, cross)
    _derive(i_frame, i_plan, options, i_sur, cross)
    stats["prepare_s"] = time.perf_counter() - t0

    m_keys = _record_keys(masters, m_ent)
    i_keys = np.empty(len(i_frame), dtype=object)
    i_keys[has_master] = m_keys.to_numpy()[master_pos[has_master].astype(np.int64)]
    orphans = np.flatnonzero(~has_master)
    if orphans.size:  # filed under the key their master would have: link values, null for the rest
        raw = items.iloc[orphans]
        values = {k: raw[k].tolist() if k in raw.columns else [None] * orphans.size for k in link}
        for j, p in enumerate(orphans.tolist()):
            row = {
                k: (None if k not in values or _missing(values[k][j]) else values[k][j]) for k in m_ent.key
            }
            i_keys[p] = store.record_key(m_ent, row)
    i_keys_s = pd.Series(i_keys, index=items.index, dtype=object)

    t1 = time.perf_counter()
    hits, results = {}, {}
    for plan_, frame in ((m_plan, m_frame), (i_plan, i_frame)):
        hits[plan_.entity], res = _run(engine, frame, plan_, rb)
        if res is not None:
            results[plan_.entity] = res
    stats["engine_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    item_extra = [k for k in i_ent.key if k not in link]
    failures, labels = _assemble(
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
) -> Verdicts:
    """Validate a batch of single-table records (daily counts, accept/quote records, PACS views)."""
    rb = rulebook
    _check_engine(engine)
    ent = spec.entity(entity)
    if ent.kind in ("report", "item"):
        raise ValidationError(f"{entity} is part of a report; validate it with validate_reports")
    t0 = time.perf_counter()
    plan_ = R.plan(ent.name, options, pdf_max_bytes=rb.pdf_max_bytes)
    frame, sur = _normalize(rows, ent)
    _derive(frame, plan_, options, sur, {})
    stats: dict[str, Any] = {"rows": {ent.name: len(rows)}, "prepare_s": time.perf_counter() - t0}
    t1 = time.perf_counter()
    hits, res = _run(engine, frame, plan_, rb)
    stats["engine_s"] = time.perf_counter() - t1

    failing = np.unique(np.concatenate([v for v in hits.values()] or [np.empty(0, np.int64)]))
    keys = np.empty(len(frame), dtype=object)
    if failing.size:
        keys[failing] = _record_keys(rows.iloc[failing], ent).to_numpy()
    t2 = time.perf_counter()
    failures, labels = _assemble([(plan_, frame, rows, hits, keys, ())], rb)
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
        _keys=lambda: _record_keys(rows, ent),
        _item_keys=None,
        _labels=labels,
    )


def _check_engine(engine: str) -> None:
    if engine not in ("gx", "pandas"):
        raise ValidationError(f"engine must be 'gx' or 'pandas', got {engine!r}")


# --- preparation ------------------------------------------------------------------------------


def _normalize(frame: pd.DataFrame, ent: spec.Entity) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The spec columns as Arrow strings, '' as missing, positional index, plus the row id.
    Lone surrogates (which Arrow cannot hold) become '?', as Oracle's byte count would see them,
    and are remembered for xml_chars."""
    n = len(frame)
    missing = [c for c in ent.names if c not in frame.columns]
    if missing and n:
        log.warning(
            "%s: %d spec column(s) absent from the batch, treated as empty: %s",
            ent.name,
            len(missing),
            missing,
        )
    cols: dict[str, pd.Series] = {}
    surrogates: dict[str, np.ndarray] = {}
    for name in ent.names:
        if name not in frame.columns:
            cols[name] = pd.Series(pd.array([None] * n, dtype=STR))
            continue
        s = frame[name].reset_index(drop=True)
        if s.dtype != STR:
            try:
                s = s.astype(STR)
            except (UnicodeEncodeError, pa.ArrowInvalid):
                obj = s.astype(object)
                bad = np.array(
                    [isinstance(v, str) and _SURROGATE.search(v) is not None for v in obj], dtype=bool
                )
                surrogates[name] = bad
                s = obj.map(lambda v: _SURROGATE.sub("?", v) if isinstance(v, str) else v).astype(STR)
        cols[name] = s.where(s != "")
    out = pd.DataFrame(cols)
    out.insert(0, ROW_ID, np.arange(n, dtype=np.int64))
    return out, surrogates


def _link(frame: pd.DataFrame, cols: tuple[str, ...]) -> pd.Series:
    """The link columns joined (missing if any part is missing)."""
    if len(cols) == 1:
        return frame[cols[0]]
    parts = [pa.array(frame[c].array) for c in cols]
    joined = pc.binary_join_element_wise(*parts, pa.scalar("\x1f", type=parts[0].type))
    return pd.Series(pd.array(joined, dtype=STR), index=frame.index)


def _outcome(applies: np.ndarray, ok: np.ndarray, code: str | np.ndarray) -> pd.Categorical:
    """An outcome column: missing where the check does not apply, 'ok', or the failure's name.
    Categorical: a million-row column costs a byte per row, not a Python string."""
    if isinstance(code, str):
        codes = np.where(applies, np.where(ok, 0, 1), -1).astype(np.int8)
        return pd.Categorical.from_codes(codes, categories=[R.OK, code])
    values = np.where(ok, R.OK, code).astype(object)
    values[~applies] = None
    return pd.Categorical(values)


def _fixed_width(s: pd.Series, mask: np.ndarray, width: int) -> np.ndarray:
    """The selected values (ASCII, at most ``width`` long) right-padded with '0', as a (k, width)
    byte matrix, straight from Arrow's buffers."""
    arr = pc.utf8_rpad(pc.filter(pa.array(s.array), pa.array(mask)), width=width, padding="0")
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int64 if pa.types.is_large_string(arr.type) else np.int32
    )
    start = int(offsets[arr.offset])
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[start : start + len(arr) * width]
    return data.reshape(-1, width)


def _maybe_xml_bad(s: pd.Series) -> bool:
    """Whether the column's UTF-8 bytes hold a C0 control (but tab/LF/CR) or U+FFFE/U+FFFF at all:
    a byte scan that lets the regex run only on the rare column that needs it."""
    data = pa.array(s.array).buffers()[2]
    if data is None:
        return False
    d = np.frombuffer(data, dtype=np.uint8)
    if ((d < 0x20) & (d != 0x09) & (d != 0x0A) & (d != 0x0D)).any():
        return True
    ef = np.flatnonzero(d[:-2] == 0xEF)
    return bool(ef.size and ((d[ef + 1] == 0xBF) & ((d[ef + 2] == 0xBE) | (d[ef + 2] == 0xBF))).any())


def _calendar(s: pd.Series, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matches the pattern, is a real date/time, seconds since 1970 or NaN)."""
    n = len(s)
    matched = s.str.contains(pattern, na=False).to_numpy(dtype=bool)
    valid = np.zeros(n, dtype=bool)
    epoch = np.full(n, np.nan)
    idx = np.flatnonzero(matched)
    if idx.size:
        raw = _fixed_width(s, matched, 19)  # 'YYYY-MM-DD HH:MM:SS'; a date alone reads as 00:00:00
        a = raw[:, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]].astype(np.int64) - 48
        y = a[:, 0] * 1000 + a[:, 1] * 100 + a[:, 2] * 10 + a[:, 3]
        mo, d = a[:, 4] * 10 + a[:, 5], a[:, 6] * 10 + a[:, 7]
        hh, mi, ss = a[:, 8] * 10 + a[:, 9], a[:, 10] * 10 + a[:, 11], a[:, 12] * 10 + a[:, 13]
        ok = _real_date(y, mo, d) & (hh <= 23) & (mi <= 59) & (ss <= 59)
        valid[idx] = ok
        days = _days_from_civil(y, np.clip(mo, 1, 12), d)
        epoch[idx] = np.where(ok, days * 86400 + hh * 3600 + mi * 60 + ss, np.nan)
    return matched, valid, epoch


def _real_date(y: np.ndarray, mo: np.ndarray, d: np.ndarray) -> np.ndarray:
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    dim = _DAYS_IN_MONTH[np.clip(mo, 1, 12) - 1] + ((mo == 2) & leap)
    return (y >= 1) & (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= dim)


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _derive(
    frame: pd.DataFrame,
    plan_: R.Plan,
    options: spec.SpecOptions,
    surrogates: Mapping[str, np.ndarray],
    cross: Mapping[str, Any],
) -> None:
    """Add the plan's derived columns to ``frame`` (in place)."""
    n = len(frame)
    memo: dict[str, Any] = {}
    for d in plan_.derived:
        src = frame[d.source[0]]
        present = src.notna().to_numpy()
        match d.kind:
            case "bytes":
                frame[d.name] = _byte_lengths(src, options)
            case "digits":
                ok = src.str.contains(R.INTEGER_RE, na=False).to_numpy(dtype=bool)
                frame[d.name] = np.where(ok, src.str.len().to_numpy(dtype=float, na_value=np.nan), np.nan)
            case "calendar":
                matched, valid, _ = _calendar(src, d.param("pattern"))
                frame[d.name] = _outcome(matched, valid, "calendar")
            case "epoch":
                frame[d.name] = _calendar(src, d.param("pattern"))[2]
            case "decimal":
                ok = src.str.contains(R.DECIMAL_RE, na=False).to_numpy(dtype=bool)
                frame[d.name] = pd.to_numeric(src.where(ok), errors="coerce").to_numpy(dtype=float)
            case "xml":
                bad = np.zeros(n, dtype=bool)
                if _maybe_xml_bad(src):
                    bad = src.str.contains(_XML_BAD, na=False).to_numpy(dtype=bool)
                if d.source[0] in surrogates:
                    bad = bad | surrogates[d.source[0]]
                frame[d.name] = _outcome(present, ~bad, "bad_char")
            case "pdf":
                frame[d.name] = pd.Categorical(_pdf_outcomes(src, d.param("max_bytes")))
            case "id_card" | "id_legacy" | "id_sex" | "id_birth":
                if "id" not in memo:
                    memo["id"] = _id_analysis(frame)
                frame[d.name] = memo["id"][d.kind]
            case "has_items" | "has_master":
                frame[d.name] = cross[d.name]
            case "drift":
                frame[d.name] = np.asarray(cross[d.name], dtype=float)
            case _:
                raise ValidationError(f"no derivation for kind {d.kind!r}")
        assert len(frame[d.name]) == n


def _byte_lengths(s: pd.Series, options: spec.SpecOptions) -> np.ndarray:
    """VARCHAR2 lengths as SpecOptions.measured_length counts them (NaN where missing)."""
    if options.length_semantics == "byte" and options.length_encoding.replace("_", "-").lower() in (
        "utf-8",
        "utf8",
    ):
        lengths = pc.binary_length(pa.array(s.array))
        return lengths.to_numpy(zero_copy_only=False).astype(float)
    return s.map(options.measured_length, na_action="ignore").to_numpy(dtype=float, na_value=np.nan)


def _pdf_outcomes(s: pd.Series, max_bytes: int) -> np.ndarray:
    """Per row: 'ok', or missing / not_base64 / too_large / not_pdf / no_eof (first that applies)."""
    n = len(s)
    out = np.full(n, "missing", dtype=object)
    text = s.str.replace(_B64_SPACE, "", regex=True)
    present = (text.notna() & (text != "")).to_numpy()
    b64 = text.str.contains(_B64_RE, na=False).to_numpy(dtype=bool) & present
    out[present & ~b64] = "not_base64"
    values = text.to_numpy(dtype=object)
    for i in np.flatnonzero(b64):
        t = values[i]
        if _b64_size(t) > max_bytes:
            out[i] = "too_large"
            continue
        try:
            head = base64.b64decode(t[:8], validate=True)
            cut = max(0, len(t) - 4 * ((_PDF_TAIL + 2) // 3 + 1))
            tail = base64.b64decode(t[cut:], validate=True)[-_PDF_TAIL:]
        except (binascii.Error, ValueError):
            out[i] = "not_base64"
            continue
        out[i] = "not_pdf" if not head.startswith(b"%PDF-") else ("no_eof" if b"%%EOF" not in tail else R.OK)
    return out


def _b64_size(t: str) -> int:
    return len(t) // 4 * 3 - (2 if t.endswith("==") else 1 if t.endswith("=") else 0)


def _id_analysis(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Outcomes of the resident ID checks, vectorised (GB 11643: ISO 7064 MOD 11-2)."""
    id_no_col, id_type_col = R.ID_FIELDS
    n = len(frame)
    id_no = frame[id_no_col]
    applies = ((frame[id_type_col] == R.RESIDENT_ID_TYPE) & id_no.notna()).to_numpy()
    is18 = id_no.str.contains(R.ID18_RE, na=False).to_numpy(dtype=bool) & applies
    is15 = id_no.str.contains(R.ID15_RE, na=False).to_numpy(dtype=bool) & applies
    values = id_no.to_numpy(dtype=object)
    birth_ok = np.zeros(n, dtype=bool)
    check_ok = np.ones(n, dtype=bool)
    male = np.zeros(n, dtype=bool)
    birth = np.full(n, None, dtype=object)
    for width, mask in ((18, is18), (15, is15)):
        idx = np.flatnonzero(mask)
        if not idx.size:
            continue
        a = np.frombuffer("".join(values[idx]).encode("ascii"), dtype=np.uint8).reshape(-1, width)
        digits = a.astype(np.int64) - 48
        if width == 18:
            y = digits[:, 6] * 1000 + digits[:, 7] * 100 + digits[:, 8] * 10 + digits[:, 9]
            mo, d, sex = digits[:, 10] * 10 + digits[:, 11], digits[:, 12] * 10 + digits[:, 13], digits[:, 16]
            check_ok[idx] = _ID_CHECK[(digits[:, :17] @ _ID_WEIGHTS) % 11] == a[:, 17]
        else:
            y = 1900 + digits[:, 6] * 10 + digits[:, 7]
            mo, d, sex = digits[:, 8] * 10 + digits[:, 9], digits[:, 10] * 10 + digits[:, 11], digits[:, 14]
        birth_ok[idx] = _real_date(y, mo, d)
        male[idx] = sex % 2 == 1
        birth[idx] = [f"{yy:04d}-{mm:02d}-{dd:02d}" for yy, mm, dd in zip(y, mo, d, strict=True)]
    code = np.where(
        ~(is18 | is15), "format", np.where(~birth_ok, "birth_date", np.where(~check_ok, "check_digit", R.OK))
    )
    id_card = _outcome(applies, code == R.OK, code)
    good = applies & (code == R.OK)
    out = {"id_card": id_card, "id_legacy": _outcome(good, ~is15, "legacy15")}
    if R.SEX_FIELD in frame:
        sex_code = frame[R.SEX_FIELD]
        sex_applies = good & sex_code.isin(["1", "2"]).to_numpy()
        out["id_sex"] = _outcome(sex_applies, (sex_code == "1").to_numpy() == male, "mismatch")
    if R.BIRTH_FIELD in frame:
        bd = frame[R.BIRTH_FIELD]
        _, bd_valid, _ = _calendar(bd, R.DATE_RE)
        b_applies = good & bd_valid
        out["id_birth"] = _outcome(b_applies, bd.to_numpy(dtype=object) == birth, "mismatch")
    return out


def _missing(v: Any) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def _record_keys(frame: pd.DataFrame, ent: spec.Entity) -> pd.Series:
    """store.record_key of every row, from the values as given (missing as null)."""
    cols = [frame[k].to_numpy(dtype=object) if k in frame.columns else [None] * len(frame) for k in ent.key]
    keys = [
        store.record_key(ent, {k: (None if _missing(v) else v) for k, v in zip(ent.key, vals, strict=True)})
        for vals in zip(*cols, strict=True)
    ] if len(frame) else []  # fmt: skip
    return pd.Series(keys, index=frame.index, dtype=object)


# --- engines ----------------------------------------------------------------------------------


def _run(
    engine: Engine, frame: pd.DataFrame, plan_: R.Plan, rb: R.RuleBook
) -> tuple[dict[str, np.ndarray], Any]:
    if len(frame) == 0:
        return {c.id: np.empty(0, np.int64) for c in plan_.checks}, None
    if engine == "pandas":
        return {c.id: np.flatnonzero(_fails(frame, c.test)) for c in plan_.checks}, None
    return _run_gx(frame, plan_, rb)


def _when(frame: pd.DataFrame, when: R.When | None) -> np.ndarray | bool:
    return True if when is None else (frame[when.column] == when.value).to_numpy(dtype=bool)


def _fails(frame: pd.DataFrame, test: R.Test) -> np.ndarray:
    """The pandas engine: True for each row that breaks ``test`` (GX's semantics: missing values
    are skipped except by not-null; row conditions select the rows first)."""
    match test:
        case R.NotNull(column=c, when=w):
            return frame[c].isna().to_numpy() & _when(frame, w)
        case R.IsNull(column=c, when=w):
            return frame[c].notna().to_numpy() & _when(frame, w)
        case R.InSet(column=c, values=values):
            s = frame[c]
            return (s.notna() & ~s.isin(values)).to_numpy()
        case R.Matches(column=c, pattern=p, when=w):
            s = frame[c]
            return s.notna().to_numpy() & ~s.str.contains(p, na=False).to_numpy(dtype=bool) & _when(frame, w)
        case R.NotMatches(column=c, pattern=p):
            s = frame[c]
            return s.notna().to_numpy() & s.str.contains(p, na=False).to_numpy(dtype=bool)
        case R.MaxChars(column=c, limit=limit):
            s = frame[c]
            return (s.notna() & (s.str.len() > limit)).fillna(False).to_numpy(dtype=bool)
        case R.AtMost(column=c, limit=limit):
            v = frame[c].to_numpy(dtype=float)
            return ~np.isnan(v) & (v > limit)
        case R.Outcome(column=c):
            s = frame[c]
            return (s.notna() & (s != R.OK)).to_numpy()
        case R.UniqueTogether(columns=cols):
            sub = frame[list(cols)]
            complete = sub.notna().all(axis=1).to_numpy()
            out = np.zeros(len(frame), dtype=bool)
            out[complete] = sub[complete].duplicated(keep=False).to_numpy()
            return out
        case R.NotLess(a=a, b=b):
            va, vb = frame[a].to_numpy(dtype=float), frame[b].to_numpy(dtype=float)
            both = ~np.isnan(va) & ~np.isnan(vb)
            return both & ~(va >= vb)
    raise ValidationError(f"no pandas evaluation for {test!r}")


_GX_LOCK = threading.RLock()
_GX_STATE: dict[str, Any] = {}
_GX_SUITES: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _gx_context() -> tuple[Any, Any]:
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


def gx_suite(plan_: R.Plan, rb: R.RuleBook) -> tuple[Any, Any]:
    """The (ExpectationSuite, whole-dataframe BatchDefinition) of an entity, built once per
    process for each plan and rule book."""
    key = (plan_.entity, plan_.fingerprint, rb.fingerprint)
    with _GX_LOCK:
        if key in _GX_SUITES:
            return _GX_SUITES[key]
        ctx, ds = _gx_context()  # first: it quiets GX's loggers before GX is imported
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
        case R.UniqueTogether(columns=cols) if len(cols) == 1:
            return gxe.ExpectColumnValuesToBeUnique(column=cols[0], **common)
        case R.UniqueTogether(columns=cols):
            return gxe.ExpectCompoundColumnsToBeUnique(
                column_list=list(cols), ignore_row_if="any_value_is_missing", **common
            )
        case R.NotLess(a=a, b=b):
            return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing", **common
            )
    raise ValidationError(f"no GX expectation for {c.test!r}")


def _run_gx(frame: pd.DataFrame, plan_: R.Plan, rb: R.RuleBook) -> tuple[dict[str, np.ndarray], Any]:
    """One GX validation run of the whole batch of one entity."""
    suite, batch_definition = gx_suite(plan_, rb)
    columns = [ROW_ID, *plan_.columns, *(d.name for d in plan_.derived)]
    data = frame[[c for c in dict.fromkeys(columns) if c in frame.columns]]
    with _GX_LOCK, _quiet():
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


# --- failures and messages --------------------------------------------------------------------


class _Ctx(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _assemble(
    parts: list[
        tuple[R.Plan, pd.DataFrame, pd.DataFrame, Mapping[str, np.ndarray], np.ndarray, tuple[str, ...]]
    ],
    rb: R.RuleBook,
) -> tuple[pd.DataFrame, dict[tuple[str, int], str]]:
    """The failures frame (sorted by entity, row, check order) and labels for sub-item rows."""
    cols: dict[str, list[Any]] = {k: [] for k in (*FAILURE_COLUMNS, "_e", "_c")}
    labels: dict[tuple[str, int], str] = {}
    for e_rank, (plan_, frame, raw, hits, keys, label_cols) in enumerate(parts):
        raw_pos = raw.reset_index(drop=True)
        for c_rank, c in enumerate(plan_.checks):
            pos = hits.get(c.id)
            if pos is None or not len(pos):
                continue
            severity = rb.severity(c.rule, c.entity, c.field)
            take = _Taker(frame, raw_pos, pos)
            checks = take(c.test.column) if isinstance(c.test, R.Outcome) else [c.check] * len(pos)
            base = {
                "field": c.field,
                "entity": c.entity,
                "zh_name": _field_label(c.entity, c.field),
                "other_field": c.other_field or "?",
                "other_zh_name": _field_label(c.entity, c.other_field) if c.other_field else "?",
                **dict(c.context),
            }
            for j, (p, chk) in enumerate(zip(pos.tolist(), checks, strict=True)):
                zh, en = rb.message(c.rule, str(chk))
                ctx = _Ctx(base)
                _fill(ctx, c, str(chk), take, j)
                cols["entity"].append(c.entity)
                cols["row"].append(p)
                cols["record_key"].append(keys[p])
                cols["field"].append(c.field)
                cols["rule"].append(c.rule)
                cols["check"].append(str(chk))
                cols["severity"].append(severity)
                cols["message"].append(f"{zh.format_map(ctx)} / {en.format_map(ctx)}")
                cols["_e"].append(e_rank)
                cols["_c"].append(c_rank)
                if label_cols and (c.entity, p) not in labels:
                    shown = (f"{k}={_show(k, take(k)[j])}" for k in label_cols if k in frame.columns)
                    labels[(c.entity, p)] = "[" + ", ".join(shown) + "]"
    df = pd.DataFrame(cols)
    df = df.astype({"row": np.int64, "_e": np.int64, "_c": np.int64})
    order = np.lexsort((df["_c"].to_numpy(), df["row"].to_numpy(), df["_e"].to_numpy()))
    df = df.iloc[order].drop(columns=["_e", "_c"]).reset_index(drop=True)
    for k in FAILURE_COLUMNS:
        if k != "row":
            df[k] = df[k].astype(object)
    return df, labels


class _Taker:
    """The values of a few columns at the failing positions of one check, read once per column."""

    def __init__(self, frame: pd.DataFrame, raw: pd.DataFrame, pos: np.ndarray) -> None:
        self.frame, self.raw, self.pos = frame, raw, pos
        self._memo: dict[tuple[bool, str], list[Any]] = {}

    def __call__(self, column: str, *, raw: bool = False) -> list[Any]:
        key = (raw, column)
        if key not in self._memo:
            src = self.raw if raw else self.frame
            if column in src.columns:
                self._memo[key] = src[column].take(self.pos).tolist()
            else:
                self._memo[key] = [None] * len(self.pos)
        return self._memo[key]


def _fill(ctx: _Ctx, c: R.Check, check: str, take: _Taker, j: int) -> None:
    """Per-failure message placeholders. Values of patient identifiers are masked."""
    if c.field in take.frame.columns:
        ctx["value"] = _show(c.field, take(c.field)[j])
    if c.other_field:
        ctx["other_value"] = _show(c.other_field, take(c.other_field)[j])
    if isinstance(c.test, R.AtMost):
        v = float(take(c.test.column)[j])
        ctx["actual"] = str(int(v)) if v.is_integer() else f"{v:g}"
    elif isinstance(c.test, R.MaxChars):
        ctx["actual"] = str(len(str(take(c.test.column)[j])))
    if c.rule == "pdf" and check == "too_large":
        ctx["actual"] = str(_b64_size(re.sub(_B64_SPACE, "", str(take(c.field)[j]))))
    if c.rule in _CHAR_RULES:
        value = take(c.field, raw=True)[j]
        m = _CHAR_RULES[c.rule].search(value) if isinstance(value, str) else None
        if m:
            ctx["char"] = f"U+{ord(m.group()):04X}"
            ctx["position"] = str(m.start() + 1)


def _show(field_name: str, value: Any, limit: int = 40) -> str:
    """A value as a message may show it: quoted, control characters escaped, long text cut;
    patient identifiers masked."""
    if _missing(value):
        return "(空 empty)"
    text = str(value)
    if field_name in spec.PATIENT_IDENTIFIERS:
        text = mask(field_name, text)
    if len(text) > limit:
        text = text[:limit] + "…"
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)
    return f"'{text}'"


def mask(field_name: str, value: str) -> str:
    """A patient identifier as it may appear in a reason: '张*', '3201**********1234', '****-**-**'."""
    if field_name in ("name", "PATIENTNAME"):
        return value[:1] + "*" * max(len(value) - 1, 1) if len(value) > 1 else "*"
    if field_name in ("id_no", "card_no"):
        return value[:4] + "*" * (len(value) - 8) + value[-4:] if len(value) >= 12 else "*" * len(value)
    return re.sub(r"[0-9A-Za-z]", "*", value)


def _field_label(entity: str, field_name: str) -> str:
    ent = spec.entity(entity)
    if field_name in ent.names:
        return ent.field(field_name).zh_name
    if field_name in spec.entities():
        return spec.entity(field_name).title
    parts = field_name.split(",")
    if all(p in ent.names for p in parts):
        return "、".join(ent.field(p).zh_name for p in parts)
    return field_name
