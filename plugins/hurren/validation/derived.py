"""Preparation shared by both engines: the batch normalised, and the plan's derived columns.

:func:`normalize` turns the rows given (canonical strings or missing values) into a
:class:`Frame`: every spec column as an Arrow string array, '' as missing (Oracle stores '' as
NULL), positions 0..n-1 whatever the frame's index, plus the row id ``__row``. :func:`derive` adds
the plan's derived columns (:class:`hurren.rules.Derived`): byte lengths, check digits, real
calendar dates, resident ID analysis, PDFs, cross-table links — float arrays (NaN where a check
does not apply) or :class:`Codes` (outcome columns: missing, ``ok`` or the failure's name).

Arrow and numpy arrays, not pandas Series: the pandas engine pays a few microseconds per check
instead of ~0.5 ms of pandas overhead, which at the pipeline's chunk sizes (~10k rows) is most of
the cost. GX reads the same columns as a DataFrame (:meth:`Frame.to_pandas`): text as pandas'
Arrow-backed strings, numbers as float64 with NaN, outcomes as categoricals.

A report PDF checked right after extraction (:func:`hurren.pdf.detach`) comes as its outcome
column ``__pdf__<field>`` with ``pdf_size``; its value (a decoded :class:`hurren.pdf.Pdf`) is then
not read at all. Either way the check is :func:`hurren.pdf.outcome`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hurren import pdf, rows, spec
from hurren import rules as R
from hurren.validation.exceptions import ValidationError

log = logging.getLogger("hurren.validation")

ROW_ID = "__row"
STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas 3 "str", backed by Arrow
TEXT = pa.large_string()
_XML_BAD = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"  # literal characters: the same in re and RE2
XML_BAD_PY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


@dataclass(frozen=True)
class Codes:
    """An outcome column: ``codes`` -1 where the check does not apply, 0 where it passes
    (``names[0]`` is :data:`hurren.rules.OK`), k > 0 where it fails as ``names[k]``."""

    codes: np.ndarray  # int8
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.codes)

    def values(self, pos: np.ndarray) -> list[str | None]:
        return [self.names[c] if c >= 0 else None for c in self.codes[pos].tolist()]

    def to_pandas(self) -> pd.Categorical:
        return pd.Categorical.from_codes(self.codes, categories=list(self.names))


Column = pa.Array | np.ndarray | Codes


class Frame:
    """One entity's prepared batch: columns by name (Arrow text, float arrays or :class:`Codes`),
    all of length ``n``."""

    def __init__(self, n: int, columns: dict[str, Column], surrogates: dict[str, np.ndarray]) -> None:
        self.n = n
        self.columns = columns
        self.surrogates = surrogates  # column -> rows that held a lone surrogate (now '?')
        self._valid: dict[str, np.ndarray] = {}
        self._matches: dict[tuple[str, str], np.ndarray] = {}

    def __len__(self) -> int:
        return self.n

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def __setitem__(self, name: str, value: Column) -> None:
        if len(value) != self.n:
            raise ValidationError(f"column {name}: {len(value)} values for {self.n} rows")
        self.columns[name] = value
        self._valid.pop(name, None)

    def text(self, name: str) -> pa.Array:
        col = self.columns[name]
        if not isinstance(col, pa.Array):
            raise ValidationError(f"{name} is a derived column, not text")
        return col

    def valid(self, name: str) -> np.ndarray:
        """True where the column has a value (text present, number not NaN, outcome applies)."""
        v = self._valid.get(name)
        if v is None:
            col = self.columns[name]
            if isinstance(col, Codes):
                v = col.codes >= 0
            elif isinstance(col, np.ndarray):
                v = ~np.isnan(col)
            else:
                v = bools(pc.is_valid(col))
            self._valid[name] = v
        return v

    def matches(self, name: str, pattern: str) -> np.ndarray:
        """:func:`search` of a text column, once per pattern (a format check and the derived
        column of the same field share it)."""
        key = (name, pattern)
        m = self._matches.get(key)
        if m is None:
            m = self._matches[key] = search(self.text(name), pattern)
        return m

    def take(self, name: str, pos: np.ndarray) -> list[Any]:
        """Python values of a column at positions (None where missing)."""
        col = self.columns.get(name)
        if col is None:
            return [None] * len(pos)
        if isinstance(col, Codes):
            return col.values(pos)
        if isinstance(col, np.ndarray):
            return col[pos].tolist()
        return col.take(pa.array(pos, type=pa.int64())).to_pylist()

    def to_pandas(self, names: Iterable[str]) -> pd.DataFrame:
        """The named columns (those present) as the DataFrame GX validates."""
        out: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            col = self.columns.get(name)
            if col is None:
                continue
            if isinstance(col, Codes):
                out[name] = col.to_pandas()
            elif isinstance(col, np.ndarray):
                out[name] = col
            else:
                out[name] = pd.array(col, dtype=STR)
        return pd.DataFrame(out)


def bools(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)


# Python's re where RE2 (Arrow) would differ: lookarounds, back references, \s/\w/\d/\b (RE2
# is ASCII-only or misses \x0b), $ (Python also matches before a final newline), \u escapes.
_PYTHON_ONLY = re.compile(r"\\[sSwWdDbBuUN1-9]|\(\?[=!<]|(?<!\\)\$")
_END = re.compile(r"(?<!\\)((?:\\\\)*)\\Z")


@lru_cache(maxsize=512)
def _re2(pattern: str) -> str | None:
    """The pattern for Arrow's RE2, or None where only Python's re gives pandas' answer."""
    if _PYTHON_ONLY.search(pattern):
        return None
    return _END.sub(r"\1\\z", pattern)  # Python's \Z is RE2's \z, as pandas translates it


