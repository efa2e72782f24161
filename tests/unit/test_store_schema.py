"""The store schema is derived from the spec, creates on SQLite and compiles for Oracle and SQL Server."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.dialects import mssql, oracle
from sqlalchemy.schema import CreateIndex, CreateTable

from hurren import spec, store

DIALECTS = {"oracle": oracle.dialect(), "mssql": mssql.dialect()}


@pytest.mark.parametrize("entity", sorted(spec.entities()))
def test_every_spec_field_is_a_column_and_the_key_is_the_primary_key(entity):
    ent = spec.entity(entity)
    table = store.SPEC_TABLES[entity]
    for f in ent.fields:
        if f.type == "pdf":
            assert {"pdf_object_key", "pdf_sha256", "pdf_size"} <= set(table.c.keys())
        else:
            assert store.column_name(ent, f.name) in table.c, f.name
    assert [c.name for c in table.primary_key] == [store.column_name(ent, k) for k in ent.key]


@pytest.mark.parametrize(
    ("entity", "column", "length"),
    [
        ("labmaster", "org_code", 128),
        ("lab_subitem", "norm_value_notes", 4000),
        ("exammaster", "study_instance_uid", 512),
    ],
)
def test_text_lengths_follow_the_spec(entity, column, length):
    assert store.SPEC_TABLES[entity].c[column].type.length == length


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_ddl_compiles_for(dialect):
    ddl = []
    for table in store.metadata.sorted_tables:
        ddl.append(str(CreateTable(table).compile(dialect=DIALECTS[dialect])))
        ddl += [str(CreateIndex(ix).compile(dialect=DIALECTS[dialect])) for ix in table.indexes]
    text = "\n".join(ddl)
    assert "CREATE TABLE labmaster" in text
    assert "CREATE TABLE push_outbox" in text
    if dialect == "oracle":
        assert "VARCHAR2(128 CHAR)" in text
        # Oracle identifiers are at most 128 bytes (30 before 12.2): keep every name short.
        names = [t.name for t in store.metadata.tables.values()]
        names += [c.name for t in store.metadata.tables.values() for c in t.c]
        names += [ix.name for t in store.metadata.tables.values() for ix in t.indexes]
        assert max(len(n) for n in names) <= 30


def test_creates_on_sqlite_and_is_idempotent(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_all(engine)
    store.create_all(engine)
    assert set(inspect(engine).get_table_names()) == set(store.metadata.tables)


def test_a_store_from_an_older_release_gets_the_new_nullable_columns_and_their_indexes(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:  # etl_quarantine as the first release created it
        conn.execute(text("create table etl_quarantine (id integer primary key, run_id varchar(250) not null, "
                          "source varchar(128) not null, org_code varchar(128), entity varchar(64) not null, "
                          "record_key varchar(1024) not null, content_hash varchar(64) not null, rules text not null, "
                          "reason text not null, payload text not null, quarantined_at datetime not null, "
                          "resolved_at datetime)"))  # fmt: skip
    store.create_all(engine)
    found = inspect(engine)
    assert "report_form_no" in {c["name"] for c in found.get_columns("etl_quarantine")}
    assert "ix_etl_quarantine_form" in {i["name"] for i in found.get_indexes("etl_quarantine")}
    store.create_all(engine)  # idempotent


def test_record_key_is_stable_text():
    ent = spec.entity("lab_subitem")
    row = {"org_code": "457759922", "event_no": "1878", "report_form_no": "14437173", "serial_no": 46530132}
    assert store.record_key(ent, row) == '["457759922", "1878", "14437173", "46530132"]'
