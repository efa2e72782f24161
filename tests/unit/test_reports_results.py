"""Validation results kept per hospital-day: slimmed GX results, merging, per-rule counts, retention."""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from hurren import extract, sources, validation
from hurren.reports import results
from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import synthetic

DAY = date(2024, 3, 11)


def _gx_like(unexpected: int, *, element_count: int = 10, values: bool = True) -> dict:
    """The shape of ExpectationSuiteValidationResult.to_json_dict() for two column map expectations."""

    def one(check_id: str, field: str, bad: int) -> dict:
        result = {
            "element_count": element_count, "unexpected_count": bad, "missing_count": 1,
            "unexpected_percent": 100.0 * bad / (element_count - 1), "missing_percent": 10.0,
            "unexpected_index_column_names": ["__row"],
            "unexpected_index_list": [{"__row": list(range(bad))}],
            "partial_unexpected_index_list": [{"__row": list(range(bad))}],
            "unexpected_index_query": "df.filter(...)",
        }  # fmt: skip
        if values:
            result["partial_unexpected_list"] = ["650102198001010016"] * bad
            result["partial_unexpected_counts"] = [{"value": "张三丰", "count": bad}]
            result["unexpected_list"] = ["1980-01-01"] * bad
        return {
            "success": bad == 0,
            "expectation_config": {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"batch_id": "hurren_validation-labmaster", "column": field, "regex": r"\A\d+\Z"},
                "meta": {"check_id": check_id, "rule": "number", "field": field, "entity": "labmaster"},
                "description": f"number ({field})",
                "severity": "critical",
                "id": check_id,
            },
            "result": result,
            "meta": {},
            "exception_info": {
                "raised_exception": False,
                "exception_traceback": None,
                "exception_message": None,
            },
        }

    return {
        "success": unexpected == 0,
        "suite_name": "hurren.labmaster.a.b",
        "statistics": {},
        "results": [
            one("labmaster.event_type.number.format", "event_type", unexpected),
            one("x.id_no", "id_no", 0),
        ],
        "meta": {
            "great_expectations_version": "1.24.1",
            "batch_spec": {"batch_data": "PandasDataFrame"},
            "active_batch_definition": {
                "data_asset_name": "labmaster",
                "batch_identifiers": {"dataframe": "<DATAFRAME>"},
            },
        },
    }


def test_slim_keeps_counts_and_configuration_and_drops_every_value_and_row_id():
    s = results.slim(_gx_like(3))
    text = json.dumps(s, ensure_ascii=False)
    for leak in (
        "650102198001010016",
        "张三丰",
        "1980-01-01",
        "__row",
        "df.filter",
        "batch_id",
        "<DATAFRAME>",
    ):
        assert leak not in text
    r = s["results"][0]
    assert r["result"]["element_count"] == 10 and r["result"]["unexpected_count"] == 3
    assert r["expectation_config"]["kwargs"] == {"column": "event_type", "regex": r"\A\d+\Z"}
    assert s["statistics"] == {
        "evaluated_expectations": 2, "successful_expectations": 1, "unsuccessful_expectations": 1, "success_percent": 50.0,
    }  # fmt: skip
    assert s["success"] is False


def test_merge_adds_counts_expectation_by_expectation():
    a, b = results.slim(_gx_like(0)), results.slim(_gx_like(2, element_count=30))
    m = results.merge(a, b)
    r = {x["expectation_config"]["meta"]["check_id"]: x for x in m["results"]}
    bad = r["labmaster.event_type.number.format"]
    assert (
        bad["result"]["element_count"],
        bad["result"]["unexpected_count"],
        bad["result"]["missing_count"],
    ) == (40, 2, 2)
    assert bad["success"] is False and r["x.id_no"]["success"] is True
    assert bad["result"]["unexpected_percent"] == pytest.approx(100 * 2 / 38)
    assert m["statistics"]["unsuccessful_expectations"] == 1
    assert results.merge(None, a) == a
    # an expectation only one side has is kept as it is
    c = copy.deepcopy(b)
    c["results"][0]["expectation_config"]["meta"]["check_id"] = "new.check"
    assert len(results.merge(a, c)["results"]) == 3


