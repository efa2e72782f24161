"""Rows as the store keeps them: canonical strings typed for their columns, and content hashes.

Beside :mod:`hurren.store` and below both :mod:`hurren.load` and :mod:`hurren.push` (which
import it; it imports neither), so the loader and the outbox share one definition without an
import cycle.

Two forms of the same definitions:

* per row: :func:`to_store_value` and :func:`content_hash` — the reference, and what a caller
  with one record uses;
* per column: :func:`typed_column`, :func:`json_column`, :func:`json_rows`,
  :func:`sha256_hex` and :func:`record_keys` (``store.record_key`` of every row) — what the
  loader uses on whole frames (no dict, no ``json.dumps`` per row: each value goes through one C
  call, rows are joined by numpy);
* by Arrow, where it holds a batch's text (:func:`arrow_texts`; a lone surrogate it cannot):
  :func:`record_hashes`, :func:`stored_texts`, :func:`row_hashes` and :func:`copy_text` — no
  Python object per value at all (the PACS views' millions of rows, the sub-items).

All give byte for byte what the per-row functions give (``tests/unit/test_rows.py`` proves it on
generated values, hostile strings included): a changed hash would make every stored report look
changed, and be pushed again.
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
    "copy_text",
    "json_column",
    "json_objects",
    "json_rows",
    "json_text",
    "record_hashes",
    "record_keys",
    "row_hash",
    "row_hashes",
    "sha256_hex",
    "sha256_spans",
    "stored_texts",
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


def _byte_set(chars: str) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[[ord(c) for c in chars]] = True
    return table


_JSON_ESCAPED_BYTES = _byte_set('"\\' + "".join(map(chr, range(0x20))))


def _holds_any(arr: pa.Array, table: np.ndarray) -> bool:
    """Whether a string array's data holds one of the ASCII bytes of ``table`` (one pass over its
    buffer: UTF-8 never uses an ASCII byte inside another character). May say yes for bytes of a
    slice's neighbours: callers then look value by value."""
    data = arr.buffers()[2]
    return data is not None and bool(table[np.frombuffer(data, dtype=np.uint8)].any())


def arrow_texts(columns: Mapping[str, np.ndarray]) -> dict[str, pa.Array] | None:
    """Text columns (str or missing: a canonical frame's) as Arrow strings, converted once for
    whatever reads them next (the content hashes, COPY's text); None when Arrow cannot hold a
    value (a lone surrogate)."""
    try:
        return {k: pa.array(v, type=pa.string(), from_pandas=True) for k, v in columns.items()}
    except (pa.ArrowException, UnicodeError):
        return None


def record_hashes(
    columns: Mapping[str, np.ndarray], n: int, texts: Mapping[str, pa.Array] | None = None
) -> list[str] | None:
    """:func:`content_hash` of ``n`` records without sub-items or PDF, from their text columns
    (str or missing: a canonical frame's; or ``texts``, the same as :func:`arrow_texts`), by Arrow:
    each row's JSON is joined column by column and hashed straight from Arrow's buffer, no Python
    string per value or row. None when Arrow cannot hold a value (a lone surrogate):
    :func:`json_column`'s path takes it then."""
    if n == 0 or not columns:
        return [content_hash({})] * n
    texts = texts if texts is not None else arrow_texts(columns)
    if texts is None:
        return None
    try:
        joined = json_objects(
            {name: json_text(texts[name]) for name in columns}, '{"items":[],"master":', "}"
        )
    except pa.ArrowException:  # beyond what one string array holds
        return None
    return sha256_spans(joined)


def json_text(arr: pa.Array) -> pa.Array:
    """:func:`json_column` of an Arrow text column: quoted by Arrow, the few values with something
    to escape through ``encode_basestring``."""
    out = pc.fill_null(pc.binary_join_element_wise('"', arr, '"', ""), "null")
    if not _holds_any(arr, _JSON_ESCAPED_BYTES):  # the usual column: nothing to look for row by row
        return out
    escape = pc.fill_null(pc.match_substring_regex(arr, _JSON_ESCAPED), False)
    if pc.any(escape).as_py():
        rows_ = np.flatnonzero(escape.to_numpy(zero_copy_only=False))
        out = pc.replace_with_mask(
            out, escape, pa.array([encode_basestring(arr[int(i)].as_py()) for i in rows_], pa.string())
        )
    return out


