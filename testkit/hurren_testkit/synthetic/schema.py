"""The synthetic hospital's source schema, built from the spec (one table per source entity).

See the package docstring for the choices (text columns, real timestamps for watermarks, no keys).
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, Table, Text
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, Engine

from hurren import spec

__all__ = [
    "LABEL_COLUMNS",
    "LABEL_TABLE",
    "SOURCE_ENTITIES",
    "WATERMARKS",
    "create_source_schema",
    "drop_source_schema",
    "source_metadata",
]

SOURCE_ENTITIES = (
    "labmaster",
    "lab_subitem",
    "exammaster",
    "exam_subitem",
    "sehr_accept_record",
    "sehr_quote_record",
    "v_web_jcjg",
    "v_web_jctj",
)
"""The spec entities a hospital database exposes (lab_exam_report is computed by the pipeline)."""

WATERMARKS = {
    "labmaster": "last_update_dtime",
    "lab_subitem": "last_update_dtime",
    "exammaster": "last_update_dtime",
    "exam_subitem": "last_update_dtime",
    "sehr_accept_record": "record_time",
    "sehr_quote_record": "record_time",
    "v_web_jcjg": "CREATEDTIME",
    "v_web_jctj": "MODIFYTIME",
}
"""The column each table is extracted by incrementally: a real TIMESTAMP, indexed, never NULL."""

# parent key columns that a sub-item shares with its master (spec: 约束引用 … 节点的 …)
_MASTER_LINK = ("org_code", "event_no", "report_form_no")
_EXTRA_INDEXES = {
    "labmaster": [("org_code", "report_form_no")],
    "exammaster": [("org_code", "report_form_no")],
    "lab_subitem": [_MASTER_LINK],
    "exam_subitem": [_MASTER_LINK],
    "v_web_jcjg": [("STUDIUIID",)],
    "v_web_jctj": [("STUDIUIID",)],
    "sehr_accept_record": [],
    "sehr_quote_record": [],
}

LABEL_TABLE = "hurren_defect_labels"
LABEL_COLUMNS = (
    "seq",
    "entity",
    "org_code",
    "report_form_no",
    "event_no",
    "patient_id",
    "event_type",
    "item_key",
    "kind",
    "field",
    "expected_rule",
    "row_key",
    "detail",
)

# spec format, no microseconds: what a hospital's DATE column shows, and what SQLite compares as text
_SQLITE_DATETIME = sqlite.DATETIME(
    storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
    regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)",
)
WATERMARK_TYPE = DateTime().with_variant(_SQLITE_DATETIME, "sqlite")  # MySQL: DATETIME, no time zone
TEXT_TYPE = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")  # MySQL's TEXT stops at 64 KB: PDFs
MYSQL_TABLE = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
"""MySQL/MariaDB tables: 4-byte characters stored, keys compared byte by byte (as PostgreSQL's C
collation does; a hospital's own tables may use a case-insensitive one)."""
MYSQL_INDEX_PREFIX = 64  # MySQL indexes a TEXT column by a prefix of it


def source_metadata(*, indexes: bool = True) -> MetaData:
    """A fresh MetaData with one table per source entity and the defect label table."""
    md = MetaData()
    for name in SOURCE_ENTITIES:
        ent = spec.entity(name)
        cols = [
            Column(f.name, WATERMARK_TYPE, nullable=False)
            if f.name == WATERMARKS[name]
            else Column(f.name, TEXT_TYPE, nullable=True)
            for f in ent.fields
        ]
        Table(name, md, *cols, comment=f"{ent.title} (spec {ent.section}), synthetic", **MYSQL_TABLE)
    Table(
        LABEL_TABLE,
        md,
        Column("seq", Integer, nullable=False),
        *(Column(c, TEXT_TYPE) for c in LABEL_COLUMNS[1:]),
        comment="one row per deliberately defective source row (hurren_testkit.synthetic)",
        **MYSQL_TABLE,
    )
    if indexes:
        _add_indexes(md)
    return md


def _add_indexes(md: MetaData) -> list[Index]:
    """The indexes, in a fixed order (a Table keeps its indexes in a set, so create_all's order varies)."""
    out = []
    for name in SOURCE_ENTITIES:
        table = md.tables[name]
        out.append(Index(f"ix_{name}_{WATERMARKS[name].lower()}", table.c[WATERMARKS[name]]))
        for n, cols in enumerate(_EXTRA_INDEXES[name]):
            prefix = {c: MYSQL_INDEX_PREFIX for c in cols}
            out.append(Index(f"ix_{name}_k{n}", *(table.c[c] for c in cols), mysql_length=prefix))
    return out


def create_source_schema(bind: Engine | Connection) -> MetaData:
    """Create the source tables, their indexes and the label table where missing; returns the MetaData."""
    md = source_metadata(indexes=False)
    md.create_all(bind, checkfirst=True)
    for index in _add_indexes(md):
        index.create(bind, checkfirst=True)
    return md


def drop_source_schema(bind: Engine | Connection) -> None:
    source_metadata().drop_all(bind, checkfirst=True)
