"""Rows as the store keeps them: canonical strings typed for their columns, and content hashes.

Beside :mod:`hurren.store` and below both :mod:`hurren.load` and :mod:`hurren.push` (which
import it; it imports neither), so the loader and the outbox share one definition without an
import cycle.

Two forms of the same definitions:

* per row: :func:`to_store_value` and :func:`content_hash` — the reference, and what a caller
  with one record uses;
* per column: :func:`typed_column`, :func:`json_column`, :func:`json_rows`,
  :func:`sha256_hex` and :func:`record_keys` (``store.record_key`` of every row) — what the loader uses on whole frames (no dict, no ``json.dumps`` per
  row: each value goes through one C call, rows are joined by numpy). They give byte for byte
  what the per-row functions give (``tests/unit/test_rows.py`` proves it on generated values,
  hostile strings included): a changed hash would make every stored report look changed, and
  be pushed again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from json.encoder import encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hurren import spec

__all__ = [
    "BAD",
    "DATETIME_FORMAT",
    "arrow_texts",
    "canonical_json",
    "content_hash",
    "json_column",
    "json_rows",
    "record_hashes",
    "record_keys",
    "row_hash",
    "sha256_hex",
    "text_spans",
    "to_store_value",
    "typed_column",
]

# the spec's formats, as strict as strptime with them, ten times faster with fromisoformat
DATETIME_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
DATE_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def canonical_json(value: Any) -> str:
    """Key-sorted compact JSON, non-ASCII kept: the form every content hash is taken of."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def to_store_value(f: spec.Field, value: str | None) -> Any:
    """A canonical string as the store column's Python value; ValueError when it is not one."""
    if value is None:
        return None
    match f.type:
        case "datetime":
            if not DATETIME_FORMAT.fullmatch(value):
                raise ValueError(f"{f.name}: not YYYY-MM-DD HH:MM:SS")
            return datetime.fromisoformat(value)  # naive Beijing time; Feb 30 raises ValueError
        case "date":
            # D1: a datetime where a date is due is accepted and truncated to its date
            if not DATE_FORMAT.fullmatch(value[:10]):
                raise ValueError(f"{f.name}: not YYYY-MM-DD")
            return date.fromisoformat(value[:10])
        case "number":
            if not value or not (value.isdigit() or (value[0] == "-" and value[1:].isdigit())):
                raise ValueError(f"{f.name}: not a whole number")
            return int(value)
    return value


