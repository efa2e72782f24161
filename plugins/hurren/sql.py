"""The extraction SQL, built from the spec: one SQLAlchemy Core query per stream and purpose,
compiled for each source dialect (``oracle``, ``mssql``, ``postgresql`` — also KingbaseES and
openGauss —, ``mysql`` — also MariaDB — and ``sqlite`` for the demo).

Nothing else builds SQL for a hospital database. Tables and columns are SQLAlchemy ``table()`` /
``column()`` objects named from :mod:`hurren.spec` (the entity's fields, in spec order), the
hospital's configured view names and its PACS study-UID column (D11); values are always bind
parameters. To see what a hospital's database will be asked, pretty-printed with the bind
parameter names visible::

    python -m hurren.sql list                      # the queries, their binds, what they return
    python -m hurren.sql show oracle lab_masters   # one query for a dialect (spec view names)
    python -m hurren.sql show korla_mch            # every query of a configured hospital

========================  ============================================  ==================================
query                     binds                                         returns
========================  ============================================  ==================================
``lab_plan``,             ``since``, ``until``                          ``(last_update_dtime,
``exam_plan``                                                           report_form_no, count)`` of the
                                                                        masters in ``[since, until)``, in
                                                                        extraction order
``lab_masters``,          ``first_dtime``, ``first_form_no``,           the masters of one chunk, every
``exam_masters``          ``last_dtime``, ``last_form_no``              spec field in spec order
``lab_items``,            the same four                                 the sub-items of exactly those
``exam_items``                                                          masters (``EXISTS`` on the master
                                                                        with the same chunk predicate)
``lab_orphans``,          ``since``, ``until``                          sub-items changed in the window
``exam_orphans``                                                        whose master does not exist at all
``pacs_instance``         ``since``, ``until``                          ``v_web_jcjg`` rows by ``CREATEDTIME``
``pacs_study``            ``since``, ``until``                          ``v_web_jctj`` rows by ``MODIFYTIME``
``accept``, ``quote``     ``since``, ``until``                          accept / quote records by
                                                                        ``record_time`` (their only time)
========================  ============================================  ==================================

Windows are half-open, ``since <= t < until``, in the source's naive local time (Beijing). Rows
are ordered by the cursor, then the entity's key, so a watermark advanced after each committed
batch never passes a row that is not committed.

Why a plan and chunk bounds
---------------------------
A window of reports is read chunk by chunk so memory stays bounded by one chunk (``chunk_size``
masters with their sub-items). ``<stream>_plan`` lists the window's ``(last_update_dtime,
report_form_no)`` pairs with counts; :func:`hurren.extract.plan_chunks` cuts the list into chunks
and keeps only each chunk's first and last pair. A chunk is then read with two queries that share
one predicate on the master::

    t >= :first_dtime AND t <= :last_dtime
    AND (t > :first_dtime OR COALESCE(report_form_no, ' ') >= :first_form_no)
    AND (t < :last_dtime  OR COALESCE(report_form_no, ' ') <= :last_form_no)

so masters and sub-items always describe the same reports. This needs no LIMIT/OFFSET or
``FETCH FIRST`` (none on old Oracle, and unstable under concurrent writes), no row-value
comparisons (Oracle and SQL Server have none), no key lists (Oracle's 1000-element IN limit),
only one open result set at a time (pymssql has no MARS; a streamed MySQL result blocks its
connection), and every comparison is made by the source database itself, so its collation never
has to agree with Python's. The chunk bounds are bound back exactly as the database returned
them, so equality is exact. The ``COALESCE`` keeps a master with an (invalid) NULL
``report_form_no`` inside its chunk, so validation sees and reports it instead of the extract
silently skipping it. Run the queries in one snapshot (:func:`hurren.extract.source_snapshot`)
and the plan, the masters and the sub-items all see the same data.

Names
-----
View and table names come from ``sources.json`` (default: the entity's name), checked on load
and again here against a strict identifier pattern (``[A-Za-z_][A-Za-z0-9_]*``, optionally
``schema.name``) and written as configured, unquoted. Lower-case column names are written bare
(every database folds them to its own case, and a reserved word stays the database's problem as
it would in hand-written SQL); the PACS views' upper-case names are quoted (``"FILEPATH"``,
``[FILEPATH]`` on SQL Server, backticks on MySQL) so they match exactly on PostgreSQL. Results
are read by position, so driver-specific name folding (Oracle's upper case) does not matter.

Dialect notes
-------------
- **Oracle**: cursor comparisons ``t >= CAST(:since AS DATE)``: the cast is on the bind, never
  on the column, so an index on the cursor column is used; no ``AS`` before table aliases (the
  dialect's compiler); no LIMIT: results are streamed with ``fetchmany``.
- **SQL Server**: ``CAST(:since AS DATETIME2)``. A legacy ``datetime`` column with sub-second
  values (stored in 1/300 s) does not compare equal to the datetime2 it was read as; chunk bounds
  at such a value could then miss a row, which the next window's overlap reads again. Sources
  that stamp whole seconds (the spec's format) are not affected.
- **PostgreSQL family**: ``CAST(:since AS TIMESTAMP WITHOUT TIME ZONE)``; a server-side cursor
  streams the plan and the records.
- **MySQL / MariaDB**: ``CAST(:since AS DATETIME)``; cursor columns should be ``DATETIME`` (no
  time zone: a ``TIMESTAMP`` column is shown in the session's zone). A zero date
  (``0000-00-00``) in a cursor column is before every window and is never read, like a NULL one
  elsewhere; in any other column pymysql returns it as the text ``0000-00-00``, which validation
  refuses (``datetime``). The collation compares ``report_form_no`` (case- and trailing-space
  insensitive in most): the plan and the chunks use the same one, so they still agree.
- **SQLite** (demo): timestamps are text; ``datetime()`` on both sides, and on the cursor columns
  returned, puts them in ``YYYY-MM-DD HH:MM:SS``.

How they are checked
--------------------
``tests/unit/test_sql_dialects.py``, for every dialect and every query: sqlglot parses the
compiled SQL in the dialect's grammar (one SELECT, projection as wide as the entity, the
documented binds, the dialect's casts, no LIMIT/OFFSET/FETCH, upper-case PACS names quoted) and
the readable rendering parses to the same tree; SQLAlchemy compiles it for each dialect with
exactly the documented bind names; SQLite runs every query; a Python reading of the rows decides
what each query must return on SQLite, PostgreSQL and MariaDB. Oracle and SQL Server cannot run
here: parsing and compiling is what checks them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Literal

from sqlalchemy import and_, bindparam, cast, column, exists, func, literal_column, or_, select, table
from sqlalchemy.dialects import mssql, mysql, oracle, postgresql, sqlite
from sqlalchemy.engine import Dialect as SqlDialect
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.elements import quoted_name

from hurren import spec
from hurren.sources import DIALECTS, IDENTIFIER, STREAMS, Dialect, Source

__all__ = ["CURSOR_FIELDS", "QUERIES", "QueryDef", "SqlBuildError", "compiled", "query", "readable"]

WINDOW_BINDS = ("since", "until")
CHUNK_BINDS = ("first_dtime", "first_form_no", "last_dtime", "last_form_no")
CURSOR_FIELDS = frozenset(s.cursor for s in STREAMS.values()) | {"last_update_dtime"}
"""Fields that are cursors somewhere: SQLite returns them through ``datetime()``."""

Part = Literal["plan", "masters", "items", "orphans", "records"]


class SqlBuildError(ValueError):
    """A query does not exist, or a configured name cannot be put into SQL."""


@dataclass(frozen=True, slots=True)
class QueryDef:
    """One extraction query: its stream, what part of the stream it reads, its bind parameters."""

    name: str
    stream: str
    part: Part
    binds: tuple[str, ...]
    entity: str | None  # whose fields it returns; None: the plan's (cursor, report_form_no, count)


def _query_defs() -> dict[str, QueryDef]:
    out = {}
    for s in STREAMS.values():
        if s.item is None:
            out[s.name] = QueryDef(s.name, s.name, "records", WINDOW_BINDS, s.master)
            continue
        for part, binds, entity in (
            ("plan", WINDOW_BINDS, None),
            ("masters", CHUNK_BINDS, s.master),
            ("items", CHUNK_BINDS, s.item),
            ("orphans", WINDOW_BINDS, s.item),
        ):
            out[f"{s.name}_{part}"] = QueryDef(f"{s.name}_{part}", s.name, part, binds, entity)
    return out


QUERIES: Mapping[str, QueryDef] = MappingProxyType(_query_defs())

_TIME_TYPE = {
    "postgresql": postgresql.TIMESTAMP(),
    "oracle": oracle.DATE(),
    "mssql": mssql.DATETIME2(),
    "mysql": mysql.DATETIME(),
}
_SQLALCHEMY = {
    "postgresql": postgresql.dialect,
    "oracle": oracle.dialect,
    "mssql": mssql.dialect,
    "mysql": mysql.dialect,
    "sqlite": sqlite.dialect,
}
SQLGLOT = {
    "oracle": "oracle",
    "mssql": "tsql",
    "postgresql": "postgres",
    "mysql": "mysql",
    "sqlite": "sqlite",
}
NO_FORM_NO = literal_column("' '")  # COALESCE's stand-in for a NULL report_form_no


def _identifier(name: str) -> quoted_name:
    """A spec column name as SQL: lower-case bare, upper-case (the PACS views) quoted."""
    if not IDENTIFIER.match(name):
        raise SqlBuildError(f"{name!r} is not a plain identifier and cannot be put into SQL")
    return quoted_name(name, quote=name != name.lower())


def _relation_name(source: Source, entity: str) -> quoted_name:
    name = source.view(entity)
    parts = name.split(".")
    if len(parts) > 2 or not all(IDENTIFIER.match(p) for p in parts):
        raise SqlBuildError(f"{source.id}: view name {name!r} for {entity} is not a plain identifier")
    return quoted_name(name, quote=False)  # as configured: "LIS.V_LAB" is schema LIS, view V_LAB


class _Relation:
    """A source view under an alias, its columns found by spec field name."""

    def __init__(self, source: Source, entity: str, alias: str) -> None:
        self.entity = spec.entity(entity)
        self.dialect = source.dialect
        names = {f.name: _identifier(self._source_column(source, f.name)) for f in self.entity.fields}
        self.table = table(_relation_name(source, entity), *(column(n) for n in names.values())).alias(alias)
        self._columns = {f: self.table.c[n] for f, n in names.items()}

    def _source_column(self, source: Source, field: str) -> str:
        if self.entity.kind == "view" and field == "STUDIUIID":
            return source.pacs_study_uid_column  # D11: some PACS views spell it STUDYIUID
        return field

    def __getitem__(self, field: str) -> ColumnElement[Any]:
        return self._columns[field]

    def time(self, field: str) -> ColumnElement[Any]:
        """A cursor column as compared and ordered: SQLite keeps timestamps as text of any shape."""
        return func.datetime(self[field]) if self.dialect == "sqlite" else self[field]

    def fields(self) -> list[ColumnElement[Any]]:
        """Every field in spec order (results are read by position)."""
        return [
            self.time(f.name).label(f.name)
            if self.dialect == "sqlite" and f.name in CURSOR_FIELDS
            else self[f.name]
            for f in self.entity.fields
        ]


def _bound_time(dialect: Dialect, name: str) -> ColumnElement[Any]:
    """A cursor value bind: cast to the dialect's type on the bind, never on the column (indexes)."""
    if dialect == "sqlite":
        return func.datetime(bindparam(name))
    return cast(bindparam(name), _TIME_TYPE[dialect])


