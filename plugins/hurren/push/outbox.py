"""The outbox in the store (``push_outbox``, ``push_log``): queueing versions, claiming, recording.

SQLAlchemy Core only (PostgreSQL in production, SQLite in unit tests). Times are UTC, naive.

A version is queued by :func:`enqueue`, called by ``hurren.load`` (reports, accept/quote records)
and ``hurren.daily_counts`` (daily counts) in the transaction that writes the row (a committed version and its queue entry commit together; a load that writes
nothing queues nothing, so re-running a window queues nothing). Per written report master row (:func:`enqueue_reports`):

- action ``void`` when its ``data_status`` is one of ``void_data_status`` (D15), else ``register``;
- nothing when the key's latest entry is already this version (same hash and action);
- the key's older entries that never reached the platform (``queued``, ``rejected``, ``dead``)
  become ``superseded``: only the newest version of a report is worth sending;
- **key change**: every *other* key of the same (entity, org_code, report_form_no) whose latest
  entry is a ``register`` gets a ``void`` (``cause`` = ``key_change``), its unsent entries
  superseded. The platform holds a report under its full primary key; when the hospital changes
  patient_id, event_type or event_no of a report, the store holds both rows and the old key must
  be voided there (§1.2.2.2: 先作废后在重新提交). The latest load wins. Such a void is skipped at
  send time when the old key never reached the platform, or when ``key_change`` is ``off``.

**Updates** (D20, ``SpecOptions.update_mode``): under ``replace`` a changed report is registered
again under its key. Under ``void_then_register`` a claimed register of a key the platform holds
(its latest acknowledged entry is a register) is preceded by a ``void`` entry (``cause`` =
``update``, the register's version), inserted by :func:`precede_with_voids` in the claim's
transaction and sent first in the same job; the register goes only once its void is acknowledged
(or skipped), and no claim takes a register while an update void of its key is queued, sending,
rejected or dead: a void that fails never lets the register overtake it. Update voids are
auxiliary: the key's version entries (``_latest``) never count them.

A run claims due entries (:func:`claim`: ``queued``, due, no other entry of the same key in
flight, no update void of the key open; voids first, then oldest first), marks them ``sending``
with a lease, calls the platform, and :func:`record` writes the outcome and one ``push_log`` row
in one transaction. A run that dies
between the call and the record leaves ``sending`` entries; :func:`recover_stale` takes them back
once their lease has expired (logged ``lost``): they are sent again (an upsert on the platform).

**Keys.** ``record_key`` is the store's key of the row (``store.record_key``), except that a
patient identifier in it (the ``id_no`` of accept/quote records, D16) is replaced by a keyed hash
(:func:`entry_key`: HMAC-SHA256 with ``HURREN_OUTBOX_KEY_SECRET``, ``h:`` and 32 hex), so the
outbox holds no ID number; the rows are found again by the other key columns and the hash.
:func:`upgrade` rewrites an older outbox's clear keys in place (idempotent) and fills in which
hospital sent the accept/quote rows loaded before the store recorded it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased

from hurren import spec, store
from hurren.push.options import PUSH_ENTITIES, RECORD_ENTITIES, REPORT_ENTITIES
from hurren.rows import to_store_value

__all__ = [
    "Call",
    "Entry",
    "check_schema",
    "claim",
    "counts",
    "enqueue",
    "enqueue_records",
    "enqueue_reports",
    "entry_key",
    "key_values",
    "letters",
    "method_of",
    "next_due",
    "precede_with_voids",
    "Recording",
    "held",
    "record",
    "recover_stale",
    "release",
    "requeue",
    "sync_from_store",
    "upgrade",
    "utcnow",
]

log = logging.getLogger("hurren.push")

OPEN = ("queued", "rejected", "dead")  # never reached the platform in this version: supersedable
BLOCKING = (*OPEN, "sending")  # an update void in these holds back the register behind it (D20)
_IN = 500  # values per IN list

ob = store.outbox
log_t = store.push_log


def check_schema(engine: Engine) -> None:
    """Fail early, saying what to do, when the store's outbox tables predate hurren.push."""
    from sqlalchemy import inspect

    from hurren.push.exceptions import PushConfigError

    found = inspect(engine)
    for table in (ob, log_t):
        if not found.has_table(table.name):
            raise PushConfigError(
                f"the store has no table {table.name}: run prepare_store (store.create_all) first"
            )
        have = {c["name"] for c in found.get_columns(table.name)}
        missing = sorted(set(table.c.keys()) - have)
        if missing:
            raise PushConfigError(
                f"the store's {table.name} lacks column(s) {missing}: it was created from the schema sketch "
                "before hurren.push existed (and never written). Drop push_outbox and push_log, then run "
                "prepare_store (store.create_all) and python -m hurren.push sync"
            )


