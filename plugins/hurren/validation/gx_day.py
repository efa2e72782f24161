"""Great Expectations once per run: a run's prepared batches staged to disk, validated at the end.

The pandas engine decides every batch (verdicts, quarantine, load). Where a hospital wants GX's
results for its analysts (``"validator": "gx"``), each batch's prepared :class:`Frame` — the
columns GX reads (:func:`~hurren.validation.gx_engine.gx_columns`: raw spec columns, derived
columns and outcomes, never a PDF's Base64 text) — is written to an Arrow IPC file in a private
temporary directory (:meth:`GxDay.add`, from ``validate_reports(..., gx_day=...)``), with the
pandas engine's failing rows. At the end of the run :meth:`GxDay.run` validates the staged rows
of each entity with GX in as few calls as the memory bound allows (``max_rows`` per call, default
500k rows; whole staged batches per call), so GX's fixed cost (~2.8 s per call for a lab
report's ~200 expectations) is paid once per run instead of once per batch.

Row ids are numbered across the run (``__row``), and ``__batch`` is the batch's number: the
uniqueness expectations key on it, so they check each batch, as per-batch runs did. GX's failing
rows of every expectation are compared with the pandas engine's: any difference is a
:class:`Disagreement` (counts and (batch, row) positions only, never a value), which the caller
logs as an error and records with the run's validation results.

Memory: one GX call's rows (at most ``max_rows``, or one batch when a batch is larger) and the
failing row ids; the staged files are removed by :meth:`GxDay.close` (a context manager).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from hurren import rules as R
from hurren.validation.derived import ROW_ID, STR, Codes, Frame
from hurren.validation.exceptions import ValidationError
from hurren.validation.gx_engine import BATCH_ID, gx_columns, validate_gx

DEFAULT_MAX_ROWS = 500_000
_EXAMPLES = 5  # (batch, row) positions named per disagreement


@dataclass(frozen=True)
class Disagreement:
    """GX and the pandas engine failed different rows on one check of one entity."""

    entity: str
    check_id: str
    rule: str
    field: str
    gx_only: int  # rows GX failed and the pandas engine passed
    pandas_only: int  # rows the pandas engine failed and GX passed
    examples: tuple[tuple[int, int], ...]  # (batch number in the run, row position in the batch)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: the check, counts and positions, no value."""
        return {
            "entity": self.entity,
            "check_id": self.check_id,
            "rule": self.rule,
            "field": self.field,
            "gx_only": self.gx_only,
            "pandas_only": self.pandas_only,
            "examples": [list(e) for e in self.examples],
        }

    def __str__(self) -> str:
        return (
            f"{self.check_id}: GX failed {self.gx_only} row(s) the pandas engine passed and passed "
            f"{self.pandas_only} it failed, e.g. (batch, row) {list(self.examples)}"
        )


@dataclass
class GxDayResult:
    """What :meth:`GxDay.run` found: the GX results of each entity (one per GX call), the
    disagreements with the pandas engine, and what it cost."""

    results: dict[str, list[Any]] = field(default_factory=dict)  # entity -> ExpectationSuiteValidationResults
    disagreements: list[Disagreement] = field(default_factory=list)
    calls: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0


@dataclass
class _Staged:
    """One entity's staged batches: its plan, files, where each batch's rows start, pandas' hits."""

    plan: R.Plan
    files: list[tuple[Path, int]] = field(default_factory=list)  # (file, rows)
    starts: list[int] = field(default_factory=list)  # first run-wide row id of each file
    batch_numbers: list[int] = field(default_factory=list)
    rows: int = 0
    pandas_hits: dict[str, list[np.ndarray]] = field(default_factory=dict)  # check -> run-wide row ids


