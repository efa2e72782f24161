"""What each extraction query of ``hurren.sql`` must return, decided in Python from a full read of
the source tables: the reference the built SQL is compared with on SQLite, PostgreSQL and MariaDB.

Rows are compared as multisets (the database's collation orders equal cursor values its own way);
the order that matters, by cursor, is checked separately.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hurren import extract, spec, sql
from hurren.sources import STREAMS, Source

Row = tuple[Any, ...]


def _table(conn: Connection, source: Source, entity: str) -> list[dict[str, Any]]:
    """Every row of the source's view for ``entity``, raw (the same names as the queries read)."""
    rel = sql._Relation(source, entity, "t")
    rows = conn.execute(select(*(rel[f] for f in rel.entity.names)).select_from(rel.table)).fetchall()
    return [dict(zip(rel.entity.names, r, strict=True)) for r in rows]


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.strptime(str(value)[:19], spec.DATETIME_FORMAT)  # noqa: DTZ007 - naive source time
    except ValueError:
        return None


def _form(value: str | None) -> str:
    return " " if value is None else value


def expected(conn: Connection, source: Source, name: str, binds: Mapping[str, Any]) -> Counter[Row]:
    """The rows query ``name`` must return for ``binds``, as a multiset."""
    d = sql.QUERIES[name]
    stream = STREAMS[d.stream]
    b = {k: _time(v) if k.endswith(("dtime", "since", "until")) else v for k, v in binds.items()}

    def in_window(t: Any) -> bool:
        t = _time(t)
        return t is not None and b["since"] <= t < b["until"]

    def in_chunk(m: dict[str, Any]) -> bool:
        t, form = _time(m[stream.cursor]), _form(m["report_form_no"])
        if t is None:
            return False
        return (
            b["first_dtime"] <= t <= b["last_dtime"]
            and (t > b["first_dtime"] or form >= b["first_form_no"])
            and (t < b["last_dtime"] or form <= b["last_form_no"])
        )

    masters = _table(conn, source, stream.master)
    ent = spec.entity(d.entity or stream.master)
    if d.part == "records":
        return Counter(tuple(r[f] for f in ent.names) for r in masters if in_window(r[stream.cursor]))
    if d.part == "plan":
        groups = Counter(
            (m[stream.cursor], _form(m["report_form_no"])) for m in masters if in_window(m[stream.cursor])
        )
        return Counter((t, form, n) for (t, form), n in groups.items())
    if d.part == "masters":
        return Counter(tuple(m[f] for f in ent.names) for m in masters if in_chunk(m))
    link = [k for k in ent.key if k in spec.entity(stream.master).key]
    items = _table(conn, source, ent.name)
    if d.part == "items":
        keys = {tuple(m[k] for k in link) for m in masters if in_chunk(m)}
        return Counter(tuple(r[f] for f in ent.names) for r in items if tuple(r[k] for k in link) in keys)
    keys = {tuple(m[k] for k in link) for m in masters}
    return Counter(
        tuple(r[f] for f in ent.names)
        for r in items
        if in_window(r[stream.cursor]) and tuple(r[k] for k in link) not in keys
    )


def run(conn: Connection, source: Source, name: str, binds: Mapping[str, Any]) -> list[Row]:
    return [tuple(r) for r in conn.execute(sql.query(source, name), dict(binds)).fetchall()]


def check_every_query(conn: Connection, source: Source, window: tuple[datetime, datetime], chunk: int) -> int:
    """Every query of the source's streams against :func:`expected`, for ``window`` and every chunk
    of ``chunk`` masters of it; returns how many rows were compared."""
    since, until = (extract._bind_time(t, source.dialect) for t in window)
    compared = 0
    for name, d in sql.QUERIES.items():
        if d.stream not in source.streams:
            continue
        binds_list: Sequence[Mapping[str, Any]]
        if d.part in ("masters", "items"):
            plan = run(conn, source, f"{d.stream}_plan", {"since": since, "until": until})
            binds_list = [c.params(source.dialect) for c in extract.plan_chunks(plan, chunk)]
        else:
            binds_list = [{"since": since, "until": until}]
        for binds in binds_list:
            got = run(conn, source, name, binds)
            want = expected(conn, source, name, binds)
            assert Counter(got) == want, (name, binds, len(got), sum(want.values()))
            if d.part in ("plan", "masters", "records"):
                at = 0 if d.entity is None else spec.entity(d.entity).names.index(STREAMS[d.stream].cursor)
                times = [_time(r[at]) for r in got]
                assert times == sorted(times), (name, "not in cursor order")
            compared += len(got)
    return compared
