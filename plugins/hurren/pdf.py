"""Report PDFs, checked and decoded once, right after extraction.

The spec sends each report's PDF as Base64 text (a BLOB column is Base64-encoded by the
extraction). :func:`detach` checks every PDF of a batch (the validation rule ``pdf``: missing,
not_base64, too_large, not_pdf, no_eof) and decodes the good ones, so that from there on the
batch carries, in place of ~133 KB of text per report, a :class:`Pdf` (bytes + SHA-256) that is
never copied: validation reads the outcome column ``__pdf__<field>`` and ``pdf_size``
(:mod:`hurren.validation.derived`), the load puts ``Pdf.data`` to S3 and keys it by its SHA-256.
A PDF that fails keeps its text, so the quarantine shows what the hospital sent.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import pandas as pd

OK = "ok"  # hurren.rules.OK
SPACE = "\t\n\r "  # MIME / Oracle UTL_ENCODE line breaks are tolerated, no other whitespace
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MAGIC = b"%PDF-"
TAIL = 1024  # %%EOF must be within the last 1024 bytes (ISO 32000 implementation note)
SIZE_COLUMN = "pdf_size"  # the decoded size, beside the outcome column


@dataclass(frozen=True, slots=True, eq=False)
class Pdf:
    """A decoded report PDF. Its repr and str never show the bytes (a log line stays short)."""

    data: bytes
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Pdf:
        return cls(data, hashlib.sha256(data).hexdigest())

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def __repr__(self) -> str:
        return f"Pdf({len(self.data)} bytes, sha256={self.sha256[:12]}…)"

    __str__ = __repr__


def outcome_column(field_name: str) -> str:
    """The outcome column of a PDF field's check (the validation plan's derived column)."""
    return f"__pdf__{field_name}"


def b64_size(t: str) -> int:
    """The decoded size of Base64 text ``t`` (no whitespace)."""
    return len(t) // 4 * 3 - (2 if t.endswith("==") else 1 if t.endswith("=") else 0)


def compact(value: str) -> str:
    """``value`` without the whitespace Base64 may carry (str.replace: C speed, no copy if none)."""
    for c in SPACE:
        value = value.replace(c, "")
    return value


def is_base64(t: str) -> bool:
    """Whether ``t`` is canonical Base64: ASCII alphabet only, length a multiple of 4, at most two
    ``=`` and only at the end (what ``\\A(?:[A-Za-z0-9+/]{4})*(?:..==|...=)?\\Z`` says, at C speed)."""
    body = t.rstrip("=")
    if len(t) % 4 or len(t) - len(body) > 2:
        return False
    try:
        raw = body.encode("ascii")
    except UnicodeEncodeError:
        return False
    return not raw.translate(None, _ALPHABET)


def outcome(t: str, max_bytes: int) -> str:
    """'ok' or the first failure of Base64 text ``t`` (whitespace removed, not empty), decoding
    only its first and last bytes."""
    if not is_base64(t):
        return "not_base64"
    if b64_size(t) > max_bytes:
        return "too_large"
    head = base64.b64decode(t[:8])
    tail = base64.b64decode(t[max(0, len(t) - 4 * ((TAIL + 2) // 3 + 1)) :])[-TAIL:]  # whole quanta
    return "not_pdf" if not head.startswith(MAGIC) else ("no_eof" if b"%%EOF" not in tail else OK)


def read(value: object, max_bytes: int) -> tuple[str, int | None, Pdf | None]:
    """(outcome, decoded size, the PDF when the outcome is 'ok') of one extracted value."""
    if isinstance(value, Pdf):
        return OK, len(value.data), value
    if not isinstance(value, str) or not value:
        return "missing", None, None
    t = value
    if not is_base64(t):  # most PDFs come without line breaks: checked once
        t = compact(value)
        if not t:
            return "missing", None, None
        if not is_base64(t):
            return "not_base64", None, None
    data = base64.b64decode(t)
    if len(data) > max_bytes:
        return "too_large", len(data), None
    if not data.startswith(MAGIC):
        return "not_pdf", len(data), None
    if b"%%EOF" not in data[-TAIL:]:
        return "no_eof", len(data), None
    return OK, len(data), Pdf.of(data)


def detach(masters: pd.DataFrame, field_name: str, max_bytes: int) -> pd.DataFrame:
    """The batch with its PDFs checked and the good ones decoded: ``field_name`` holds a
    :class:`Pdf` where the check passed (its text otherwise), the outcome column
    :func:`outcome_column` and :data:`SIZE_COLUMN` are added. A frame already detached, or
    without the field, is returned as it is."""
    col = outcome_column(field_name)
    if field_name not in masters.columns or col in masters.columns:
        return masters
    found = [read(v, max_bytes) for v in masters[field_name].to_numpy(dtype=object)]
    out = masters.copy(deep=False)
    out[field_name] = pd.Series([p if p is not None else v for (_, _, p), v in zip(found, masters[field_name], strict=True)],
                                index=masters.index, dtype=object)  # fmt: skip
    out[col] = pd.Series([o for o, _, _ in found], index=masters.index, dtype=object)
    out[SIZE_COLUMN] = pd.Series([s for _, s, _ in found], index=masters.index, dtype=object)
    return out