class GxDay:
    """A run's batches staged for one GX validation at the end (see the module's docstring)."""

    def __init__(
        self,
        rulebook: R.RuleBook,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        directory: str | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValidationError(f"max_rows must be positive, got {max_rows}")
        self.rulebook = rulebook
        self.max_rows = max_rows
        self.directory = Path(tempfile.mkdtemp(prefix="hurren-gx-", dir=directory))  # mode 0700
        self.batches = 0
        self._staged: dict[str, _Staged] = {}

    def __enter__(self) -> GxDay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the staged files (they hold the batches' rows)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def staged_files(self) -> list[Path]:
        return [f for s in self._staged.values() for f, _ in s.files]

    def add(self, parts: Sequence[tuple[R.Plan, Frame, dict[str, np.ndarray]]]) -> None:
        """Stage one batch: each entity's plan, prepared frame and the pandas engine's failing row
        positions per check (``validate_reports``/``validate_records`` call this)."""
        number = self.batches
        self.batches += 1
        for plan_, frame, hits in parts:
            if frame.n == 0:
                continue
            st = self._staged.setdefault(plan_.entity, _Staged(plan_))
            if st.plan.fingerprint != plan_.fingerprint:
                raise ValidationError(f"{plan_.entity}: the rules changed within a run")
            start = st.rows
            table = _table(frame, plan_, start, number)
            path = self.directory / f"{plan_.entity}-{number:06d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            st.files.append((path, frame.n))
            st.starts.append(start)
            st.batch_numbers.append(number)
            st.rows += frame.n
            for cid, pos in hits.items():
                if len(pos):
                    st.pandas_hits.setdefault(cid, []).append(np.asarray(pos, dtype=np.int64) + start)

    def run(self) -> GxDayResult:
        """GX over every staged row, entity by entity, in calls of at most ``max_rows`` rows; then
        GX's failing rows against the pandas engine's."""
        t0 = time.perf_counter()
        out = GxDayResult(batches=self.batches)
        for entity, st in self._staged.items():
            gx_hits: dict[str, list[np.ndarray]] = {}
            for data in self._groups(st):
                hits, result = validate_gx(data, st.plan, self.rulebook)
                del data
                out.calls += 1
                out.results.setdefault(entity, []).append(result)
                for cid, ids in hits.items():
                    gx_hits.setdefault(cid, []).append(ids)
            out.rows[entity] = st.rows
            out.disagreements.extend(_compare(st, gx_hits))
        out.seconds = time.perf_counter() - t0
        return out

    def _groups(self, st: _Staged) -> Iterator[pd.DataFrame]:
        """The staged batches read back, whole batches per group, at most ``max_rows`` rows each
        (a larger batch alone)."""
        group: list[Path] = []
        rows = 0
        for path, n in st.files:
            if group and rows + n > self.max_rows:
                yield _read(group)
                group, rows = [], 0
            group.append(path)
            rows += n
        if group:
            yield _read(group)


def _table(frame: Frame, plan_: R.Plan, start: int, number: int) -> pa.Table:
    """The columns GX reads, with run-wide row ids and the batch number, as Arrow."""
    columns: dict[str, pa.Array] = {}
    for name in gx_columns(plan_):
        col = frame.columns.get(name)
        if col is None:
            continue
        if name == ROW_ID:
            columns[name] = pa.array(np.arange(start, start + frame.n, dtype=np.int64))
        elif isinstance(col, Codes):
            columns[name] = pa.DictionaryArray.from_arrays(
                col.codes, pa.array(col.names, type=pa.string()), mask=col.codes < 0
            )
        elif isinstance(col, np.ndarray):
            columns[name] = pa.array(col)
        else:
            columns[name] = col
    columns[BATCH_ID] = pa.array(np.full(frame.n, number, dtype=np.int32))
    return pa.table(columns)


def _read(paths: list[Path]) -> pd.DataFrame:
    """Staged files as the DataFrame GX validates (the dtypes of :meth:`Frame.to_pandas`)."""
    tables = []
    for path in paths:
        with pa.memory_map(str(path)) as source:
            tables.append(pa.ipc.open_file(source).read_all())
    table = pa.concat_tables(tables)
    del tables
    out: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            out[name] = col.to_pandas()  # categorical; the batches' outcome names unified
        elif pa.types.is_large_string(col.type) or pa.types.is_string(col.type):
            out[name] = pd.array(col.combine_chunks(), dtype=STR)
        else:
            out[name] = col.to_numpy()
    return pd.DataFrame(out)


def _compare(st: _Staged, gx_hits: dict[str, list[np.ndarray]]) -> list[Disagreement]:
    empty = np.empty(0, np.int64)
    starts = np.asarray(st.starts, dtype=np.int64)
    found = []
    for c in st.plan.checks:
        gx = np.unique(np.concatenate(gx_hits.get(c.id) or [empty]))
        pd_ = np.unique(np.concatenate(st.pandas_hits.get(c.id) or [empty]))
        gx_only, pandas_only = np.setdiff1d(gx, pd_), np.setdiff1d(pd_, gx)
        if not (gx_only.size or pandas_only.size):
            continue
        ids = np.concatenate([gx_only, pandas_only])[:_EXAMPLES]
        which = np.searchsorted(starts, ids, side="right") - 1
        examples = tuple(
            (st.batch_numbers[w], int(i - starts[w]))
            for w, i in zip(which.tolist(), ids.tolist(), strict=True)
        )
        found.append(
            Disagreement(c.entity, c.id, c.rule, c.field, int(gx_only.size), int(pandas_only.size), examples)
        )
    return found
