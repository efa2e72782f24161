"""A push backlog: ``n`` queued lab report registers in the store's outbox, one void in a thousand.

What a city's day looks like to the push after an outage, made in one INSERT (no store rows behind
the entries: enough to claim them, not to send them). Used by ``tests/integration/test_outbox_backlog.py``
and ``bench/bench_claim.py``.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection


def queue_backlog(conn: Connection, n: int) -> None:
    """Queue ``n`` entries (ids 1..n on a fresh store; ids divisible by 1000 are voids) and analyse the table."""
    conn.execute(
        text(
            "INSERT INTO push_outbox (entity, org_code, report_form_no, record_key, content_hash, action, "
            "cause, status) SELECT 'labmaster', 'ORG', 'F' || g, '[\"ORG\", \"E' || g || '\", \"F' || g "
            "|| '\"]', md5(g::text), CASE WHEN g % 1000 = 0 THEN 'void' ELSE 'register' END, 'load', "
            "'queued' FROM generate_series(1, :n) g"
        ),
        {"n": n},
    )
    conn.execute(text("ANALYZE push_outbox"))