def _in_window(dialect: Dialect, t: ColumnElement[Any], open_end: bool) -> ColumnElement[bool]:
    if open_end:  # no upper bound: a cast bind cannot reach past 9999-12-31 23:59:59 everywhere
        return t >= _bound_time(dialect, "since")
    return and_(t >= _bound_time(dialect, "since"), t < _bound_time(dialect, "until"))


def _form_no(m: _Relation) -> ColumnElement[Any]:
    return func.coalesce(m["report_form_no"], NO_FORM_NO)


def _in_chunk(dialect: Dialect, m: _Relation, cursor: str) -> ColumnElement[bool]:
    """Masters from (first_dtime, first_form_no) to (last_dtime, last_form_no), inclusive."""
    t, form = m.time(cursor), _form_no(m)
    first, last = _bound_time(dialect, "first_dtime"), _bound_time(dialect, "last_dtime")
    return and_(
        t >= first,
        t <= last,
        or_(t > first, form >= bindparam("first_form_no")),
        or_(t < last, form <= bindparam("last_form_no")),
    )


def _build(source: Source, d: QueryDef, open_end: bool = False) -> Select[Any]:
    stream, dialect = STREAMS[d.stream], source.dialect
    if d.part == "records":
        r = _Relation(source, stream.master, "v" if spec.entity(stream.master).kind == "view" else "r")
        t = r.time(stream.cursor)
        return (
            select(*r.fields())
            .where(_in_window(dialect, t, open_end))
            .order_by(t, *(r[k] for k in r.entity.key))
        )
    m = _Relation(source, stream.master, "m")
    if d.part == "plan":
        t, form = m.time(stream.cursor), _form_no(m)
        return (
            select(t.label("plan_dtime"), form.label("plan_form_no"), func.count().label("plan_count"))
            .where(_in_window(dialect, t, open_end))
            .group_by(t, form)
            .order_by(t, form)
        )
    if d.part == "masters":
        rest = (m[k] for k in m.entity.key if k != "report_form_no")
        return (
            select(*m.fields())
            .where(_in_chunk(dialect, m, stream.cursor))
            .order_by(m.time(stream.cursor), _form_no(m), *rest)
        )
    s = _Relation(source, stream.item or "", "s")
    link = [m[k] == s[k] for k in s.entity.key if k in m.entity.key]  # the sub-item's master
    master = select(literal_column("1")).select_from(m.table)
    if d.part == "items":
        where = exists(master.where(*link, _in_chunk(dialect, m, stream.cursor)))
    else:  # orphans: changed in the window, with no master at all
        where = and_(_in_window(dialect, s.time(stream.cursor), open_end), ~exists(master.where(*link)))
    return select(*s.fields()).where(where).order_by(*(s[k] for k in s.entity.key))