def content_hash(
    master: Mapping[str, Any], items: Sequence[Mapping[str, Any]] = (), pdf_sha256: str | None = None
) -> str:
    """SHA-256 of a report's canonical form: the master's fields (the PDF replaced by its
    SHA-256) and its sub-items in a fixed order (not the order the source returned them), as
    key-sorted compact JSON. The version the store and the outbox track."""
    row = {k: v for k, v in master.items() if k != "pdf"}
    if "pdf" in master:
        row["pdf"] = pdf_sha256
    body = {"master": row, "items": sorted((dict(i) for i in items), key=canonical_json)}
    return hashlib.sha256(canonical_json(body).encode("utf-8", "surrogatepass")).hexdigest()


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of one typed store row (a sub-item's ``etl_content_hash``)."""
    return hashlib.sha256(canonical_json(dict(row)).encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------------------------
# per column


class _Bad:
    """A value that does not convert to its column's type."""

    def __repr__(self) -> str:
        return "BAD"


BAD = _Bad()


def _missing(values: pd.Series) -> np.ndarray:
    return pd.isna(values).to_numpy(dtype=bool)


def typed_column(f: spec.Field, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(typed values as an object array, where they are bad): :func:`to_store_value` of each
    value, missing ones (None, NaN) None, failures :data:`BAD`. Text goes through untouched."""
    missing = _missing(values)
    out = values.to_numpy(dtype=object, copy=True)
    out[missing] = None
    if f.type not in ("datetime", "date", "number"):
        return out, np.zeros(len(out), dtype=bool)

    def convert(v: Any) -> Any:
        try:
            return to_store_value(f, v)
        except (ValueError, TypeError, AttributeError):
            return BAD

    present = ~missing
    codes, distinct = pd.factorize(out[present])  # a day's times and numbers repeat: each converted once
    converted = np.empty(len(distinct), dtype=object)
    converted[:] = [convert(v) for v in distinct]
    out[present] = converted[codes]
    bad = np.zeros(len(out), dtype=bool)
    bad[present] = np.fromiter((v is BAD for v in converted), dtype=bool, count=len(converted))[codes]
    return out, bad


def _json_str(v: str) -> str:
    return encode_basestring(v)


def _json_datetime(v: date) -> str:  # str() of a date or datetime needs no escape
    return f'"{v}"'


_JSON_BY_TYPE = {str: _json_str, datetime: _json_datetime, date: _json_datetime, int: int.__repr__}


def json_column(values: np.ndarray | pd.Series) -> np.ndarray:
    """Each value as :func:`canonical_json` writes it (missing values ``null``): strings through
    the C encoder json.dumps itself uses, dates and whole numbers as json.dumps writes them
    (``default=str``), anything else through json.dumps."""
    arr = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
    out = np.empty(len(arr), dtype=object)
    if set(map(type, arr)) <= {str, type(None)}:  # canonical text (no NaN to look for): one C call each
        out[:] = [("null" if v is None else encode_basestring(v)) for v in arr]
        return out
    missing = pd.isna(arr)
    out[missing] = "null"
    present = ~missing
    get = _JSON_BY_TYPE.get
    out[present] = [get(type(v), canonical_json)(v) for v in arr[present]]
    return out


def json_rows(columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The JSON objects of ``n`` rows given each key's encoded values (:func:`json_column`), keys
    sorted as ``sort_keys`` sorts them: what :func:`canonical_json` gives for the row's dict."""
    names = sorted(columns)
    template = "{" + ",".join(encode_basestring(k).replace("%", "%%") + ":%s" for k in names) + "}"
    out = np.empty(n, dtype=object)
    out[:] = [template % t for t in zip(*(columns[k] for k in names), strict=True)] if names else ["{}"] * n
    return out


_JSON_ESCAPED = r'["\\\x00-\x1f]'  # what encode_basestring escapes (ensure_ascii=False); RE2 syntax


def arrow_texts(columns: Mapping[str, np.ndarray]) -> dict[str, pa.Array] | None:
    """Text columns (str or missing: a canonical frame's) as Arrow strings, converted once for
    whatever reads them next (the content hashes, COPY's text); None when Arrow cannot hold a
    value (a lone surrogate)."""
    try:
        return {k: pa.array(v, type=pa.string(), from_pandas=True) for k, v in columns.items()}
    except (pa.ArrowException, UnicodeError):
        return None


def _json_text(arr: pa.Array) -> pa.Array:
    """:func:`json_column` of an Arrow text column: quoted by Arrow, the few values with something
    to escape through ``encode_basestring``."""
    out = pc.fill_null(pc.binary_join_element_wise('"', arr, '"', ""), "null")
    escape = pc.fill_null(pc.match_substring_regex(arr, _JSON_ESCAPED), False)
    if pc.any(escape).as_py():
        rows_ = np.flatnonzero(escape.to_numpy(zero_copy_only=False))
        out = pc.replace_with_mask(
            out, escape, pa.array([encode_basestring(arr[int(i)].as_py()) for i in rows_], pa.string())
        )
    return out


def record_hashes(
    columns: Mapping[str, np.ndarray], n: int, texts: Mapping[str, pa.Array] | None = None
) -> list[str] | None:
    """:func:`content_hash` of ``n`` records without sub-items or PDF, from their text columns
    (str or missing: a canonical frame's; or ``texts``, the same as :func:`arrow_texts`), by Arrow:
    each row's JSON is joined column by column and hashed straight from Arrow's buffer, no Python
    string per value or row. None when Arrow cannot hold a value (a lone surrogate):
    :func:`json_column`'s path takes it then."""
    names = sorted(columns)
    if n == 0 or not names:
        return [content_hash({})] * n
    texts = texts if texts is not None else arrow_texts(columns)
    if texts is None:
        return None
    try:
        pieces: list[Any] = []
        for i, name in enumerate(names):
            pieces += (
                ("," if i else '{"items":[],"master":{') + encode_basestring(name) + ":",
                _json_text(texts[name]),
            )
        joined = pc.binary_join_element_wise(*pieces, "}}", "")
    except pa.ArrowException:  # beyond what one string array holds
        return None
    data, offsets = text_spans(joined)
    sha = hashlib.sha256
    return [sha(data[a:b]).hexdigest() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def text_spans(strings: pa.Array) -> tuple[memoryview, list[int]]:
    """A string array's data buffer and its ``len + 1`` offsets: value ``i`` (none missing) is
    ``data[offsets[i]:offsets[i + 1]]``, read without a Python string per value."""
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + n + 1]
    return memoryview(strings.buffers()[2]), offsets.tolist()


def sha256_hex(texts: Sequence[str] | np.ndarray) -> list[str]:
    """SHA-256 (hex) of each text's UTF-8 (surrogates passed through, as content_hash does)."""
    sha = hashlib.sha256
    return [sha(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def record_keys(entity: spec.Entity, frame: pd.DataFrame) -> np.ndarray:
    """``store.record_key`` of every row of ``frame`` (a JSON array of the key's values as text,
    missing ones null, as ``json.dumps(..., ensure_ascii=False)`` writes it), column by column."""
    n = len(frame)
    parts = []
    for k in entity.key:
        values = frame[k].to_numpy(dtype=object) if k in frame.columns else np.full(n, None, dtype=object)
        missing = pd.isna(values)
        out = np.full(n, "null", dtype=object)
        out[~missing] = [encode_basestring(v if type(v) is str else str(v)) for v in values[~missing]]
        parts.append(out)
    template = "[" + ", ".join(["%s"] * len(parts)) + "]"
    keys = np.empty(n, dtype=object)
    keys[:] = [template % t for t in zip(*parts, strict=True)] if parts else ["[]"] * n
    return keys