def json_objects(columns: Mapping[str, pa.Array], prefix: str = "", suffix: str = "") -> pa.Array:
    """Each row's JSON object, by Arrow, given each key's values already encoded (:func:`json_text`):
    keys sorted as ``sort_keys`` sorts them, what :func:`json_rows` gives; each between ``prefix``
    and ``suffix``. Raises ``pa.ArrowException`` beyond what one string array holds."""
    pieces: list[Any] = []
    for i, name in enumerate(sorted(columns)):
        pieces += (("," if i else prefix + "{") + encode_basestring(name) + ":", columns[name])
    return pc.binary_join_element_wise(*pieces, "}" + suffix, "")


def sha256_spans(strings: pa.Array) -> list[str]:
    """SHA-256 (hex) of each value of a string array without nulls, read from Arrow's buffer."""
    if not len(strings):
        return []
    data, offsets = text_spans(strings)
    sha = hashlib.sha256
    return [sha(data[a:b]).hexdigest() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def stored_texts(
    fields: Sequence[tuple[str, spec.Field]], texts: Mapping[str, pa.Array], typed: Mapping[str, np.ndarray]
) -> dict[str, pa.Array] | None:
    """Clean typed rows' values as text, by store column (``fields``: (column, field)), as ``str()``
    writes them (COPY's text, the row hashes), from the canonical text they were typed from
    (``texts``, by field: :func:`arrow_texts`): a datetime is that text (the strict form), a date
    its first ten characters, a whole number its typed value (``typed``, by column). None where
    Arrow cannot take a value (a number beyond 64 bits): the caller goes row by row then."""
    out = {}
    try:
        for column, f in fields:
            if f.type == "number":
                out[column] = pa.array(typed[column], type=pa.int64()).cast(pa.string())
            elif f.type == "date":
                out[column] = pc.utf8_slice_codeunits(texts[f.name], 0, 10)
            else:
                out[column] = texts[f.name]
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None
    return out


def row_hashes(fields: Sequence[tuple[str, spec.Field]], stored: Mapping[str, pa.Array]) -> list[str]:
    """:func:`row_hash` of each typed row, from its :func:`stored_texts`, by Arrow."""
    encoded = {}
    for column, f in fields:
        arr = stored[column]
        if f.type in ("datetime", "date"):  # json.dumps(default=str): the text, quoted
            arr = pc.binary_join_element_wise('"', arr, '"', "")
        elif f.type != "number":
            arr = json_text(arr)
        encoded[column] = pc.fill_null(arr, "null")
    return sha256_spans(json_objects(encoded))


_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))  # backslash first
_COPY_ESCAPED_BYTES = _byte_set("".join(old for old, _ in _COPY_ESCAPES))


def copy_text(
    fields: Sequence[tuple[str, spec.Field]],
    stored: Mapping[str, pa.Array],
    hashes: list[str],
    run_id: str | None,
) -> bytes | None:
    """Clean typed rows as COPY text (their :func:`stored_texts` by ``fields``, then
    their hash and run id), built by Arrow column by column: what ``write_row`` sends for the typed
    values, text escaped, null as ``\\N``. None when Arrow cannot (beyond what one array holds):
    the caller writes row by row then (``hurren.load.engines.copy_in``)."""
    try:
        columns = []
        for column, f in fields:
            arr = stored[column]
            if f.type not in ("datetime", "date", "number") and _holds_any(arr, _COPY_ESCAPED_BYTES):
                for old, new in _COPY_ESCAPES:
                    arr = pc.replace_substring(arr, old, new)
            columns.append(pc.fill_null(arr, "\\N"))
        n = len(hashes)
        columns += [
            pa.array(hashes, type=pa.string()),
            pa.array([run_id] * n, type=pa.string()).fill_null("\\N"),
        ]
        lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*columns, "\t"), "", "\n")
    except pa.ArrowException:
        return None
    if not len(lines):
        return b""
    data, offsets = text_spans(lines)
    return data[offsets[0] : offsets[-1]].tobytes()


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