def search(arr: pa.Array, pattern: str) -> np.ndarray:
    """``re.search(pattern, value)`` for each value, False where missing: pandas' ``str.contains``
    (which GX uses), straight on the Arrow array."""
    re2 = _re2(pattern)
    if re2 is not None:
        try:
            return bools(pc.match_substring_regex(arr, re2))
        except pa.ArrowInvalid:
            pass
    rx = re.compile(pattern)
    return np.array([v is not None and rx.search(v) is not None for v in arr.to_pylist()], dtype=bool)


def normalize(raw: pd.DataFrame, ent: spec.Entity) -> Frame:
    """The spec columns of ``raw`` as a :class:`Frame`, plus the row id and the PDF outcome
    columns the extraction computed. Lone surrogates (which Arrow cannot hold) become '?', as
    Oracle's byte count would see them, and are remembered for xml_chars."""
    n = len(raw)
    checked = {f.name for f in ent.fields if f.type == "pdf" and pdf.outcome_column(f.name) in raw.columns}
    absent = [c for c in ent.names if c not in raw.columns and c not in checked]
    if absent and n:
        log.warning("%s: %d spec column(s) absent from the batch, treated as empty: %s",
                    ent.name, len(absent), absent)  # fmt: skip
    columns: dict[str, Column] = {ROW_ID: np.arange(n, dtype=np.int64)}
    surrogates: dict[str, np.ndarray] = {}
    for name in ent.names:
        if name not in raw.columns or name in checked:
            columns[name] = pa.nulls(n, type=TEXT)
            continue
        arr, bad = _text(raw[name])
        columns[name] = arr
        if bad is not None:
            surrogates[name] = bad
    frame = Frame(n, columns, surrogates)
    for name in sorted(checked):
        col = pdf.outcome_column(name)
        frame[col] = outcome_of(raw[col], R.OUTCOME_CODES["pdf"])
    return frame


def _text(s: pd.Series) -> tuple[pa.Array, np.ndarray | None]:
    """One column as Arrow text, '' as null, and the rows that held a lone surrogate (or None)."""
    bad = None
    try:
        if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
            arr = pa.array(s.array)  # the Arrow data itself, no copy
        else:
            arr = pa.array(s.to_numpy(dtype=object), type=TEXT, from_pandas=True)
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
        obj = s.to_numpy(dtype=object)
        bad = np.array([isinstance(v, str) and _SURROGATE.search(v) is not None for v in obj], dtype=bool)
        fixed = [_SURROGATE.sub("?", v) if isinstance(v, str) else v for v in obj]
        arr = pa.array(fixed, type=TEXT, from_pandas=True)
        if not bad.any():
            bad = None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != TEXT:
        arr = arr.cast(TEXT)
    empty = pc.equal(pc.binary_length(arr), 0)
    if pc.any(empty).as_py():
        arr = pc.if_else(empty, pa.scalar(None, type=TEXT), arr)
    return arr, bad


