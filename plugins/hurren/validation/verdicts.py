"""The outcome of validating one batch: failures, held record keys, reasons."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hurren.validation.exceptions import ValidationError
from hurren.validation.messages import field_label

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

Engine = Literal["gx", "pandas"]


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
            label = field_label(r.entity, r.field)
            sev = "错误 error" if r.severity == "error" else "警告 warning"
            lines.append(f"- [{sev}] {where} ({label}) {r.rule}: {r.message}")
        return "\n".join(lines)