@cache
def _cached(
    dialect: Dialect, views: tuple[tuple[str, str], ...], uid_column: str, name: str, open_end: bool
) -> Select[Any]:
    source = Source(
        id="sql", org_code="0", org_name="", conn_id="", dialect=dialect, views=dict(views),
        pacs_study_uid_column=uid_column,
    )  # fmt: skip
    return _build(source, QUERIES[name], open_end)


def query(source: Source, name: str, *, open_end: bool = False) -> Select[Any]:
    """The extraction query ``name`` (a key of :data:`QUERIES`) for ``source``, as a SQLAlchemy
    ``Select``: execute it with the binds of ``QUERIES[name].binds``; rows come in spec order.
    ``open_end``: the window has no upper bound (no ``until`` bind): the future range of
    ``hurren.pipeline``, which must reach a row stamped 9999-12-31 23:59:59 in every dialect."""
    if name not in QUERIES:
        raise SqlBuildError(f"no extraction query {name!r}; one of {', '.join(QUERIES)}")
    for entity in STREAMS[QUERIES[name].stream].entities:
        _relation_name(source, entity)  # the names are checked for every source, cached or not
    views = tuple(sorted((e, source.view(e)) for e in STREAMS[QUERIES[name].stream].entities))
    return _cached(source.dialect, views, source.pacs_study_uid_column, name, open_end)