def outcome_of(s: pd.Series, failures: tuple[str, ...]) -> Codes:
    """An outcome column given as text (computed at extraction): missing where the check does not
    apply, :data:`hurren.rules.OK`, or the failure's name."""
    values = s.to_numpy(dtype=object)
    present = ~pd.isna(values)
    found = sorted({str(v) for v in values[present]} - {R.OK} - set(failures))
    names = (R.OK, *failures, *found)
    index = {v: i for i, v in enumerate(names)}
    codes = np.full(len(values), -1, dtype=np.int8)
    if present.any():
        codes[present] = [index[str(v)] for v in values[present]]
    return Codes(codes, names)


def link_of(frame: Frame, cols: tuple[str, ...]) -> pa.Array:
    """The link columns joined (missing if any part is missing)."""
    if len(cols) == 1:
        return frame.text(cols[0])
    parts = [frame.text(c) for c in cols]
    return pc.binary_join_element_wise(*parts, pa.scalar("\x1f", type=TEXT))


def outcome(applies: np.ndarray, ok: np.ndarray, code: str | np.ndarray) -> Codes:
    """An outcome column: missing where the check does not apply, 'ok', or the failure's name
    (one name, or one per row)."""
    if isinstance(code, str):
        return Codes(np.where(applies, np.where(ok, 0, 1), -1).astype(np.int8), (R.OK, code))
    bad = applies & ~ok
    names = (R.OK, *sorted(set(code[bad].tolist()) - {R.OK}))
    index = {v: i for i, v in enumerate(names)}
    codes = np.where(applies, 0, -1).astype(np.int8)
    for name, i in index.items():
        if i:
            codes[bad & (code == name)] = i
    return Codes(codes, names)


def _fixed_width(arr: pa.Array, mask: np.ndarray, width: int) -> np.ndarray:
    """The selected values (ASCII, at most ``width`` long) right-padded with '0', as a (k, width)
    byte matrix, straight from Arrow's buffers."""
    arr = pc.utf8_rpad(pc.filter(arr, pa.array(mask)), width=width, padding="0")
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int64 if pa.types.is_large_string(arr.type) else np.int32
    )
    start = int(offsets[arr.offset])
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[start : start + len(arr) * width]
    return data.reshape(-1, width)


def _maybe_xml_bad(arr: pa.Array) -> bool:
    """Whether the column's UTF-8 bytes hold a C0 control (but tab/LF/CR) or U+FFFE/U+FFFF at all:
    a byte scan that lets the regex run only on the rare column that needs it."""
    data = arr.buffers()[2]
    if data is None:
        return False
    d = np.frombuffer(data, dtype=np.uint8)
    if ((d < 0x20) & (d != 0x09) & (d != 0x0A) & (d != 0x0D)).any():
        return True
    ef = np.flatnonzero(d[:-2] == 0xEF)
    return bool(ef.size and ((d[ef + 1] == 0xBF) & ((d[ef + 2] == 0xBE) | (d[ef + 2] == 0xBF))).any())


def calendar(frame: Frame, name: str, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matches the pattern, is a real date/time, seconds since 1970 or NaN) of a text column."""
    arr = frame.text(name)
    n = len(arr)
    matched = frame.matches(name, pattern)
    valid = np.zeros(n, dtype=bool)
    epoch = np.full(n, np.nan)
    idx = np.flatnonzero(matched)
    if idx.size:
        raw = _fixed_width(arr, matched, 19)  # 'YYYY-MM-DD HH:MM:SS'; a date alone reads as 00:00:00
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


def derive(frame: Frame, plan_: R.Plan, options: spec.SpecOptions, cross: Mapping[str, Any]) -> None:
    """Add the plan's derived columns to ``frame`` (in place)."""
    memo: dict[str, Any] = {}
    for d in plan_.derived:
        if d.kind == "pdf" and d.name in frame:
            continue  # checked at extraction (normalize carried its outcome)
        src = frame.text(d.source[0]) if d.source[0] in frame else None
        match d.kind:
            case "bytes":
                frame[d.name] = _byte_lengths(src, options)
            case "digits":
                ok = frame.matches(d.source[0], R.INTEGER_RE)
                frame[d.name] = np.where(ok, pc.utf8_length(src).to_numpy(zero_copy_only=False), np.nan)
            case "calendar":
                matched, valid, _ = calendar(frame, d.source[0], d.param("pattern"))
                frame[d.name] = outcome(matched, valid, "calendar")
            case "epoch":
                frame[d.name] = calendar(frame, d.source[0], d.param("pattern"))[2]
            case "decimal":
                ok = frame.matches(d.source[0], R.DECIMAL_RE)
                values = np.full(frame.n, np.nan)
                if ok.any():  # Python's float() reads every form DECIMAL_RE admits ('1.', '.5', '+2')
                    values[ok] = [float(v) for v in pc.filter(src, pa.array(ok)).to_pylist()]
                frame[d.name] = values
            case "xml":
                bad = frame.matches(d.source[0], _XML_BAD) if _maybe_xml_bad(src) else np.zeros(frame.n, bool)
                if d.source[0] in frame.surrogates:
                    bad = bad | frame.surrogates[d.source[0]]
                frame[d.name] = outcome(frame.valid(d.source[0]), ~bad, "bad_char")
            case "pdf":
                frame[d.name] = _pdf_outcomes(src, d.param("max_bytes"))
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


