"""PACS rows loaded column by column (``hurren.load.records``) against the per-unit path, on real
PostgreSQL: the same batches, with defects of every kind, give the same counts, the same stored
rows (content hashes included) and the same quarantine entries, round after round."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from hurren import load, sources, spec, store, validation
from hurren.extract import RecordBatch, canonical_frame
from hurren.load import records
from hurren.load.engines import Staging
from hurren.rules import load_rulebook

pytestmark = pytest.mark.services

INSTANCE = spec.entity("v_web_jcjg")
ORG = "457759922"
CLOCK = load.SourceClock(datetime(2024, 3, 12, 8, 0, 0), timedelta(minutes=10))


def _instance(i: int, when: datetime, **over: Any) -> dict[str, Any]:
    uid = f"1.2.156.112605.14038.20240311.{i // 50}"
    row = {
        "FILEPATH": f"/pacs/{i}.dcm",
        "CREATEDTIME": f"{when:%Y-%m-%d %H:%M:%S}",
        "STUDIUIID": uid,
        "STUDYDATE": "2024-03-11 09:58:00",
        "SERIESIUID": uid + ".1",
        "SERIESNO": "1",
        "INSTANCESOPIUID": f"{uid}.1.{i}",
        "INSTANCEINSTNO": str(i % 50 + 1),
        "PATIENTNAME": "张三",
        "PATIENTAGE": "045Y",
        "PATIENTSEX": "1",
        "ACCESS_NO": f"CT2403110{i // 50:05d}",
        "PATIENT_ID": "P0001",
        "MODALITY": "CT",
        "INSTITUTIONNAME": "某医院",
        "INSTITUTIONCODE": ORG,
        "FILESIZE": str(520000 + i),
    }
    return row | over


DEFECTS: list[dict[str, Any]] = [
    {"CREATEDTIME": "2024-02-30 10:00:00"},  # does not type: validation and load hold it
    {"FILESIZE": "12k"},
    {"PATIENTSEX": "X"},  # validation only
    {"CREATEDTIME": "2099-01-01 00:00:00"},  # beyond the source's clock: future_dtime
    {"FILEPATH": 'a\tb\nc\\d"e\r'},  # valid: COPY must carry it as it is
    {"PATIENTAGE": None, "SERIESNO": ""},  # valid: null and empty stay apart
    {"PATIENTNAME": "\\N", "SERIESNO": "\\.", "ACCESS_NO": "x\x0by\fz\bé𠀀"},  # COPY's own markers, as text
    {"INSTANCESOPIUID": None},  # a missing key
]


def _day(rng: random.Random, n: int, start: int, base: datetime) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        row = _instance(i, base + timedelta(seconds=i))
        if rng.random() < 0.15:
            row |= rng.choice(DEFECTS)
        out.append(row)
    for _ in range(3):  # the same key twice in a batch: both held
        out.append(dict(rng.choice(out)) | {"FILESIZE": str(rng.randrange(10**6))})
    rng.shuffle(out)
    return out


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return canonical_frame([[r[n] for n in INSTANCE.names] for r in rows], INSTANCE.names)


def _load(db: Engine, frame: pd.DataFrame, src: sources.Source, method: str, run: str) -> dict[str, int]:
    holds = None  # the last round: load's own checks alone (as for the rows of the future range)
    if run != "unvalidated":
        holds = load.holds_from_verdicts(
            validation.validate_records(
                frame,
                entity="v_web_jcjg",
                engine="pandas",
                options=spec.DEFAULT_OPTIONS,
                rulebook=load_rulebook(),
            )
        )
    batch = RecordBatch(stream="pacs_instance", records=frame, index=0, max_cursor=None)
    counts = load.load_records(db, batch, source=src, run_id=run, holds=holds, method=method, clock=CLOCK)
    c = counts.as_dict()
    assert c["extracted"] == c["loaded"] + c["unchanged"] + c["stale"] + c["quarantined"]
    return c


def _stored(db: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    t, q = store.SPEC_TABLES["v_web_jcjg"], store.quarantine
    cols = [c for c in t.c if c.name not in ("etl_loaded_at",)]
    with db.connect() as conn:
        stored = [tuple(r) for r in conn.execute(select(*cols).order_by(t.c.instancesopiuid))]
        held = conn.execute(
            select(
                q.c.record_key,
                q.c.content_hash,
                q.c.rules,
                q.c.reason,
                q.c.payload,
                q.c.resolved_at.is_(None),
            )
            .where(q.c.entity == "v_web_jcjg")
            .order_by(q.c.record_key, q.c.content_hash)
        )
        return stored, [tuple(r) for r in held]


def _as_if_raced(st: Staging) -> Any:
    """A stage statement that takes nothing out: as if every stored version had been stored by
    another run between it and the upsert (the load then sorts them out after the upsert)."""
    from psycopg import sql

    return sql.SQL("DELETE FROM {s} WHERE false RETURNING {keys}, true").format(
        s=st.stage, keys=st.stage_keys
    )


@pytest.mark.parametrize("raced", [False, True], ids=["", "raced"])
def test_column_by_column_loads_as_the_per_unit_path(
    make_database: Callable[..., str], monkeypatch: pytest.MonkeyPatch, raced: bool
) -> None:
    assert records.columnwise("copy", INSTANCE, None)
    if raced:
        monkeypatch.setattr(Staging, "drop_stored_sql", _as_if_raced)
    body = {"id": "pacs_cols", "org_code": ORG, "org_name": "x", "conn_id": "c", "dialect": "postgresql"}
    src = sources.parse_sources(json.dumps({"hospitals": [body]})).get("pacs_cols")
    new, old = (create_engine(make_database("hurren_pacs")) for _ in range(2))
    for db in (new, old):
        store.create_all(db)
    rng = random.Random(13)
    base = datetime(2024, 3, 11, 8, 0, 0)
    first = _day(rng, 400, 0, base)
    # the next batch: the same rows, some changed later (written), some changed earlier (stale),
    # the held ones corrected (their quarantine entries resolved), and new rows
    second = []
    for r in first:
        r = dict(r)
        roll = rng.random()
        if roll < 0.5 and r["INSTANCESOPIUID"] is not None:
            r = _instance(int(r["INSTANCESOPIUID"].rsplit(".", 1)[1]), base + timedelta(hours=1))
        elif roll < 0.6:
            r["FILESIZE"], r["CREATEDTIME"] = "1", "2024-03-10 00:00:00"
        elif roll < 0.7:
            r["PATIENTNAME"] = "李四"
        second.append(r)
    second += _day(rng, 100, 400, base)
    rounds = [("first", first), ("again", first), ("second", second), ("second again", second)]
    rounds.append(("unvalidated", _day(rng, 100, 500, base)))
    seen: list[dict[str, int]] = []
    for name, rows in rounds:
        frame = _frame(rows)
        got_new = _load(new, frame, src, "copy", name)
        got_old = _load(old, frame, src, "portable", name)
        assert got_new == got_old, name
        assert _stored(new) == _stored(old), name
        seen.append(got_new)
    # every outcome was taken: loaded, unchanged, stale, quarantined (and written), resolved
    total = {k: sum(c[k] for c in seen) for k in seen[0]}
    assert all(
        total[k] > 0
        for k in ("loaded", "unchanged", "stale", "quarantined", "quarantine_written", "resolved")
    )
    assert seen[1]["loaded"] == 0 and seen[3]["loaded"] == 0
    for db in (new, old):
        db.dispose()
