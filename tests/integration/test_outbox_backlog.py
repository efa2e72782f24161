"""A push after an outage: a claim reads about what it takes, however long the queue (PostgreSQL).

A claim used to sort every queued entry (voids first, then by id) to take the first few: with a
backlog of a city's day (~90,000 reports) and a claim per 32 entries, the push was quadratic in
the backlog. Now voids and registers are each walked in queue order along
``ix_push_outbox_queue`` and the walk stops at the limit; the D20 update voids a register may wait
behind are found along ``ix_push_outbox_update``, not by reading the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text

from hurren import store
from hurren.push import outbox
from hurren_testkit.backlog import queue_backlog

BACKLOG = 20_000


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_a_claim_reads_its_limit_not_the_backlog(make_database: Callable[..., str]) -> None:
    engine = create_engine(make_database("hurren_backlog"))
    try:
        store.create_all(engine)
        with engine.begin() as conn:
            queue_backlog(conn, BACKLOG)
        with engine.begin() as conn:
            for action in ("void", "register"):
                query = outbox.claim_query(action, 32, outbox.utcnow(), outbox.PUSH_ENTITIES, ())
                sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
                plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar_one()
                nodes = _nodes(plan[0]["Plan"])
                scans = [
                    n
                    for n in nodes
                    if n.get("Relation Name") == "push_outbox" and n.get("Alias") == "push_outbox"
                ]
                assert scans and all(n["Actual Rows"] <= 64 for n in scans), json.dumps(plan)[:2000]
                assert not any(n["Node Type"] in ("Sort", "Seq Scan") for n in nodes), json.dumps(plan)[:2000]
            claimed = outbox.claim(conn, limit=32, claimed_by="backlog")
        # voids first (20 of them), then registers, each in queue order
        assert [e.action for e in claimed] == ["void"] * 20 + ["register"] * 12
        voids = [e.id for e in claimed if e.action == "void"]
        assert voids == sorted(voids)
        assert [e.id for e in claimed[20:]] == list(range(1, 13))
    finally:
        engine.dispose()
