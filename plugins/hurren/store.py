"""The municipal store's schema, derived from the spec (SQLAlchemy Core).

One table per spec entity, with the spec's field names as columns and its key as the primary key,
plus the operational tables the pipeline keeps its state in. Written against SQLAlchemy Core
only, so the same metadata creates on PostgreSQL (the default store) and SQLite (local runs), and
compiles for Oracle and SQL Server.

Choices, and why:
- A report's PDF is not stored as a blob: it lives in S3/MinIO, and the store keeps its object
  key, SHA-256 and size (``pdf_object_key``, ``pdf_sha256``, ``pdf_size``).
- PACS views become ``pacs_instance`` / ``pacs_study`` with lower-case column names: a table whose
  name starts with ``v_`` would read as a view, and upper-case names need quoting everywhere.
- Every spec table carries ``etl_content_hash`` (the version of the row pushed to the platform),
  ``etl_run_id`` and ``etl_loaded_at``. The ``etl_`` prefix keeps them apart from spec fields
  and, unlike a leading underscore, is a valid unquoted Oracle identifier.
- Generic operational tables name a record by its entity and ``record_key``: the JSON array of
  its key values in the entity's key order (``record_key()``), so quarantine, outbox and push log
  serve reports, daily counts and accept/quote records alike. The outbox's keys stand a keyed hash
  in for a patient's ID number (``hurren.push.outbox.entry_key``).
- Accept/quote rows carry ``etl_org_code``: the hospital that sent them (their spec fields name
  only the reports' hospitals), so the outbox can queue them again from the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeEngine

from hurren import spec

log = logging.getLogger(__name__)

metadata = MetaData()

TABLE_NAMES = {"v_web_jcjg": "pacs_instance", "v_web_jctj": "pacs_study"}
"""Store table of an entity, where it is not the entity's own name."""

_TEXT_LIMIT = 4000  # Oracle VARCHAR2 maximum (standard MAX_STRING_SIZE); longer is Text/CLOB


def table_name(entity: str) -> str:
    return TABLE_NAMES.get(entity, entity)


def column_name(entity: spec.Entity, field_name: str) -> str:
    return field_name.lower() if entity.kind == "view" else field_name


def _column_type(f: spec.Field) -> TypeEngine[Any]:
    match f.type:
        case "text" | "uid":
            return String(f.length) if f.length and f.length <= _TEXT_LIMIT else Text()
        case "number":
            if f.length is None or f.length > 9:
                return BigInteger()
            return SmallInteger() if f.length <= 4 else Integer()
        case "date":
            return Date()
        case "datetime":
            return DateTime()
    raise spec.SpecError(f"no store type for {f.name} of type {f.type}")


