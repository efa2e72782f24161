"""The extraction SQL of every dialect: complete, parseable, bound, and (SQLite) run for real.

Oracle and SQL Server cannot run here. Their files are checked by parsing the rendered SQL with
sqlglot in that dialect (one SELECT, the projection the spec expects, bind parameters exactly the
documented ones, the dialect's own casts, no LIMIT/OFFSET/FETCH, upper-case PACS columns quoted)
and by compiling ``text()`` with SQLAlchemy's dialect (the bind names the driver will receive).
PostgreSQL runs for real in tests/integration/test_extract_pg.py; SQLite runs below.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import mssql, oracle, postgresql, sqlite
from sqlalchemy.engine import Dialect

from hurren import extract, sources, spec, synthetic

QUERIES = {
    # name: (bind parameters, entity whose fields are selected, or None for the plan)
    "lab_plan": ({"since", "until"}, None),
    "lab_masters": ({"first_dtime", "first_form_no", "last_dtime", "last_form_no"}, "labmaster"),
    "lab_items": ({"first_dtime", "first_form_no", "last_dtime", "last_form_no"}, "lab_subitem"),
    "exam_plan": ({"since", "until"}, None),
    "exam_masters": ({"first_dtime", "first_form_no", "last_dtime", "last_form_no"}, "exammaster"),
    "exam_items": ({"first_dtime", "first_form_no", "last_dtime", "last_form_no"}, "exam_subitem"),
    "lab_orphans": ({"since", "until"}, "lab_subitem"),
    "exam_orphans": ({"since", "until"}, "exam_subitem"),
    "pacs_instance": ({"since", "until"}, "v_web_jcjg"),
    "pacs_study": ({"since", "until"}, "v_web_jctj"),
    "accept": ({"since", "until"}, "sehr_accept_record"),
    "quote": ({"since", "until"}, "sehr_quote_record"),
}
SQLGLOT = {"oracle": "oracle", "mssql": "tsql", "postgresql": "postgres", "sqlite": "sqlite"}
SQLALCHEMY: dict[str, Dialect] = {
    "oracle": oracle.dialect(),
    "mssql": mssql.dialect(),
    "postgresql": postgresql.dialect(),
    "sqlite": sqlite.dialect(),
}
TIME_CAST = {"oracle": "DATE", "mssql": "DATETIME2", "postgresql": "TIMESTAMP"}
CASES = [pytest.param(d, q, id=f"{d}-{q}") for d in sources.DIALECTS for q in QUERIES]


def make_source(dialect: str, **extra: object) -> sources.Source:
    body = {"id": "t", "org_code": "1", "org_name": "T", "conn_id": "c", "dialect": dialect, **extra}
    return sources.parse_sources(json.dumps({"hospitals": [body]})).get("t")


@pytest.mark.parametrize("dialect", sources.DIALECTS)
def test_every_dialect_has_every_query_and_nothing_else(dialect: str) -> None:
    files = {p.stem for p in (extract.SQL_DIR / dialect).glob("*.sql")}
    assert files == set(QUERIES)


def test_every_stream_has_its_queries() -> None:
    expected = {f"{s}_{q}" for s in extract.REPORT_STREAMS for q in ("plan", "masters", "items", "orphans")}
    expected |= set(extract.RECORD_STREAMS)
    assert expected == set(QUERIES)


@pytest.mark.parametrize(("dialect", "name"), CASES)
def test_sqlalchemy_compiles_it_with_exactly_the_documented_binds(dialect: str, name: str) -> None:
    sql = extract.executable_sql(make_source(dialect), name)
    compiled = text(sql).compile(dialect=SQLALCHEMY[dialect])
    assert set(compiled.params) == QUERIES[name][0]
    assert "{{" not in sql and "}}" not in sql
    assert not [lit for lit in re.findall(r"'([^']*)'", sql) if ":" in lit]  # no bind-like text in a literal


@pytest.mark.parametrize(("dialect", "name"), CASES)
def test_sqlglot_parses_it_in_its_dialect(dialect: str, name: str) -> None:
    sqlglot = pytest.importorskip("sqlglot")
    exp = sqlglot.exp
    sql = extract.executable_sql(
        make_source(dialect, views={"labmaster": "LIS.V_LAB", "v_web_jctj": "V_WEB_JCTJ"}), name
    )
    statements = sqlglot.parse(sql, read=SQLGLOT[dialect], error_level=sqlglot.ErrorLevel.RAISE)
    assert len(statements) == 1
    tree = statements[0]
    assert isinstance(tree, exp.Select)
    binds, entity = QUERIES[name]
    assert {p.name for p in tree.find_all(exp.Placeholder)} == binds
    width = 3 if entity is None else len(spec.entity(entity).fields)
    assert len(tree.expressions) == width
    for node in (exp.Limit, exp.Offset, exp.Fetch):
        assert tree.find(node) is None, f"{node.__name__} in {dialect}/{name}"
    if dialect in TIME_CAST:
        casts = {c.to.this.name for c in tree.find_all(exp.Cast)}
        assert casts == {TIME_CAST[dialect]}, casts
    if entity and spec.entity(entity).kind == "view":
        upper = [
            i
            for i in tree.find_all(exp.Identifier)
            if i.name.isupper() and i.name not in ("LIS", "V_LAB", "V_WEB_JCTJ")
        ]
        assert upper and all(i.quoted for i in upper)


@pytest.mark.parametrize("name", QUERIES)
def test_oracle_writes_no_as_before_a_table_alias(name: str) -> None:
    sql = extract.executable_sql(make_source("oracle"), name)
    assert re.search(r"\bFROM\s+\S+\s+AS\s", sql, re.IGNORECASE) is None


def test_sqlglot_would_catch_a_broken_file() -> None:
    sqlglot = pytest.importorskip("sqlglot")
    with pytest.raises(sqlglot.errors.ParseError):
        sqlglot.parse(
            "SELECT a FROM t m WHERE (m.x >= CAST(:since AS DATE)",
            read="oracle",
            error_level=sqlglot.ErrorLevel.RAISE,
        )


# -- SQLite: every query runs for real ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_hospital(tmp_path_factory: pytest.TempPathFactory) -> str:
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
        defect_rate=0.1,  # orphan sub-items, so the *_orphans queries have rows to find
        defect_kinds=("lab_orphan_item", "exam_orphan_item"),
    )
    return f"sqlite:///{path}"


@pytest.mark.parametrize("name", QUERIES)
def test_every_sqlite_query_runs(sqlite_hospital: str, name: str) -> None:
    engine = create_engine(sqlite_hospital)
    s = make_source("sqlite")
    binds, entity = QUERIES[name]
    window = {"since": "2024-03-11 00:00:00", "until": "2024-03-12 00:00:00"}
    with engine.connect() as conn:
        if "since" in binds:
            rows = conn.execute(text(extract.executable_sql(s, name)), window).fetchall()
        else:
            plan = conn.execute(
                text(extract.executable_sql(s, name.replace("masters", "plan").replace("items", "plan"))),
                window,
            ).fetchall()
            first, last = plan[0], plan[-1]
            params = {
                "first_dtime": first[0],
                "first_form_no": first[1],
                "last_dtime": last[0],
                "last_form_no": last[1],
            }
            rows = conn.execute(text(extract.executable_sql(s, name)), params).fetchall()
    assert rows
    assert len(rows[0]) == (3 if entity is None else len(spec.entity(entity).fields))
    if entity is None:  # the plan: cursor values in the spec's text form, ascending
        assert all(datetime.strptime(r[0], spec.DATETIME_FORMAT) for r in rows)
        assert [tuple(r[:2]) for r in rows] == sorted(tuple(r[:2]) for r in rows)
    engine.dispose()
