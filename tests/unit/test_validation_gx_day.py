"""GX once per run (hurren.validation.gx_day): the same results as GX per batch, one call, bounded.

The batches are the single-defect cases of test_validation.py (every rule broken somewhere) cut
into several batches, with one clean report repeated in two batches (a duplicate across batches,
which per-batch uniqueness does not see, so the run-wide GX run must not either). GX is counted
by wrapping the real ``validate_gx`` (the wrapper only counts and calls through).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from hurren import rules, spec
from hurren.reports.results import merge, slim
from hurren.validation import GxDay, pandas_engine, validate_records, validate_reports
from hurren.validation import gx_day as gx_day_module
from hurren.validation.derived import Frame
from tests.unit.test_validation import CASES, RECORD_CASES, frames, key_of, lab_report

RB = rules.load_rulebook()
SITE = {"options": spec.DEFAULT_OPTIONS, "rulebook": RB}

CHUNKS = 4


@pytest.fixture(scope="module")
def chunks() -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    reports = [
        c.build(n)
        for n, c in enumerate(CASES, start=1)
        if c.kind == "lab" and c.options == spec.SpecOptions()
    ]
    cut = [reports[i::CHUNKS] for i in range(CHUNKS)]
    twice = lab_report(9999)  # the same report in the first two batches: not a duplicate within one
    cut[0].append(twice)
    cut[1].append(twice)
    return [frames(*c) for c in cut]


@pytest.fixture
def gx_calls(monkeypatch) -> list[int]:
    """Rows of each GX call GxDay makes."""
    calls: list[int] = []
    real = gx_day_module.validate_gx

    def counted(data, plan_, rb):
        calls.append(len(data))
        return real(data, plan_, rb)

    monkeypatch.setattr(gx_day_module, "validate_gx", counted)
    return calls


def held_tables(obj: Any, depth: int = 0) -> Iterator[Any]:
    """Frames, DataFrames or Arrow tables reachable from ``obj``'s attributes and containers."""
    if isinstance(obj, Frame | pd.DataFrame | pa.Table | pa.RecordBatch):
        yield obj
    elif depth < 6:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        elif isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, list | tuple):
            children = list(obj)
        elif isinstance(obj, GxDay):
            children = list(vars(obj).values())
        else:
            children = []
        for c in children:
            yield from held_tables(c, depth + 1)


def merged(results) -> str:
    out = None
    for r in results:
        out = merge(out, slim(r.to_json_dict()))
    return json.dumps(out, sort_keys=True, ensure_ascii=False)


@pytest.fixture(scope="module")
def per_batch(chunks) -> dict[str, str]:
    """Today's GX per batch, merged as the hospital-day row keeps it."""
    results: dict[str, list] = {}
    for m, i in chunks:
        v = validate_reports(m, i, master_entity="labmaster", engine="gx", **SITE)
        for ent, r in v.gx_results.items():
            results.setdefault(ent, []).append(r)
    return {ent: merged(rs) for ent, rs in results.items()}


def test_one_gx_call_per_entity_gives_the_per_batch_results(chunks, per_batch, gx_calls):
    with GxDay(RB) as day:
        verdicts = [
            validate_reports(m, i, master_entity="labmaster", engine="pandas", **SITE, gx_day=day)
            for m, i in chunks
        ]
        out = day.run()
    assert day.batches == CHUNKS and out.batches == CHUNKS
    assert out.calls == 2 and len(gx_calls) == 2  # labmaster and lab_subitem, once each for 4 batches
    assert out.rows == {
        "labmaster": sum(len(m) for m, _ in chunks),
        "lab_subitem": sum(len(i) for _, i in chunks),
    }
    assert out.disagreements == []
    assert {ent: merged(rs) for ent, rs in out.results.items()} == per_batch
    failing = {json.loads(per_batch["labmaster"])["statistics"]["unsuccessful_expectations"]}
    assert failing != {0}  # the day has defects: the comparison compared failures
    # the duplicate across batches is no failure; the cases' own duplicates (within a batch) are
    twice = key_of(lab_report(9999)[0][0])
    assert all(twice in set(v.record_keys) and twice not in v.held_keys for v in verdicts[:2])
    unique = [
        r
        for r in json.loads(per_batch["labmaster"])["results"]
        if r["expectation_config"]["meta"]["rule"] == "unique_key"
    ]
    assert unique and unique[0]["result"]["unexpected_count"] > 0


