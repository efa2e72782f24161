"""The pandas engine: each check of the plan as a vectorised boolean mask (GX's semantics)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hurren import rules as R
from hurren.validation.exceptions import ValidationError


def run(frame: pd.DataFrame, plan_: R.Plan) -> dict[str, np.ndarray]:
    """The failing row positions of every check of the plan."""
    return {c.id: np.flatnonzero(_fails(frame, c.test)) for c in plan_.checks}


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