def test_data_day_is_the_day_of_the_last_instant_of_the_window():
    assert results.data_day("2024-03-12 00:00:00") == date(2024, 3, 11)
    assert results.data_day(datetime(2024, 3, 12, 10, 30)) == date(2024, 3, 12)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """One lab batch of a synthetic hospital with a quarter of its reports broken, pandas engine."""
    path = Path(tmp_path_factory.mktemp("results")) / "h.db"
    h = synthetic.make_hospitals(1, seed=21)[0]
    synthetic.generate_hospital_day(f"sqlite:///{path}", org=h, day=DAY, lab_reports=40, exam_reports=0, seed=21,
                                    defect_rate=0.25, pdf_kb=1, lab_items=3)  # fmt: skip
    src = sources.parse_sources(json.dumps({"hospitals": [
        {"id": "u", "org_code": h.org_code, "org_name": h.name, "conn_id": "c", "dialect": "sqlite", "chunk_size": 1000}]})).get("u")  # fmt: skip
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        batch = next(
            iter(extract.read_reports(conn, src, "lab", datetime(2024, 3, 11), datetime(2024, 3, 12)))
        )
    v = validation.validate_reports(
        batch.masters,
        batch.items,
        master_entity="labmaster",
        engine="pandas",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    engine.dispose()
    return h, v, batch


def test_summary_counts_rows_and_reports_per_rule_without_any_value(verdicts):
    h, v, batch = verdicts
    s = results.summarize(v)
    m = s["labmaster"]
    assert m["rows"] == len(batch.masters) and s["lab_subitem"]["rows"] == len(batch.items)
    assert m["held"] == len(v.held_keys) > 0
    assert m["records"] >= len(batch.masters)
    failing = v.failures.groupby("rule")["record_key"].nunique().to_dict()
    assert {r: x["records"] for r, x in m["record_rules"].items() if x["records"]} == failing
    assert "pdf" in m["rules"] and "limits_order" in s["lab_subitem"]["rules"]  # applicable, even at 0
    text = json.dumps(s, ensure_ascii=False)
    for value in batch.masters["id_no"].dropna().tolist() + batch.masters["name"].dropna().tolist():
        assert value not in text


def test_keep_folds_batches_into_one_row_per_hospital_day_and_entity(verdicts, tmp_path):
    h, v, _ = verdicts
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    kw = dict(org_code=h.org_code, org_name=h.name, source="u", stream="lab", day=DAY)
    results.keep(engine, v, run_id="r1", **kw)
    with engine.connect() as conn:
        first = results.day_rows(conn, org_code=h.org_code)
        fp1 = results.fingerprint(first)
    results.keep(engine, v, run_id="r2", **kw)
    with engine.connect() as conn:
        rows = results.day_rows(conn, org_code=h.org_code)
        days = results.hospital_days(conn)
    assert [(r.entity, r.batches, r.last_run_id) for r in rows] == [
        ("labmaster", 2, "r2"),
        ("lab_subitem", 2, "r2"),
    ]
    master = rows[0]
    assert master.is_master and master.summary["held"] == 2 * len(v.held_keys)
    assert master.row_count == 2 * first[0].row_count
    assert not master.has_gx  # the pandas engine has no GX result
    assert results.fingerprint(rows) != fp1
    assert [(d.org_code, d.day, d.records, d.held) for d in days] == [
        (h.org_code, DAY, master.summary["records"], master.summary["held"])
    ]


def test_the_hook_never_raises_into_the_load(verdicts, caplog):
    h, v, _ = verdicts

    class Broken:
        url = None

    summary = type("S", (), {"stream": "lab", "until": "2024-03-12 00:00:00"})()
    source = type("Src", (), {"id": "u", "org_code": h.org_code, "org_name": h.name})()
    results.keep_validation(Broken(), v, summary, source=source, run_id="r")
    assert "not kept for Data Docs" in caplog.text


def test_retention_drops_gx_results_and_keeps_the_summaries(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    results.ensure_table(engine)
    t = results.validation_result
    now = datetime(2024, 3, 12)
    with engine.begin() as conn:
        for day in (date(2024, 3, 1), date(2024, 3, 11)):
            conn.execute(t.insert().values(
                org_code="1", source="s", stream="lab", entity="labmaster", master_entity="labmaster", day=day,
                batches=1, row_count=1, summary="{}", gx_result=json.dumps(results.slim(_gx_like(1))),
                first_at=now, updated_at=now))  # fmt: skip
    assert results.prune_results(engine, before=date(2024, 3, 5)) == 1
    with engine.connect() as conn:
        got = dict(conn.execute(select(t.c.day, t.c.gx_result.is_not(None))).all())
    assert got == {date(2024, 3, 1): False, date(2024, 3, 11): True}


def test_the_site_index_stays_fast_with_thousands_of_results(tmp_path):
    """100 hospitals × 30 days × 2 entities: the index is one grouped read and one small page."""
    import time as _time

    from hurren.reports import pages

    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    results.ensure_table(engine)
    t = results.validation_result
    now = datetime(2024, 4, 1)
    summary = json.dumps({"rows": 500, "records": 500, "held": 7, "rules": {}, "record_rules": {}})
    rows = [
        dict(org_code=f"{100000000 + o}", org_name=f"医院{o}", source=f"s{o}", stream="lab", entity=e,
             master_entity="labmaster", day=date(2024, 3, 1) + timedelta(days=d), batches=48, row_count=500,
             summary=summary, gx_result='{"results": []}', first_at=now, updated_at=now)
        for o in range(100) for d in range(30) for e in ("labmaster", "lab_subitem")
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)
    start = _time.perf_counter()
    with engine.connect() as conn:
        hdays = results.hospital_days(conn, since=date(2024, 3, 1))
    html = pages.site_index_html(hdays, keep_days=30, on=date(2024, 3, 30))
    elapsed = _time.perf_counter() - start
    assert len(hdays) == 3000 and hdays[0].records == 500 and hdays[0].held == 7
    assert html.count("datadocs/") == 3000
    # a guard against work that grows with the square of the results, not a benchmark: ~1 s here,
    # 2.7 s once on a busy day of this shared machine
    assert elapsed < 5.0, f"site index took {elapsed:.2f} s"