def _entity_table(ent: spec.Entity) -> Table:
    columns: list[Column[Any]] = []
    for f in ent.fields:
        if f.type == "pdf":
            columns += [
                Column(
                    "pdf_object_key", String(512), nullable=f.nullable, comment="S3 object key of the PDF"
                ),
                Column("pdf_sha256", String(64), nullable=f.nullable),
                Column("pdf_size", Integer, nullable=f.nullable),
            ]
            continue
        columns.append(
            Column(
                column_name(ent, f.name),
                _column_type(f),
                primary_key=f.name in ent.key,
                # Nullability is the validator's to enforce (with a reason); the store only
                # insists on keys, so an optional-in-practice field never breaks a load.
                nullable=f.name not in ent.key,
                comment=f.zh_name,
            )
        )
    columns += [
        Column("etl_content_hash", String(64), nullable=False, comment="SHA-256 of the row as pushed"),
        Column("etl_run_id", String(250), nullable=True),
        Column("etl_loaded_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    ]
    if ent.kind == "record":  # accept/quote rows name no hospital of their own: the one that sent them
        columns.append(Column("etl_org_code", String(128), comment="the hospital that sent the row (push)"))
    table = Table(table_name(ent.name), metadata, *columns, comment=f"{ent.title} (spec {ent.section})")
    if ent.kind == "item" and ent.parent:
        parent = spec.entity(ent.parent)
        shared = [k for k in ent.key if k in parent.key]
        Index(f"ix_{table.name}_master", *(table.c[k] for k in shared))
    return table


SPEC_TABLES: dict[str, Table] = {name: _entity_table(ent) for name, ent in spec.entities().items()}

Index("ix_pacs_instance_study", SPEC_TABLES["v_web_jcjg"].c.studiuiid)
Index("ix_exammaster_study", SPEC_TABLES["exammaster"].c.study_instance_uid)

watermark = Table(
    "etl_watermark",
    metadata,
    Column("source", String(128), primary_key=True, comment="hospital source id"),
    Column("stream", String(64), primary_key=True, comment="lab | exam | pacs_instance | …"),
    Column("initial_value", DateTime, nullable=False),
    Column("last_value", DateTime, nullable=False, comment="highest watermark column value loaded"),
    Column("run_id", String(250)),
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    comment="incremental extraction cursors, moved only after the load commits",
)

run = Table(
    "etl_run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("source", String(128), nullable=False),
    Column("stream", String(64), nullable=False),
    Column("interval_start", DateTime),
    Column("interval_end", DateTime),
    Column("started_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    Column("finished_at", DateTime),
    Column("status", String(16), nullable=False, comment="running | success | failed | interrupted"),
    Column("extracted", Integer, nullable=False, server_default="0"),
    Column("loaded", Integer, nullable=False, server_default="0"),
    Column("quarantined", Integer, nullable=False, server_default="0"),
    # nullable only so that create_all adds it to an older store (its default fills the old rows)
    Column("stale", Integer, nullable=True, server_default="0", comment="older than the stored version"),
    Column(
        "details",
        Text,
        comment="JSON: the run's counts (summed over its tries), per-rule counts; tries: each try's",
    ),
    UniqueConstraint("run_id", "source", "stream", name="uq_etl_run"),
    comment="one row per extraction run per source and stream: the counts that prove nothing was lost",
)

quarantine = Table(
    "etl_quarantine",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", String(250), nullable=False),
    Column("source", String(128), nullable=False),
    Column("org_code", String(128)),
    Column("entity", String(64), nullable=False, comment="the master entity of the held report"),
    Column("record_key", String(1024), nullable=False, comment="JSON array of the key values"),
    Column(
        "report_form_no", String(128), comment="reports: a valid version under any key resolves the entry"
    ),
    Column("content_hash", String(64), nullable=False),
    Column("rules", Text, nullable=False, comment="JSON: every rule broken, with field and entity"),
    Column("reason", Text, nullable=False, comment="readable reason, identifiers masked"),
    Column("payload", Text, nullable=False, comment="JSON of the held rows as extracted"),
    Column("quarantined_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    Column("resolved_at", DateTime, comment="set when a corrected version of the report loads"),
    Index("ix_etl_quarantine_open", "source", "entity", "resolved_at"),
    Index("ix_etl_quarantine_key", "entity", "record_key"),
    Index("ix_etl_quarantine_form", "entity", "org_code", "report_form_no"),
    comment="reports held back by validation, whole, with every rule they broke",
)

pdf_pending = Table(
    "etl_pdf_pending",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("bucket", String(255), nullable=False),
    Column("object_key", String(1024), nullable=False),
    Column("source", String(128), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("org_code", String(128)),
    Column("report_form_no", String(128)),
    Column("run_id", String(250)),
    Column("put_at", DateTime, nullable=False, comment="UTC: the last put of this object by a batch"),
    UniqueConstraint("bucket", "object_key", name="uq_etl_pdf_pending"),
    Index("ix_etl_pdf_pending_put", "source", "put_at"),
    comment="PDFs put to S3 by a batch that has not committed (yet): hurren.load.sweep_pdfs removes "
    "the ones no stored row refers to",
)

outbox = Table(
    "push_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("entity", String(64), nullable=False, comment="labmaster | exammaster"),
    Column("org_code", String(128), nullable=False),
    Column("report_form_no", String(128), comment="groups the keys of one report (key changes)"),
    Column("record_key", String(1024), nullable=False, comment="JSON array of the key values"),
    Column("content_hash", String(64), nullable=False, comment="the version queued (etl_content_hash)"),
    Column("action", String(16), nullable=False, comment="register | void"),
    Column(
        "cause", String(16), nullable=False, server_default="load", comment="load | key_change | update (D20)"
    ),
    Column(
        "status",
        String(16),
        nullable=False,
        comment="queued | sending | acked | rejected | dead | superseded | skipped",
    ),
    Column("attempts", Integer, nullable=False, server_default="0", comment="calls that count"),
    Column("next_attempt_at", DateTime, comment="UTC; not sent before"),
    Column("claimed_at", DateTime, comment="UTC; while sending: the lease start"),
    Column("claimed_by", String(128), comment="while sending: which run holds it"),
    Column("last_error", Text, comment="error:<reason>, transport failure, or why it stopped"),
    Column("answer_text", Text, comment="ok:<text> of a void: who already quoted the report"),
    Column("acked_at", DateTime, comment="UTC"),
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    Index("ix_push_outbox_due", "status", "next_attempt_at"),
    Index("ix_push_outbox_queue", "status", "action", "id"),  # a claim's walk in queue order
    # the D20 update voids a register may wait behind: few, found without reading the queue
    Index(
        "ix_push_outbox_update",
        "entity",
        "record_key",
        postgresql_where=text("cause = 'update'"),
        sqlite_where=text("cause = 'update'"),
    ),
    Index("ix_push_outbox_key", "entity", "record_key"),
    Index("ix_push_outbox_form", "entity", "org_code", "report_form_no"),
    comment="each version of each report to push, queued once (hurren.push, docs/push.md)",
)

push_log = Table(
    "push_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("method", String(32), nullable=False),
    Column("run_id", String(128), comment="the run (claimed_by) that made the call"),
    Column("sent_at", DateTime, nullable=False, comment="UTC"),
    Column("answered_at", DateTime, comment="UTC"),
    Column("outcome", String(16), nullable=False, comment="ok | error | transport | lost"),
    Column("answer", Text, comment="ok text, error reason, or the transport failure"),
    comment="every call to the platform and what it answered",
)


def record_key(entity: spec.Entity, row: Mapping[str, Any]) -> str:
    """The canonical text form of a record's key: a JSON array in the entity's key order."""
    return json.dumps([None if row[k] is None else str(row[k]) for k in entity.key], ensure_ascii=False)


SCHEMA_LOCK = 0x68757272  # "hurr": the advisory lock held while the schema is created or changed


@contextmanager
def _schema_change(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the store's schema lock (PostgreSQL): on a new store the first runs
    of every hospital start together, and without it all but one ``prepare_store`` fail (duplicate
    catalog entries). The others wait, then find the schema there (DDL is transactional)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        yield conn


# indexes a release added to a table an older one may have created: create_all adds them there
ADDED_INDEXES = frozenset({"ix_push_outbox_queue", "ix_push_outbox_update"})


def create_all(engine: Engine, tables: Sequence[Table] | None = None) -> None:
    """Create the store schema (idempotent), and add the nullable columns a newer release defines to
    tables an older one created (the only schema change made in place; anything else is refused by
    the code that needs it, with what to do), and the :data:`ADDED_INDEXES`. Safe to call from many
    processes at once."""
    with _schema_change(engine) as conn:
        metadata.create_all(conn, tables=tables, checkfirst=True)
        found = inspect(conn)
        for table in tables or metadata.sorted_tables:
            have = {c["name"] for c in found.get_columns(table.name)}
            added = [c for c in table.columns if c.name not in have and c.nullable]
            for column in added:  # name, type and server default (it fills the existing rows)
                ddl = CreateColumn(column).compile(dialect=engine.dialect)
                conn.execute(text(f"ALTER TABLE {table.name} ADD {ddl}"))
            for index in table.indexes:
                if added or index.name in ADDED_INDEXES:
                    index.create(conn, checkfirst=True)


# --------------------------------------------------------------------------------------------
# Reconciliation: PACS studies (hurren.pacs) and daily counts (hurren.daily_counts).
# Derived facts, rebuilt by their jobs (a re-run replaces its rows); nothing here is pushed.

RECON_INDEXES = (
    # the day-scoped reads of the reconciliations and the daily counts (one org, one day)
    Index(
        "ix_labmaster_auth_day",
        SPEC_TABLES["labmaster"].c.org_code,
        SPEC_TABLES["labmaster"].c.authenticator_dtime,
    ),
    Index(
        "ix_exammaster_auth_day",
        SPEC_TABLES["exammaster"].c.org_code,
        SPEC_TABLES["exammaster"].c.authenticator_dtime,
    ),
    Index(
        "ix_exammaster_perf_day",
        SPEC_TABLES["exammaster"].c.org_code,
        SPEC_TABLES["exammaster"].c.performer_dtime,
    ),
    Index(
        "ix_pacs_study_day",
        SPEC_TABLES["v_web_jctj"].c.institutioncode,
        SPEC_TABLES["v_web_jctj"].c.studytime,
    ),
    Index(
        "ix_pacs_instance_day",
        SPEC_TABLES["v_web_jcjg"].c.institutioncode,
        SPEC_TABLES["v_web_jcjg"].c.studydate,
    ),
)

pacs_recon = Table(
    "pacs_recon",
    metadata,
    Column("org_code", String(128), primary_key=True, comment="INSTITUTIONCODE / exammaster.org_code"),
    Column("study_uid", String(512), primary_key=True, comment="STUDIUIID = exammaster.study_instance_uid"),
    Column(
        "study_day", Date, nullable=False, comment="day of STUDYTIME (else STUDYDATE, else performer_dtime)"
    ),
    Column("modality", String(64)),
    Column("access_no", String(128)),
    Column("study_rows", SmallInteger, nullable=False, comment="1: the study is in v_web_jctj (store)"),
    Column("instance_count", Integer, comment="INSTANCECOUNT of the study row, as a number"),
    Column("instances", Integer, nullable=False, comment="instance rows received (store)"),
    Column("file_size", BigInteger, comment="FILESIZE of the study row"),
    Column("instance_size", BigInteger, comment="sum of FILESIZE over the instance rows received"),
    Column("reports", Integer, nullable=False, comment="exam reports naming the study"),
    Column("report_form_no", String(128), comment="one of them"),
    Column("status", String(16), nullable=False, comment="ok | mismatch"),
    Column("issues", String(256), nullable=False, comment="comma-separated (hurren.pacs.ISSUES); '' when ok"),
    Column("run_id", String(250)),
    Column("checked_at", DateTime, nullable=False),
    Index("ix_pacs_recon_day", "org_code", "study_day", "status"),
    comment="per study: the statistics view against the instance rows received, and the exam reports",
)

daily_count_recon = Table(
    "daily_count_recon",
    metadata,
    Column("org_code", String(128), primary_key=True),
    Column("date_t", Date, primary_key=True),
    Column("dept_code", String(128), primary_key=True),
    Column("lab_counted", Integer, nullable=False, comment="lab reports counted in the store (not clamped)"),
    Column("exam_counted", Integer, nullable=False),
    Column("lab_num", SmallInteger, nullable=False, comment="as sent (D8: clamped to daily_count_max)"),
    Column("exam_num", SmallInteger, nullable=False),
    Column(
        "overflow", String(32), nullable=False, comment="fields clamped (D8): '' | lab_num | exam_num | both"
    ),
    Column(
        "lab_acked",
        Integer,
        comment="lab reports of the day the platform acknowledged (push_outbox); null: unknown",
    ),
    Column("exam_acked", Integer),
    Column(
        "push_status",
        String(16),
        nullable=False,
        comment="the row's push_outbox state: not_sent | queued | acked | rejected | dead",
    ),
    Column(
        "push_answer",
        Text,
        comment="the platform's answer to the counts (ok, error:<reason>, or the failure)",
    ),
    Column("pushed_at", DateTime, comment="UTC: when the platform acknowledged the row"),
    Column("issues", String(256), nullable=False, comment="comma-separated (hurren.daily_counts.ISSUES)"),
    Column("run_id", String(250)),
    Column("checked_at", DateTime, nullable=False),
    comment="daily counts: what the store holds, what was sent, what the platform acknowledged",
)

RECON_TABLES = (pacs_recon, daily_count_recon)


def create_reconciliation(engine: Engine) -> None:
    """The reconciliation tables and the day-scoped indexes, where missing (idempotent; also on a
    store created before them: ``create_all`` only indexes tables it creates itself)."""
    create_all(engine)
    with _schema_change(engine) as conn:
        for ix in RECON_INDEXES:
            ix.create(conn, checkfirst=True)


_STALE_STATISTICS = text(
    "SELECT s.n_mod_since_analyze FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.relid = to_regclass(:name) AND s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)"
)  # autovacuum's own rule (threshold 50, scale factor 0.1): what it would analyze next


def analyze_stale(engine: Engine, tables: Sequence[Table]) -> list[str]:
    """ANALYZE those of ``tables`` that autovacuum has not analyzed since a bulk load (PostgreSQL;
    elsewhere nothing). A reader right after a large load would otherwise be planned without
    statistics: PostgreSQL then takes the hospital's index instead of the study UIDs' and reads all
    of a 2M-row day once per ``IN`` list of UIDs (``pacs.reconcile``). Returns the names analyzed."""
    if engine.dialect.name != "postgresql":
        return []
    analyzed = []
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # no lock held past the ANALYZE
        for t in tables:
            changed = conn.execute(_STALE_STATISTICS, {"name": t.name}).scalar()
            if changed is not None:
                conn.execute(text(f"ANALYZE {conn.dialect.identifier_preparer.format_table(t)}"))
                log.info("analyzed %s: %s row(s) changed since its last statistics", t.name, changed)
                analyzed.append(t.name)
    return analyzed