def sql_dialect(dialect: str, *, paramstyle: str | None = None) -> SqlDialect:
    """SQLAlchemy's dialect for one of ours (``named`` paramstyle: binds shown as ``:name``)."""
    return _SQLALCHEMY[dialect](**({"paramstyle": paramstyle} if paramstyle else {}))


def compiled(source: Source, name: str, *, paramstyle: str = "named") -> str:
    """The query's SQL text as SQLAlchemy compiles it for the source's dialect, binds as ``:name``."""
    return str(query(source, name).compile(dialect=sql_dialect(source.dialect, paramstyle=paramstyle)))


def readable(source: Source, name: str) -> str:
    """The query pretty-printed for a DBA (sqlglot, in the dialect's grammar), binds as ``:name``.
    The tests check that it parses to the same tree as :func:`compiled`."""
    import sqlglot

    grammar = SQLGLOT[source.dialect]
    pretty = sqlglot.parse_one(compiled(source, name), read=grammar).sql(dialect=grammar, pretty=True)
    return re.sub(r"%\((\w+)\)s", r":\1", pretty)  # sqlglot writes PostgreSQL binds as %(name)s


# --------------------------------------------------------------------------------------------
# python -m hurren.sql


def _default_source(dialect: str) -> Source:
    from hurren.sources import SOURCE_ENTITIES

    return Source(
        id=dialect, org_code="0", org_name="", conn_id="", dialect=dialect,
        views={e: e for e in SOURCE_ENTITIES},
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hurren.sql", description="The extraction SQL each hospital database is asked."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the queries, their bind parameters and what they return")
    show = sub.add_parser("show", help="queries pretty-printed for a dialect or a configured hospital")
    show.add_argument(
        "target", help=f"a dialect ({', '.join(DIALECTS)}) or a hospital id of the sources configuration"
    )
    show.add_argument("queries", nargs="*", help="query names (default: all)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for d in QUERIES.values():
            returns = "(cursor, report_form_no, count)" if d.entity is None else f"{d.entity} fields"
            print(f"{d.name:<14} {d.part:<8} binds {', '.join(d.binds):<52} returns {returns}")
        return 0
    if args.target in DIALECTS:
        source = _default_source(args.target)
    else:
        from hurren.sources import resolve_sources

        source = resolve_sources().get(args.target)
    names = args.queries or [n for n in QUERIES if QUERIES[n].stream in source.streams]
    unknown = [n for n in names if n not in QUERIES]
    if unknown:
        parser.error(f"unknown query {unknown}; one of {', '.join(QUERIES)}")
    for n in names:
        print(f"-- {n} ({source.dialect}{'' if source.id == source.dialect else ', ' + source.id}); binds: "
              f"{', '.join(':' + b for b in QUERIES[n].binds)}\n{readable(source, n)};\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
