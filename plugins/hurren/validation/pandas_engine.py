"""The pandas engine: each check of the plan as a vectorised boolean mask, with GX's semantics
(missing values are skipped except by not-null; row conditions select the rows first).

It reads the prepared :class:`~hurren.validation.derived.Frame` (Arrow and numpy arrays) rather
than pandas Series: a check costs microseconds, not pandas' per-call overhead, so a chunk of the
pipeline's size (~10k rows, ~200 checks) is decided in tens of milliseconds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hurren import rules as R
from hurren.validation.derived import TEXT, Codes, Frame, bools
from hurren.validation.exceptions import ValidationError


def run(frame: Frame, plan_: R.Plan) -> dict[str, np.ndarray]:
    """The failing row positions of every check of the plan."""
    return {c.id: np.flatnonzero(_fails(frame, c.test)) for c in plan_.checks}


def _when(frame: Frame, when: R.When | None) -> np.ndarray | bool:
    return True if when is None else _equals(frame, when.column, when.value)


def _equals(frame: Frame, column: str, value: str) -> np.ndarray:
    col = frame[column]
    if isinstance(col, Codes):
        return col.codes == (col.names.index(value) if value in col.names else -2)
    if isinstance(col, np.ndarray):
        raise ValidationError(f"row condition on the numeric column {column}")
    return bools(pc.equal(col, pa.scalar(value, type=TEXT)))


def _numbers(frame: Frame, column: str) -> np.ndarray:
    col = frame[column]
    if not isinstance(col, np.ndarray):
        raise ValidationError(f"{column} is not a numeric (derived) column")
    return col


def _fails(frame: Frame, test: R.Test) -> np.ndarray:
    """True for each row that breaks ``test``."""
    match test:
        case R.NotNull(column=c, when=w):
            return ~frame.valid(c) & _when(frame, w)
        case R.IsNull(column=c, when=w):
            return frame.valid(c) & _when(frame, w)
        case R.InSet(column=c, values=values):
            col = frame[c]
            if isinstance(col, Codes):
                allowed = np.array([n in values for n in col.names])
                return (col.codes >= 0) & ~allowed[np.maximum(col.codes, 0)]
            return frame.valid(c) & ~bools(pc.is_in(col, value_set=pa.array(list(values), type=TEXT)))
        case R.Matches(column=c, pattern=p, when=w):
            return frame.valid(c) & ~frame.matches(c, p) & _when(frame, w)
        case R.NotMatches(column=c, pattern=p):
            return frame.matches(c, p)
        case R.MaxChars(column=c, limit=limit):
            return bools(pc.greater(pc.utf8_length(frame.text(c)), limit))
        case R.AtMost(column=c, limit=limit):
            v = _numbers(frame, c)
            return ~np.isnan(v) & (v > limit)
        case R.Outcome(column=c):
            col = frame[c]
            if not isinstance(col, Codes):
                raise ValidationError(f"{c} is not an outcome column")
            return col.codes > 0
        case R.UniqueTogether(columns=cols):
            return _duplicated(frame, cols)
        case R.NotLess(a=a, b=b):
            va, vb = _numbers(frame, a), _numbers(frame, b)
            return ~np.isnan(va) & ~np.isnan(vb) & ~(va >= vb)
    raise ValidationError(f"no pandas evaluation for {test!r}")


def _duplicated(frame: Frame, cols: tuple[str, ...]) -> np.ndarray:
    """Rows whose values of ``cols`` (all present) occur more than once."""
    complete = np.logical_and.reduce([frame.valid(c) for c in cols])
    out = np.zeros(frame.n, dtype=bool)
    if complete.sum() < 2:
        return out
    sel = pa.array(complete)
    key = np.zeros(int(complete.sum()), dtype=np.int64)
    for c in cols:  # one integer per distinct combination (mixed radix of the dictionary codes)
        enc = pc.dictionary_encode(pc.filter(frame.text(c), sel))
        key = key * len(enc.dictionary) + enc.indices.to_numpy(zero_copy_only=False)
        if len(cols) > 1:  # keep the key small: renumber the combinations seen so far
            key = np.unique(key, return_inverse=True)[1].ravel().astype(np.int64)
    out[complete] = np.bincount(key)[key] > 1
    return out
