"""Failures and their bilingual messages: built only for the rows that fail, identifiers masked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hurren import pdf, spec
from hurren import rules as R
from hurren.validation.derived import XML_BAD_PY, Frame, missing

PDF_SIZE = pdf.SIZE_COLUMN  # the decoded size, carried by frames whose PDFs were checked after extraction
FAILURE_COLUMNS = ("entity", "row", "record_key", "field", "rule", "check", "severity", "message")
_CHAR_RULES = {"xml_chars": XML_BAD_PY, "invisible_chars": re.compile(R.INVISIBLE_RE)}  # {char}, {position}


class _Ctx(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def assemble(
    parts: list[tuple[R.Plan, Frame, pd.DataFrame, Mapping[str, np.ndarray], np.ndarray, tuple[str, ...]]],
    rb: R.RuleBook,
) -> tuple[pd.DataFrame, dict[tuple[str, int], str]]:
    """The failures frame (sorted by entity, row, check order) and labels for sub-item rows."""
    cols: dict[str, list[Any]] = {k: [] for k in (*FAILURE_COLUMNS, "_e", "_c")}
    labels: dict[tuple[str, int], str] = {}
    for e_rank, (plan_, frame, raw, hits, keys, label_cols) in enumerate(parts):
        for c_rank, c in enumerate(plan_.checks):
            pos = hits.get(c.id)
            if pos is None or not len(pos):
                continue
            severity = rb.severity(c.rule, c.entity, c.field)
            take = _Taker(frame, raw, pos)
            checks = take(c.test.column) if isinstance(c.test, R.Outcome) else [c.check] * len(pos)
            base = {
                "field": c.field,
                "entity": c.entity,
                "zh_name": field_label(c.entity, c.field),
                "other_field": c.other_field or "?",
                "other_zh_name": field_label(c.entity, c.other_field) if c.other_field else "?",
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
                    shown = (f"{k}={_show(k, take(k)[j])}" for k in label_cols if k in frame)
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

    def __init__(self, frame: Frame, raw: pd.DataFrame, pos: np.ndarray) -> None:
        self.frame, self.raw, self.pos = frame, raw, pos
        self._memo: dict[tuple[bool, str], list[Any]] = {}

    def __call__(self, column: str, *, raw: bool = False) -> list[Any]:
        key = (raw, column)
        if key not in self._memo:
            if not raw:
                self._memo[key] = self.frame.take(column, self.pos)
            elif column in self.raw.columns:  # by position, whatever the index
                self._memo[key] = self.raw[column].take(self.pos).tolist()
            else:
                self._memo[key] = [None] * len(self.pos)
        return self._memo[key]


def _fill(ctx: _Ctx, c: R.Check, check: str, take: _Taker, j: int) -> None:
    """Per-failure message placeholders. Values of patient identifiers are masked."""
    if c.field in take.frame:
        ctx["value"] = _show(c.field, take(c.field)[j])
    if c.other_field:
        ctx["other_value"] = _show(c.other_field, take(c.other_field)[j])
    if isinstance(c.test, R.AtMost):
        v = float(take(c.test.column)[j])
        ctx["actual"] = str(int(v)) if v.is_integer() else f"{v:g}"
    elif isinstance(c.test, R.MaxChars):
        ctx["actual"] = str(len(str(take(c.test.column)[j])))
    if c.rule == "pdf" and check == "too_large":
        text = take(c.field)[j]
        if missing(text):  # checked at extraction: the size it measured
            size = take(PDF_SIZE, raw=True)[j]
            ctx["actual"] = "?" if missing(size) else str(int(size))
        else:
            ctx["actual"] = str(pdf.b64_size(pdf.compact(str(text))))
    if c.rule in _CHAR_RULES:
        value = take(c.field, raw=True)[j]
        m = _CHAR_RULES[c.rule].search(value) if isinstance(value, str) else None
        if m:
            ctx["char"] = f"U+{ord(m.group()):04X}"
            ctx["position"] = str(m.start() + 1)


def _show(field_name: str, value: Any, limit: int = 40) -> str:
    """A value as a message may show it: quoted, control characters escaped, long text cut;
    patient identifiers masked."""
    if missing(value):
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


def field_label(entity: str, field_name: str) -> str:
    ent = spec.entity(entity)
    if field_name in ent.names:
        return ent.field(field_name).zh_name
    if field_name in spec.entities():
        return spec.entity(field_name).title
    parts = field_name.split(",")
    if all(p in ent.names for p in parts):
        return "、".join(ent.field(p).zh_name for p in parts)
    return field_name