OPAQUE = "h:"  # the prefix of a hashed key part


def _secret() -> bytes:
    from hurren.settings import settings

    return settings().outbox_key_secret.encode("utf-8")


def _opaque(value: str, secret: bytes) -> str:
    return OPAQUE + hmac.new(secret, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _hidden(entity: spec.Entity) -> list[int]:
    """Positions of patient identifiers in the entity's key (accept/quote: id_no, D16)."""
    return [i for i, k in enumerate(entity.key) if k in spec.PATIENT_IDENTIFIERS]


def entry_key(entity: spec.Entity, row: Mapping[str, Any]) -> str:
    """The outbox's key of a row: ``store.record_key``, a patient identifier in it replaced by its
    keyed hash (so the outbox holds no ID number, and the same row always has the same key)."""
    hidden = _hidden(entity)
    if not hidden:
        return store.record_key(entity, row)
    values = json.loads(store.record_key(entity, row))
    secret = _secret()
    for i in hidden:
        if values[i] is not None:
            values[i] = _opaque(values[i], secret)
    return json.dumps(values, ensure_ascii=False)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def method_of(entity: str, action: str) -> str:
    if entity in RECORD_ENTITIES:
        return RECORD_ENTITIES[entity][0]
    return "ArchiveAutoReport" if action == "register" else REPORT_ENTITIES[entity][2]


@dataclass(frozen=True, slots=True)
class Entry:
    """One claimed outbox entry: which version of which report, and what to do with it."""

    id: int
    entity: str
    org_code: str
    report_form_no: str | None
    record_key: str
    content_hash: str
    action: str
    cause: str
    attempts: int

    @property
    def method(self) -> str:
        return method_of(self.entity, self.action)

    def describe(self) -> str:
        """For logs: no key values beyond the report number (the key holds patient_id)."""
        return f"outbox {self.id} {self.entity} {self.action} org {self.org_code} form {self.report_form_no}"


def _chunks(values: Sequence[Any], size: int = _IN) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# --------------------------------------------------------------------------------------------
# queueing


def _latest(conn: Connection, entity: str, keys: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The newest version entry of each key (by id; update voids are not versions)."""
    out: dict[str, Mapping[str, Any]] = {}
    for part in _chunks(sorted(set(keys))):
        rows = conn.execute(
            select(ob.c.id, ob.c.record_key, ob.c.content_hash, ob.c.action, ob.c.status)
            .where(ob.c.entity == entity, ob.c.record_key.in_(part), ob.c.cause != "update")
            .order_by(ob.c.id)
        ).mappings()
        for r in rows:
            out[r["record_key"]] = r
    return out


def _supersede(conn: Connection, entity: str, keys: Iterable[str], now: datetime, why: str) -> int:
    n = 0
    for part in _chunks(sorted(set(keys))):
        n += (
            conn.execute(
                update(ob)
                .where(ob.c.entity == entity, ob.c.record_key.in_(part), ob.c.status.in_(OPEN))
                .values(status="superseded", last_error=why, updated_at=now)
            ).rowcount
            or 0
        )
    return n


def _groups(
    conn: Connection, entity: str, forms: set[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """The latest entry of every key of these reports: ``{(org_code, report_form_no): {key: entry}}``.
    Read per hospital by a list of report numbers, along ``ix_push_outbox_form`` (a list of
    (org, number) pairs is no index condition to PostgreSQL: it tested every pair on every row)."""
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    by_org: dict[str, list[str]] = {}
    for org, form in sorted(forms):
        by_org.setdefault(org, []).append(form)
    for org, numbers in by_org.items():
        for part in _chunks(numbers):
            rows = conn.execute(
                select(
                    ob.c.org_code,
                    ob.c.report_form_no,
                    ob.c.record_key,
                    ob.c.content_hash,
                    ob.c.action,
                    ob.c.status,
                )
                .where(
                    ob.c.entity == entity,
                    ob.c.org_code == org,
                    ob.c.report_form_no.in_(part),
                    ob.c.cause != "update",
                )
                .order_by(ob.c.id)
            ).mappings()
            for r in rows:
                out.setdefault((r["org_code"], r["report_form_no"]), {})[r["record_key"]] = dict(r)
    return out


def enqueue_reports(
    conn: Connection,
    entity: spec.Entity,
    rows: Sequence[Mapping[str, Any]],
    *,
    void_data_status: Sequence[str],
    now: datetime | None = None,
) -> int:
    """Queue the versions of report masters just written (store rows: key columns, data_status,
    last_update_dtime, etl_content_hash), in the caller's transaction. Returns the entries added,
    key-change voids included. Three statements whatever the batch size: read the reports' entries,
    supersede, insert."""
    if entity.name not in REPORT_ENTITIES or not rows:
        return 0
    now = now or utcnow()
    void = {str(v) for v in void_data_status}
    ordered = sorted(rows, key=lambda r: (str(r.get("last_update_dtime") or ""), entry_key(entity, r)))
    groups = _groups(conn, entity.name, {(str(r["org_code"]), str(r["report_form_no"])) for r in ordered})
    plan: dict[str, dict[str, Any]] = {}  # key -> the entry to insert (one per key: the last decision)
    stale: set[str] = set()  # keys whose unsent entries in the store become superseded
    for r in ordered:
        key = entry_key(entity, r)
        org, form = str(r["org_code"]), str(r["report_form_no"])
        group = groups.setdefault((org, form), {})
        action = "void" if str(r.get("data_status")) in void else "register"
        last = group.get(key)
        if last is not None and last["status"] != "superseded" and \
                (last["content_hash"], last["action"]) == (r["etl_content_hash"], action):  # fmt: skip
            continue
        entry = {"org_code": org, "report_form_no": form, "record_key": key,
                 "content_hash": r["etl_content_hash"], "action": action, "cause": "load", "status": "queued"}  # fmt: skip
        plan[key], group[key] = entry, entry
        stale.add(key)
        for other, info in group.items():  # key change: void the report's other keys
            if other != key and info["action"] == "register":
                voided = {**info, "action": "void", "cause": "key_change", "status": "queued"}
                plan[other], group[other] = voided, voided
                stale.add(other)
    if not plan:
        return 0
    _supersede(conn, entity.name, stale, now, "a newer version was queued")
    conn.execute(
        insert(ob),
        [{**{k: e[k] for k in ("org_code", "report_form_no", "record_key", "content_hash", "action", "cause",
                               "status")},
          "entity": entity.name, "attempts": 0, "created_at": now, "updated_at": now} for e in plan.values()],
    )  # fmt: skip
    return len(plan)


def enqueue_records(
    conn: Connection,
    entity: spec.Entity,
    rows: Sequence[Mapping[str, Any]],
    *,
    org_code: str | None = None,
    now: datetime | None = None,
) -> int:
    """Queue the rows of a record entity (daily counts, accept/quote records) just written (store
    rows: key columns, etl_content_hash), in the caller's transaction: each row whose version is not
    its key's latest entry; the key's unsent older entries become superseded. ``org_code``: the
    pushing hospital (default the row's own ``org_code``); accept/quote rows, which name no
    hospital of their own, get it recorded (``etl_org_code``). Returns the entries added."""
    if entity.name not in RECORD_ENTITIES or not rows:
        return 0
    now = now or utcnow()
    label = RECORD_ENTITIES[entity.name][1]
    table = store.SPEC_TABLES[entity.name]
    if org_code is not None and "etl_org_code" in table.c:
        _record_sender(conn, entity, rows, org_code)
    by_key = {entry_key(entity, r): r for r in rows}
    latest = _latest(conn, entity.name, list(by_key))
    todo = []
    for key, r in by_key.items():
        last = latest.get(key)
        if (
            last is not None
            and last["status"] != "superseded"
            and last["content_hash"] == r["etl_content_hash"]
        ):
            continue
        todo.append({"entity": entity.name, "org_code": str(org_code or r["org_code"]), "report_form_no": str(r[label]),
                     "record_key": key, "content_hash": r["etl_content_hash"], "action": "register", "cause": "load",
                     "status": "queued", "attempts": 0, "created_at": now, "updated_at": now})  # fmt: skip
    if todo:
        _supersede(conn, entity.name, [t["record_key"] for t in todo], now, "a newer version was queued")
        conn.execute(insert(ob), todo)
    return len(todo)


def _record_sender(
    conn: Connection, entity: spec.Entity, rows: Sequence[Mapping[str, Any]], org_code: str
) -> None:
    table = store.SPEC_TABLES[entity.name]
    key = tuple_(*(table.c[k] for k in entity.key))
    values = [tuple(r[k] for k in entity.key) for r in rows]
    for part in _chunks(values):
        conn.execute(
            update(table)
            .where(key.in_(part), (table.c.etl_org_code.is_(None)) | (table.c.etl_org_code != org_code))
            .values(etl_org_code=org_code)
        )


def enqueue(
    conn: Connection,
    entity: spec.Entity,
    rows: Sequence[Mapping[str, Any]],
    *,
    org_code: str | None = None,
    void_data_status: Sequence[str],
) -> int:
    """Queue written rows of any pushed entity (:func:`enqueue_reports` or :func:`enqueue_records`);
    entities the platform does not take (PACS) queue nothing."""
    if entity.name in REPORT_ENTITIES:
        return enqueue_reports(conn, entity, rows, void_data_status=void_data_status)
    return enqueue_records(conn, entity, rows, org_code=org_code)


SYNCABLE = PUSH_ENTITIES


def sync_from_store(
    engine: Engine,
    *,
    entities: Sequence[str] = SYNCABLE,
    org_codes: Sequence[str] = (),
    void_data_status: Sequence[str],
) -> dict[str, int]:
    """Queue every store version the outbox does not hold as its key's latest (rows stored before
    the outbox existed, or a store edited by hand). Idempotent. Returns entries per entity.
    Accept/quote rows are queued for the hospital that sent them (``etl_org_code``); rows that do not
    say (loaded by hand, outside the pipeline) are left out and counted under ``<entity>:no_sender``."""
    unknown = sorted(set(entities) - set(SYNCABLE))
    if unknown:
        raise ValueError(f"sync takes {list(SYNCABLE)}, not {unknown}")
    void = {str(v) for v in void_data_status}
    out: dict[str, int] = {}
    for name in entities:
        ent = spec.entity(name)
        table = store.SPEC_TABLES[name]
        sender = table.c.etl_org_code if "etl_org_code" in table.c else table.c.org_code
        extra = ("data_status", "last_update_dtime") if name in REPORT_ENTITIES else ()
        cols = [table.c[k] for k in dict.fromkeys((*ent.key, *extra, "etl_content_hash"))]
        stmt = select(*cols, sender.label("etl_sender"))
        if org_codes:
            stmt = stmt.where(sender.in_(list(org_codes)))
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
            latest = _latest(conn, name, [entry_key(ent, r) for r in rows])
        todo: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            last = latest.get(entry_key(ent, r))
            action = "void" if str(r.get("data_status")) in void else "register"
            if last is None or (last["content_hash"], last["action"]) != (r["etl_content_hash"], action) \
                    or last["status"] == "superseded":  # fmt: skip
                todo.setdefault(r.pop("etl_sender") or "", []).append(r)
        if todo.get(""):
            out[f"{name}:no_sender"] = len(todo.pop(""))
            log.warning("sync: %s %s row(s) do not say which hospital sent them; not queued (load them "
                        "again through their records DAG)", out[f"{name}:no_sender"], name)  # fmt: skip
        n = 0
        for org, group in sorted(todo.items()):
            for part in _chunks(group):
                with engine.begin() as conn:
                    n += enqueue(conn, ent, part, org_code=org if name in RECORD_ENTITIES else None,
                                 void_data_status=void_data_status)  # fmt: skip
        out[name] = n
    return out


def upgrade(engine: Engine) -> dict[str, int]:
    """Bring an older store's push state up to date, in place and idempotently: the outbox's keys of
    accept/quote records hashed (:func:`entry_key`), and the hospital that sent accept/quote rows
    loaded before ``etl_org_code`` existed taken from their extraction runs (``etl_run``). Run at
    the start of every DAG (``prepare_store``), push run and sync. Returns what it changed."""
    store.create_all(engine)  # the columns a newer release added (etl_org_code)
    out = {"keys_hashed": 0, "senders_found": 0}
    secret = _secret()
    for name in RECORD_ENTITIES:
        ent = spec.entity(name)
        hidden = _hidden(ent)
        if not hidden:
            continue
        with engine.begin() as conn:
            changes = []
            for entry_id, key in conn.execute(select(ob.c.id, ob.c.record_key).where(ob.c.entity == name)):
                values = json.loads(key)
                clear = [i for i in hidden if values[i] is not None and not str(values[i]).startswith(OPAQUE)]
                if clear:
                    for i in clear:
                        values[i] = _opaque(str(values[i]), secret)
                    changes.append({"entry_id": entry_id, "new_key": json.dumps(values, ensure_ascii=False)})
            if changes:
                conn.execute(update(ob).where(ob.c.id == bindparam("entry_id")).values(record_key=bindparam("new_key")),
                             changes)  # fmt: skip
            out["keys_hashed"] += len(changes)
    out["senders_found"] = _senders_from_runs(engine)
    if any(out.values()):
        log.info("push outbox upgraded: %s", out)
    return out


def _senders_from_runs(engine: Engine) -> int:
    """``etl_org_code`` of accept/quote rows that lack it, from the run that loaded them (its
    ``etl_run.details.org_code``)."""
    from sqlalchemy import inspect

    n = 0
    with engine.begin() as conn:
        for name in ("sehr_accept_record", "sehr_quote_record"):
            table = store.SPEC_TABLES[name]
            if "etl_org_code" not in {c["name"] for c in inspect(conn).get_columns(table.name)}:
                continue  # create_all adds it; nothing to fill before
            runs = conn.execute(select(table.c.etl_run_id).where(table.c.etl_org_code.is_(None))
                                .distinct()).scalars().all()  # fmt: skip
            for run_id in runs:
                details = (
                    conn.execute(select(store.run.c.details).where(store.run.c.run_id == run_id))
                    .scalars()
                    .all()
                )
                orgs = {json.loads(d).get("org_code") for d in details if d} - {None}
                if len(orgs) == 1:
                    n += conn.execute(update(table).where(table.c.etl_run_id == run_id, table.c.etl_org_code.is_(None))
                                      .values(etl_org_code=orgs.pop())).rowcount or 0  # fmt: skip
    return n


# --------------------------------------------------------------------------------------------
# claiming and recording


def _scope(stmt: Any, entities: Sequence[str], org_codes: Sequence[str]) -> Any:
    stmt = stmt.where(ob.c.entity.in_(list(entities)))
    if org_codes:
        stmt = stmt.where(ob.c.org_code.in_(list(org_codes)))
    return stmt


def _entry(r: Any) -> Entry:
    return Entry(r.id, r.entity, r.org_code, r.report_form_no, r.record_key, r.content_hash, r.action,
                 r.cause, r.attempts)  # fmt: skip


def _behind_void() -> Any:
    """D20: a register waits for the open update void of its key (it is not due before it)."""
    void = aliased(ob)
    return exists().where(
        void.c.entity == ob.c.entity, void.c.record_key == ob.c.record_key, void.c.cause == "update",
        void.c.status.in_(BLOCKING), ob.c.action == "register",
    )  # fmt: skip


def claim_query(
    action: str, limit: int, now: datetime, entities: Sequence[str], org_codes: Sequence[str]
) -> Any:
    """The due ``action`` entries in queue order, at most ``limit``, locked (:func:`claim`)."""
    busy = aliased(ob)
    in_flight = exists().where(
        busy.c.entity == ob.c.entity, busy.c.record_key == ob.c.record_key, busy.c.status == "sending"
    )
    stmt = (
        select(ob)
        .where(
            ob.c.status == "queued",
            ob.c.action == action,
            (ob.c.next_attempt_at.is_(None)) | (ob.c.next_attempt_at <= now),
            ~in_flight,
            ~_behind_void(),
        )  # fmt: skip
        .order_by(ob.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=ob)
    )
    return _scope(stmt, entities, org_codes)


def claim(
    conn: Connection,
    *,
    limit: int,
    claimed_by: str,
    entities: Sequence[str] = PUSH_ENTITIES,
    org_codes: Sequence[str] = (),
    now: datetime | None = None,
) -> list[Entry]:
    """Mark up to ``limit`` due entries ``sending`` for ``claimed_by`` (in the caller's
    transaction; commit it before calling the platform) and return them. Entries locked by another
    run are skipped (PostgreSQL ``FOR UPDATE SKIP LOCKED``), and so are entries of a key in flight
    or of a key already claimed here (its first due entry, voids first, goes alone).

    Voids first, then registers, each in queue order along ``ix_push_outbox_queue``: a claim reads
    about ``limit`` entries however long the queue (one query sorting every queued entry made a
    backlog's push quadratic)."""
    now = now or utcnow()
    rows, keys = [], set()
    for action in ("void", "register"):
        if len(rows) >= limit:
            break
        for r in conn.execute(claim_query(action, limit - len(rows), now, entities, org_codes)):
            if (r.entity, r.record_key) not in keys:
                keys.add((r.entity, r.record_key))
                rows.append(r)
    if not rows:
        return []
    conn.execute(
        update(ob)
        .where(ob.c.id.in_([r.id for r in rows]))
        .values(status="sending", claimed_at=now, claimed_by=claimed_by[:128], updated_at=now)
    )
    return [_entry(r) for r in rows]


def precede_with_voids(
    conn: Connection, entries: Sequence[Entry], *, claimed_by: str, now: datetime | None = None
) -> dict[int, Entry]:
    """D20 ``void_then_register``: for each claimed report register whose key the platform holds
    (its latest acknowledged entry is a register), a ``void`` entry (``cause`` = ``update``, the
    register's version) inserted ``sending`` for ``claimed_by`` in the caller's transaction, to be
    sent before it. Returns register id -> its void."""
    registers = [e for e in entries if e.action == "register" and e.entity in REPORT_ENTITIES]
    if not registers:
        return {}
    now = now or utcnow()
    on_platform = {(entity, k) for entity in {e.entity for e in registers}
                   for k in held(conn, entity, [e.record_key for e in registers if e.entity == entity])}  # fmt: skip
    out: dict[int, Entry] = {}
    for e in registers:
        if (e.entity, e.record_key) not in on_platform:
            continue
        new_id = conn.execute(
            insert(ob).values(
                entity=e.entity,
                org_code=e.org_code,
                report_form_no=e.report_form_no,
                record_key=e.record_key,
                content_hash=e.content_hash,
                action="void",
                cause="update",
                status="sending",
                attempts=0,
                claimed_at=now,
                claimed_by=claimed_by[:128],
                created_at=now,
                updated_at=now,
            )  # fmt: skip
        ).inserted_primary_key[0]
        out[e.id] = Entry(int(new_id), e.entity, e.org_code, e.report_form_no, e.record_key, e.content_hash,
                          "void", "update", 0)  # fmt: skip
    return out


def release(conn: Connection, ids: Sequence[int], *, claimed_by: str, now: datetime | None = None) -> int:
    """Give claimed entries that were never sent back to the queue (no attempt counted)."""
    n = 0
    for part in _chunks(list(ids)):
        n += (
            conn.execute(
                update(ob)
                .where(ob.c.id.in_(part), ob.c.status == "sending", ob.c.claimed_by == claimed_by[:128])
                .values(status="queued", claimed_at=None, claimed_by=None, updated_at=now or utcnow())
            ).rowcount
            or 0
        )
    return n


@dataclass(frozen=True, slots=True)
class Call:
    """One call to the platform, for ``push_log``."""

    sent_at: datetime
    answered_at: datetime | None
    outcome: str  # ok | error | transport
    answer: str | None


@dataclass(frozen=True, slots=True)
class Recording:
    """One entry's outcome, to write with :func:`record`."""

    entry: Entry
    status: str
    attempts: int
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    answer_text: str | None = None
    calls: Sequence[Call] = ()


def record(
    conn: Connection, recordings: Sequence[Recording], *, claimed_by: str, now: datetime | None = None
) -> set[int]:
    """Write entries' outcomes (and the calls each was part of to ``push_log``) in the caller's
    transaction, in three statements however many: lock the entries still this run's, update them,
    insert the calls. Returns the ids written; an entry no longer this run's (its lease expired and
    another run took it) is left alone."""
    if not recordings:
        return set()
    now = now or utcnow()
    who = claimed_by[:128]
    ids = [r.entry.id for r in recordings]
    mine: set[int] = set()
    for part in _chunks(ids):
        mine |= set(conn.execute(select(ob.c.id).where(ob.c.id.in_(part), ob.c.status == "sending",
                                                        ob.c.claimed_by == who).with_for_update()).scalars())  # fmt: skip
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in recordings:
        if r.entry.id not in mine:
            continue
        values: dict[str, Any] = {
            "status": r.status, "attempts": r.attempts, "next_attempt_at": r.next_attempt_at, "claimed_at": None,
            "claimed_by": None, "updated_at": now,
        }  # fmt: skip
        if r.last_error is not None or r.status == "acked":
            values["last_error"] = r.last_error
        if r.answer_text is not None:
            values["answer_text"] = r.answer_text
        if r.status == "acked":
            values["acked_at"] = now
        groups.setdefault(tuple(values), []).append({"entry_id": r.entry.id, **values})
    for columns, rows in groups.items():  # one executemany per set of columns written
        stmt = update(ob).where(ob.c.id == bindparam("entry_id")).values({c: bindparam(c) for c in columns})
        conn.execute(stmt, rows)
    calls = [
        {"outbox_id": r.entry.id, "attempt": r.attempts, "method": r.entry.method, "run_id": who, "sent_at": c.sent_at,
         "answered_at": c.answered_at, "outcome": c.outcome, "answer": c.answer}
        for r in recordings if r.entry.id in mine for c in r.calls
    ]  # fmt: skip
    if calls:
        conn.execute(insert(log_t), calls)
    return mine


def recover_stale(
    conn: Connection, *, lease_s: float, max_attempts: int, now: datetime | None = None
) -> list[Entry]:
    """Entries left ``sending`` longer than ``lease_s`` (their run died between the call and the
    record) back to ``queued``, due now: the call may have happened, so it counts as an attempt
    and is logged ``lost``; at ``max_attempts`` the entry is dead (a report that kills the
    process must not kill every run)."""
    now = now or utcnow()
    stmt = (
        select(ob)
        .where(ob.c.status == "sending", ob.c.claimed_at <= now - timedelta(seconds=lease_s))
        .with_for_update(skip_locked=True)
    )
    rows = conn.execute(stmt).all()
    for r in rows:
        attempts = r.attempts + 1
        dead = attempts >= max_attempts
        text = "the run that sent it ended before recording the answer (lost); sent again as an upsert"
        conn.execute(
            update(ob)
            .where(ob.c.id == r.id)
            .values(
                status="dead" if dead else "queued",
                attempts=attempts,
                next_attempt_at=now,
                claimed_at=None,
                claimed_by=None,
                last_error=text,
                updated_at=now,
            )  # fmt: skip
        )
        conn.execute(
            insert(log_t).values(
                outbox_id=r.id,
                attempt=attempts,
                method=method_of(r.entity, r.action),
                run_id=r.claimed_by,
                sent_at=r.claimed_at or now,
                answered_at=None,
                outcome="lost",
                answer=None,
            )  # fmt: skip
        )
    return [_entry(r) for r in rows]


def held(conn: Connection, entity: str, keys: Sequence[str]) -> set[str]:
    """The keys the platform holds, as far as the outbox knows: the last of the key's entries
    the platform acknowledged is a register. Last in the order of the answers (``push_log``), not
    of the entries: an update void (D20) is queued after its register but goes before it."""
    out: set[str] = set()
    for part in _chunks(sorted(set(keys))):
        last: dict[str, str] = {}
        rows = conn.execute(
            select(ob.c.record_key, ob.c.action)
            .join(log_t, log_t.c.outbox_id == ob.c.id)
            .where(
                ob.c.entity == entity,
                ob.c.record_key.in_(part),
                ob.c.status == "acked",
                log_t.c.outcome == "ok",
            )
            .order_by(log_t.c.id)
        )
        for key, action in rows:
            last[key] = action
        out |= {k for k, action in last.items() if action == "register"}
    return out


def next_due(
    conn: Connection, *, entities: Sequence[str] = PUSH_ENTITIES, org_codes: Sequence[str] = ()
) -> datetime | None:
    """When the earliest queued entry falls due (None: nothing queued); a register waiting for its
    void falls due with the void."""
    stmt = _scope(select(func.min(func.coalesce(ob.c.next_attempt_at, ob.c.created_at))).where(
        ob.c.status == "queued", ~_behind_void()), entities, org_codes)  # fmt: skip
    return conn.execute(stmt).scalar_one_or_none()


# --------------------------------------------------------------------------------------------
# the engineer's view


def counts(
    conn: Connection, *, entities: Sequence[str] = PUSH_ENTITIES
) -> dict[str, dict[str, dict[str, int]]]:
    """``{entity: {org_code: {status: n}}}`` over the whole outbox."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    stmt = (
        select(ob.c.entity, ob.c.org_code, ob.c.status, func.count())
        .where(ob.c.entity.in_(list(entities)))
        .group_by(ob.c.entity, ob.c.org_code, ob.c.status)
    )
    for entity, org, status, n in conn.execute(stmt):
        out.setdefault(entity, {}).setdefault(org, {})[status] = int(n)
    return out


def _letter(r: Any) -> dict[str, Any]:
    from hurren.reports.masking import mask_text  # the runner stores it masked; older rows too, here

    return {
        "id": r.id, "entity": r.entity, "org_code": r.org_code, "report_form_no": r.report_form_no,
        "action": r.action, "cause": r.cause, "status": r.status, "attempts": r.attempts,
        "last_error": (mask_text(r.last_error) or "")[:500], "updated_at": str(r.updated_at),
    }  # fmt: skip


def letters(
    conn: Connection,
    *,
    statuses: Sequence[str] = ("dead",),
    entity: str | None = None,
    org_code: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Dead (or rejected) entries, newest first, with their last error: what the engineer reads."""
    stmt = select(ob).where(ob.c.status.in_(list(statuses))).order_by(ob.c.updated_at.desc(), ob.c.id.desc())
    if entity:
        stmt = stmt.where(ob.c.entity == entity)
    if org_code:
        stmt = stmt.where(ob.c.org_code == org_code)
    return [_letter(r) for r in conn.execute(stmt.limit(limit))]


def requeue(
    conn: Connection,
    *,
    ids: Sequence[int] = (),
    statuses: Sequence[str] = ("dead",),
    entity: str | None = None,
    org_code: str | None = None,
    error_contains: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Put dead / rejected entries back in the queue (attempts reset, due now), after a fix.

    Selected by ``ids``, or by status plus optional entity, org code and text of the last error.
    An entry whose key has a newer entry is not requeued but marked ``superseded`` (``status`` in
    the returned rows says which). ``dry_run``: only list what would happen."""
    allowed = {"dead", "rejected"}
    if not set(statuses) <= allowed:
        raise ValueError(f"requeue takes entries in status {sorted(allowed)}, got {list(statuses)}")
    now = now or utcnow()
    stmt = select(ob).where(ob.c.status.in_(list(statuses)))
    if ids:
        stmt = stmt.where(ob.c.id.in_([int(i) for i in ids]))
    if entity:
        stmt = stmt.where(ob.c.entity == entity)
    if org_code:
        stmt = stmt.where(ob.c.org_code == org_code)
    if error_contains:
        stmt = stmt.where(ob.c.last_error.contains(error_contains, autoescape=True))
    rows = conn.execute(stmt.order_by(ob.c.id)).all()
    newest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for entity_name in {r.entity for r in rows}:
        for key, last in _latest(
            conn, entity_name, [r.record_key for r in rows if r.entity == entity_name]
        ).items():
            newest[entity_name, key] = last
    out = []
    for r in rows:
        latest = newest.get((r.entity, r.record_key))
        if r.cause == "update":  # it serves the register of its version, if that still waits
            superseded = latest is None or (latest["content_hash"], latest["status"]) != (
                r.content_hash,
                "queued",
            )
        else:
            superseded = latest is not None and latest["id"] != r.id
        result = {**_letter(r), "status": "superseded" if superseded else "queued"}
        out.append(result)
        if dry_run:
            continue
        values: dict[str, Any] = {"updated_at": now}
        if superseded:
            values |= {"status": "superseded", "last_error": "a newer version was queued"}
        else:
            values |= {"status": "queued", "attempts": 0, "next_attempt_at": None}
        conn.execute(update(ob).where(and_(ob.c.id == r.id, ob.c.status == r.status)).values(**values))
    return out


def key_values(entity: spec.Entity, record_key: str) -> dict[str, Any]:
    """The store's typed key values of an outbox key (its JSON text), hashed parts left out: with
    them, the row is the one of these values whose :func:`entry_key` is the key."""
    values = json.loads(record_key)
    return {
        k: to_store_value(entity.field(k), v)
        for k, v in zip(entity.key, values, strict=True)
        if not (isinstance(v, str) and v.startswith(OPAQUE) and k in spec.PATIENT_IDENTIFIERS)
    }