def test_gx_built_each_configuration_once_gives_the_same_results(chunks, per_batch, monkeypatch):
    """``gx_engine._configurations_once`` caches each expectation's configuration within a GX call (its
    fixed cost per expectation fell by ~40 %): with it off, every result is the same; with it on, GX
    builds each expectation object's configuration once per call, not once per kwarg it looks up."""
    from contextlib import nullcontext

    from great_expectations.expectations.expectation import Expectation

    from hurren.validation import gx_engine

    built = Expectation.__dict__["configuration"]
    counts = {"built": 0}

    def counted(self):
        counts["built"] += 1
        return built.fget(self)

    monkeypatch.setattr(Expectation, "configuration", property(counted))
    m, i = chunks[0]
    cached = validate_reports(m, i, master_entity="labmaster", engine="gx", **SITE)
    with_cache = counts["built"]
    monkeypatch.setattr(gx_engine, "_configurations_once", nullcontext)
    uncached = validate_reports(m, i, master_entity="labmaster", engine="gx", **SITE)
    assert Expectation.__dict__["configuration"].fget is counted  # the cache put the property back
    expectations = sum(len(r.results) for r in cached.gx_results.values())
    # GX makes ~15 objects of each expectation in a call; it built the configuration 34,318 times
    # without the cache, 3,915 times with it, for 261 expectations
    assert expectations <= with_cache and 4 * with_cache < counts["built"] - with_cache
    for ent in cached.gx_results:
        assert merged([cached.gx_results[ent]]) == merged([uncached.gx_results[ent]])
    pd.testing.assert_frame_equal(cached.failures, uncached.failures)


def test_a_disagreement_with_the_pandas_verdicts_is_reported(chunks, monkeypatch):
    real = pandas_engine.run

    def one_check_lost(frame, plan_):  # the pandas engine "forgets" the failures of one check
        hits = real(frame, plan_)
        for cid in hits:
            if cid.endswith(".dictionary.not_in") and len(hits[cid]):
                hits[cid] = np.empty(0, np.int64)
        return hits

    monkeypatch.setattr(pandas_engine, "run", one_check_lost)
    with GxDay(RB) as day:
        for m, i in chunks:
            validate_reports(m, i, master_entity="labmaster", engine="pandas", **SITE, gx_day=day)
        out = day.run()
    assert out.disagreements
    for d in out.disagreements:
        assert d.check_id.endswith(".dictionary.not_in") and d.rule == "dictionary"
        assert d.gx_only > 0 and d.pandas_only == 0
        assert all(0 <= b < CHUNKS and r >= 0 for b, r in d.examples)
        assert "GX failed" in str(d) and json.dumps(d.as_dict())


def test_memory_bound_staged_files_and_calls_of_at_most_max_rows(chunks, per_batch, gx_calls):
    biggest = max(len(i) for _, i in chunks)
    with GxDay(RB, max_rows=biggest + 1) as day:  # at most one batch of sub-items per call
        for m, i in chunks:
            validate_reports(m, i, master_entity="labmaster", engine="pandas", **SITE, gx_day=day)
        files = day.staged_files
        assert len(files) == 2 * CHUNKS and all(f.is_file() and f.stat().st_size > 0 for f in files)
        staged = sum(pa.ipc.open_file(pa.memory_map(str(f))).read_all().num_rows for f in files)
        assert staged == sum(len(m) + len(i) for m, i in chunks)  # every row is in the files...
        assert not list(held_tables(day))  # ...and none in memory: no frame or table kept
        schema = pa.ipc.open_file(pa.memory_map(str(files[0]))).schema  # labmaster's first batch
        assert "pdf" not in schema.names and "__pdf__pdf" in schema.names  # the PDF's outcome, not its bytes
        out = day.run()
    assert not day.directory.exists()  # closed: the staged rows are gone
    assert len(gx_calls) == out.calls > 2
    assert max(gx_calls) <= biggest + 1
    assert out.disagreements == []
    assert {ent: merged(rs) for ent, rs in out.results.items()} == per_batch


def test_records_once_per_run():
    rows = pd.DataFrame([r for c in RECORD_CASES for r in c[1]])
    halves = [rows.iloc[: len(rows) // 2], rows.iloc[len(rows) // 2 :]]
    per = merged(
        validate_records(h, entity="sehr_accept_record", engine="gx", **SITE).gx_result for h in halves
    )
    with GxDay(RB) as day:
        for h in halves:
            validate_records(h, entity="sehr_accept_record", engine="pandas", **SITE, gx_day=day)
        out = day.run()
    assert out.calls == 1 and out.disagreements == []
    assert merged(out.results["sehr_accept_record"]) == per
