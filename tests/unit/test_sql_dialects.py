"""The extraction queries of every dialect: complete, parseable, bound, readable, and (SQLite) run
against a Python reading of what they must return.

Oracle and SQL Server cannot run here. Their queries are checked by parsing what SQLAlchemy
compiles with sqlglot in that dialect (one SELECT, the projection the spec expects, bind
parameters exactly the documented ones, the dialect's own casts, no LIMIT/OFFSET/FETCH,
upper-case PACS columns quoted) and by compiling with SQLAlchemy's dialect (the bind names the
driver will receive). SQLite runs below; PostgreSQL and MariaDB in
tests/integration/test_extract_sources.py.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
import sqlglot
from sqlalchemy import create_engine

from hurren import sources, spec, sql
from hurren_testkit import synthetic
from tests import sql_reference

TIME_CAST = {"oracle": "DATE", "mssql": "DATETIME2", "postgresql": "TIMESTAMP", "mysql": "DATETIME"}
CASES = [pytest.param(d, q, id=f"{d}-{q}") for d in sources.DIALECTS for q in sql.QUERIES]
CONFIGURED = {
    "views": {"labmaster": "LIS.V_LAB", "v_web_jctj": "V_WEB_JCTJ"},
    "pacs_study_uid_column": "STUDYIUID",
}


def make_source(dialect: str, **extra: object) -> sources.Source:
    body = {"id": "t", "org_code": "1", "org_name": "T", "conn_id": "c", "dialect": dialect, **extra}
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("t")


def test_every_stream_has_its_queries_and_nothing_else() -> None:
    expected = {f"{s}_{q}" for s in ("lab", "exam") for q in ("plan", "masters", "items", "orphans")}
    expected |= {"pacs_instance", "pacs_study", "accept", "quote"}
    assert set(sql.QUERIES) == expected
    assert not (spec.INCLUDE / "sql").exists()  # no hand-copied query per dialect


@pytest.mark.parametrize(("dialect", "name"), CASES)
def test_sqlalchemy_compiles_it_with_exactly_the_documented_binds(dialect: str, name: str) -> None:
    compiled = sql.query(make_source(dialect), name).compile(dialect=sql.sql_dialect(dialect))
    assert set(compiled.params) == set(sql.QUERIES[name].binds)
    text = str(compiled)
    assert not [
        lit for lit in re.findall(r"'([^']*)'", text) if ":" in lit or "%" in lit
    ]  # no bind-like literal


WINDOWED = [c for c in CASES if "until" in sql.QUERIES[c.values[1]].binds]


@pytest.mark.parametrize(("dialect", "name"), WINDOWED)
def test_an_open_ended_window_drops_only_its_upper_bound(dialect: str, name: str) -> None:
    """The future range (hurren.pipeline) reads without ``until``: no cast bind reaches past
    9999-12-31 23:59:59 in SQLite, Oracle or MySQL."""
    query = sql.query(make_source(dialect), name, open_end=True)
    compiled = query.compile(dialect=sql.sql_dialect(dialect, paramstyle="named"))
    assert set(compiled.params) == set(sql.QUERIES[name].binds) - {"until"}
    tree = sqlglot.parse_one(str(compiled), read=sql.SQLGLOT[dialect])
    assert {p.name for p in tree.find_all(sqlglot.exp.Placeholder)} == set(compiled.params)


@pytest.mark.parametrize(("dialect", "name"), CASES)
def test_sqlglot_parses_it_in_its_dialect(dialect: str, name: str) -> None:
    exp = sqlglot.exp
    sql_text = sql.compiled(make_source(dialect, **CONFIGURED), name)
    statements = sqlglot.parse(sql_text, read=sql.SQLGLOT[dialect], error_level=sqlglot.ErrorLevel.RAISE)
    assert len(statements) == 1
    tree = statements[0]
    assert isinstance(tree, exp.Select)
    d = sql.QUERIES[name]
    assert {p.name for p in tree.find_all(exp.Placeholder)} == set(d.binds)
    width = 3 if d.entity is None else len(spec.entity(d.entity).fields)
    assert len(tree.expressions) == width
    for node in (exp.Limit, exp.Offset, exp.Fetch):
        assert tree.find(node) is None, f"{node.__name__} in {dialect}/{name}"
    if dialect in TIME_CAST:
        casts = {c.to.this.name for c in tree.find_all(exp.Cast)}
        assert casts == {TIME_CAST[dialect]}, casts
    else:  # SQLite: timestamps are text, normalised by datetime() on both sides
        assert tree.find(exp.Cast) is None and "datetime(" in sql_text
    if d.entity and spec.entity(d.entity).kind == "view":
        upper = [
            i
            for i in tree.find_all(exp.Identifier)
            if i.name.isupper() and i.name not in ("LIS", "V_LAB", "V_WEB_JCTJ")
        ]
        assert upper and all(i.quoted for i in upper)


@pytest.mark.parametrize(("dialect", "name"), CASES)
def test_the_readable_rendering_is_the_same_query(dialect: str, name: str) -> None:
    s = make_source(dialect, **CONFIGURED)
    pretty = sql.readable(s, name)
    read = sql.SQLGLOT[dialect]
    assert sqlglot.parse_one(pretty, read=read) == sqlglot.parse_one(sql.compiled(s, name), read=read)
    assert all(f":{b}" in pretty for b in sql.QUERIES[name].binds)
    assert "\n  " in pretty  # pretty-printed, one clause a line


@pytest.mark.parametrize("name", sql.QUERIES)
def test_oracle_writes_no_as_before_a_table_alias(name: str) -> None:
    text = sql.compiled(make_source("oracle", **CONFIGURED), name)
    assert re.search(r"\bFROM\s+\S+\s+AS\s", text, re.IGNORECASE) is None


def test_names_come_from_configuration_and_spec() -> None:
    s = make_source("oracle", **CONFIGURED)
    text = sql.compiled(s, "lab_masters")
    assert "FROM LIS.V_LAB m" in text
    assert ", ".join(f"m.{f}" for f in spec.entity("labmaster").names[:3]) in text
    pacs = sql.compiled(s, "pacs_study")
    assert 'v."STUDYIUID"' in pacs and 'v."MODIFYTIME"' in pacs and "STUDIUIID" not in pacs
    assert "v.[FILEPATH]" in sql.compiled(make_source("mssql"), "pacs_instance")
    assert "v.`FILEPATH`" in sql.compiled(make_source("mysql"), "pacs_instance")
    assert "CAST(:since AS DATETIME)" in sql.compiled(make_source("mysql"), "lab_plan")


def test_a_name_that_is_not_an_identifier_never_reaches_sql() -> None:
    s = make_source("postgresql")
    bad = sources.Source(
        **{**{f: getattr(s, f) for f in s.__slots__}, "views": {**s.views, "labmaster": "x; DROP TABLE y"}}
    )
    with pytest.raises(sql.SqlBuildError, match="not a plain identifier"):
        sql.query(bad, "lab_masters")
    with pytest.raises(sql.SqlBuildError, match="no extraction query"):
        sql.query(s, "lab_everything")


def test_sqlglot_would_catch_a_broken_statement() -> None:
    with pytest.raises(sqlglot.errors.ParseError):
        sqlglot.parse(
            "SELECT a FROM t m WHERE (m.x >= CAST(:since AS DATE)",
            read="oracle",
            error_level=sqlglot.ErrorLevel.RAISE,
        )


def test_the_command_lists_and_shows_queries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sql.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in sql.QUERIES) and "first_form_no" in listed
    assert sql.main(["show", "oracle", "lab_masters"]) == 0
    shown = capsys.readouterr().out
    assert (
        "-- lab_masters (oracle)" in shown
        and "CAST(:first_dtime AS DATE)" in shown
        and "FROM labmaster m" in shown
    )
    conf = tmp_path / "sources.json"
    body = {"id": "west", "org_code": "1", "org_name": "W", "conn_id": "c", "dialect": "mssql", **CONFIGURED}
    conf.write_text(json.dumps({"hospitals": [{**body, "streams": ["lab"]}]}))
    monkeypatch.setenv("HURREN_SOURCES_FILE", str(conf))
    assert sql.main(["show", "west"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("-- lab_") == 4 and "pacs" not in shown and "FROM LIS.V_LAB AS m" in shown


# -- SQLite: every query runs for real, and returns what a Python reading of the tables says -----------


@pytest.fixture(scope="module")
def sqlite_hospital(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = Path(tmp_path_factory.mktemp("sqlite_hospital")) / "h.db"
    hs = synthetic.make_hospitals(2, seed=5)
    synthetic.generate_hospital_day(
        f"sqlite:///{path}",
        org=hs[0],
        day="2024-03-11",
        lab_reports=40,
        exam_reports=20,
        seed=5,
        peers=hs,
        pdf_kb=1,
        lab_items=3,
        defect_rate=0.3,  # orphan sub-items (the *_orphans queries), NULL keys, duplicates
    )
    return f"sqlite:///{path}", hs[0].org_code


@pytest.mark.parametrize(
    "window",
    [(datetime(2024, 3, 11), datetime(2024, 3, 12)), (datetime(2024, 3, 11, 9), datetime(2024, 3, 11, 15))],
    ids=["day", "hours"],
)
def test_every_sqlite_query_returns_what_the_tables_say(sqlite_hospital: tuple[str, str], window) -> None:  # noqa: ANN001
    url, _ = sqlite_hospital
    engine = create_engine(url)
    with engine.connect() as conn:
        compared = sql_reference.check_every_query(conn, make_source("sqlite"), window, chunk=7)
    engine.dispose()
    assert compared > 100