def _byte_lengths(arr: pa.Array, options: spec.SpecOptions) -> np.ndarray:
    """VARCHAR2 lengths as SpecOptions.measured_length counts them (NaN where missing)."""
    if options.length_semantics == "byte" and options.length_encoding.replace("_", "-").lower() in (
        "utf-8",
        "utf8",
    ):
        return pc.binary_length(arr).to_numpy(zero_copy_only=False).astype(float)
    return np.array(
        [np.nan if v is None else options.measured_length(v) for v in arr.to_pylist()], dtype=float
    )


def _pdf_outcomes(arr: pa.Array, max_bytes: int) -> Codes:
    """Per row: 'ok', or missing / not_base64 / too_large / not_pdf / no_eof (first that applies)."""
    names = (R.OK, *R.OUTCOME_CODES["pdf"])
    code = {v: i for i, v in enumerate(names)}
    codes = np.full(len(arr), code["missing"], dtype=np.int8)
    for i, value in enumerate(arr.to_pylist()):
        text = pdf.compact(value) if value is not None else ""
        if text:
            codes[i] = code[pdf.outcome(text, max_bytes)]
    return Codes(codes, names)


def _id_analysis(frame: Frame) -> dict[str, Codes]:
    """Outcomes of the resident ID checks, vectorised (GB 11643: ISO 7064 MOD 11-2)."""
    id_no_col, id_type_col = R.ID_FIELDS
    n = frame.n
    id_no = frame.text(id_no_col)
    applies = bools(pc.equal(frame.text(id_type_col), R.RESIDENT_ID_TYPE)) & frame.valid(id_no_col)
    is18 = frame.matches(id_no_col, R.ID18_RE) & applies
    is15 = frame.matches(id_no_col, R.ID15_RE) & applies
    birth_ok = np.zeros(n, dtype=bool)
    check_ok = np.ones(n, dtype=bool)
    male = np.zeros(n, dtype=bool)
    birth = np.full(n, None, dtype=object)
    for width, mask in ((18, is18), (15, is15)):
        idx = np.flatnonzero(mask)
        if not idx.size:
            continue
        a = _fixed_width(id_no, mask, width)
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
    good = applies & (code == R.OK)
    out = {"id_card": outcome(applies, code == R.OK, code), "id_legacy": outcome(good, ~is15, "legacy15")}
    if R.SEX_FIELD in frame:
        sex = frame.text(R.SEX_FIELD)
        sex_applies = good & bools(pc.is_in(sex, value_set=pa.array(["1", "2"], type=TEXT)))
        out["id_sex"] = outcome(sex_applies, bools(pc.equal(sex, "1")) == male, "mismatch")
    if R.BIRTH_FIELD in frame:
        bd = frame.text(R.BIRTH_FIELD)
        _, bd_valid, _ = calendar(frame, R.BIRTH_FIELD, R.DATE_RE)
        b_applies = good & bd_valid
        out["id_birth"] = outcome(b_applies, np.array(bd.to_pylist(), dtype=object) == birth, "mismatch")
    return out


def missing(v: Any) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def record_keys(frame: pd.DataFrame, ent: spec.Entity) -> pd.Series:
    """store.record_key of every row, from the values as given (missing as null)."""
    return pd.Series(rows.record_keys(ent, frame), index=frame.index, dtype=object)
