"""Preparation shared by both engines: the batch normalised, and the plan's derived columns.

:func:`normalize` turns the rows given (canonical strings or missing values) into the frame the
engines read: every spec column as an Arrow-backed string, '' as missing (Oracle stores '' as
NULL), positions 0..n-1 whatever the frame's index, plus the row id ``__row``. :func:`derive` adds
the plan's derived columns (:class:`hurren.rules.Derived`): byte lengths, check digits, real
calendar dates, resident ID analysis, Base64 PDFs, cross-table links — float arrays (NaN where a
check does not apply) or outcome columns (missing, ``ok`` or the failure's name).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hurren import rules as R
from hurren import spec, store
from hurren.validation.exceptions import ValidationError

log = logging.getLogger("hurren.validation")

ROW_ID = "__row"
STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas 3 "str", backed by Arrow
_XML_BAD = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"  # literal characters: the same in re and RE2
XML_BAD_PY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
B64_SPACE = r"[\t\n\r ]"  # MIME / Oracle UTL_ENCODE line breaks are tolerated
_B64_RE = r"\A(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z"
_PDF_TAIL = 1024  # %%EOF must be within the last 1024 bytes (ISO 32000 implementation note)
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def normalize(frame: pd.DataFrame, ent: spec.Entity) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
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


def link_of(frame: pd.DataFrame, cols: tuple[str, ...]) -> pd.Series:
    """The link columns joined (missing if any part is missing)."""
    if len(cols) == 1:
        return frame[cols[0]]
    parts = [pa.array(frame[c].array) for c in cols]
    joined = pc.binary_join_element_wise(*parts, pa.scalar("\x1f", type=parts[0].type))
    return pd.Series(pd.array(joined, dtype=STR), index=frame.index)


def outcome(applies: np.ndarray, ok: np.ndarray, code: str | np.ndarray) -> pd.Categorical:
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


def calendar(s: pd.Series, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def derive(
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
                matched, valid, _ = calendar(src, d.param("pattern"))
                frame[d.name] = outcome(matched, valid, "calendar")
            case "epoch":
                frame[d.name] = calendar(src, d.param("pattern"))[2]
            case "decimal":
                ok = src.str.contains(R.DECIMAL_RE, na=False).to_numpy(dtype=bool)
                frame[d.name] = pd.to_numeric(src.where(ok), errors="coerce").to_numpy(dtype=float)
            case "xml":
                bad = np.zeros(n, dtype=bool)
                if _maybe_xml_bad(src):
                    bad = src.str.contains(_XML_BAD, na=False).to_numpy(dtype=bool)
                if d.source[0] in surrogates:
                    bad = bad | surrogates[d.source[0]]
                frame[d.name] = outcome(present, ~bad, "bad_char")
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
    text = s.str.replace(B64_SPACE, "", regex=True)
    present = (text.notna() & (text != "")).to_numpy()
    b64 = text.str.contains(_B64_RE, na=False).to_numpy(dtype=bool) & present
    out[present & ~b64] = "not_base64"
    values = text.to_numpy(dtype=object)
    for i in np.flatnonzero(b64):
        t = values[i]
        if b64_size(t) > max_bytes:
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


def b64_size(t: str) -> int:
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
    id_card = outcome(applies, code == R.OK, code)
    good = applies & (code == R.OK)
    out = {"id_card": id_card, "id_legacy": outcome(good, ~is15, "legacy15")}
    if R.SEX_FIELD in frame:
        sex_code = frame[R.SEX_FIELD]
        sex_applies = good & sex_code.isin(["1", "2"]).to_numpy()
        out["id_sex"] = outcome(sex_applies, (sex_code == "1").to_numpy() == male, "mismatch")
    if R.BIRTH_FIELD in frame:
        bd = frame[R.BIRTH_FIELD]
        _, bd_valid, _ = calendar(bd, R.DATE_RE)
        b_applies = good & bd_valid
        out["id_birth"] = outcome(b_applies, bd.to_numpy(dtype=object) == birth, "mismatch")
    return out


def missing(v: Any) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def record_keys(frame: pd.DataFrame, ent: spec.Entity) -> pd.Series:
    """store.record_key of every row, from the values as given (missing as null)."""
    cols = [frame[k].to_numpy(dtype=object) if k in frame.columns else [None] * len(frame) for k in ent.key]
    keys = [
        store.record_key(ent, {k: (None if missing(v) else v) for k, v in zip(ent.key, vals, strict=True)})
        for vals in zip(*cols, strict=True)
    ] if len(frame) else []  # fmt: skip
    return pd.Series(keys, index=frame.index, dtype=object)
