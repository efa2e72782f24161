"""The load test: a week of several hospitals through the whole pipeline, in a reduced size.

The same driver as the benchmark (``bench/bench_week.py``, :func:`run_week`), at a size CI can
afford: 2 hospitals x 7 days x 40 reports (small PDFs, the pandas validator), with more defects,
revisions and voids than the benchmark so that every path is taken every day. It asserts the
invariants, not timings: every run's extracted = loaded + unchanged + stale + quarantined; every valid
report acknowledged in its stored version and held by the simulator with its PDF, every voided
one void there or never sent, nothing left in the outbox; every hospital-day's counts sent and
matching the acknowledged reports; the last day's peak RSS not above the first day's. Then the
same for 3 days in two worker processes (``--workers 2``: hospitals dealt out, one store), the
simulator in fast-ack. The full size is the benchmark (bench/README.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from bench.bench_week import (
    WeekConfig,
    WeekResult,
    own_bucket,
    own_databases,
    report,
    run_week,
    simulator_process,
)

pytestmark = pytest.mark.services

CONFIG = WeekConfig(
    hospitals=2, per_day=40, days=7, lab_items=6, pdf_kb=3, defect_rate=0.05, revise_rate=0.1, void_rate=0.1,
    validator="pandas", chunk_size=16, max_minutes=5,
)  # fmt: skip


# the same in two worker processes (hospitals dealt out, pipeline and push overlapping), 3 days,
# the simulator in fast-ack mode (its stored PDF digests still checked)
IN_TWO = replace(CONFIG, days=3, workers=2)


def _week(cfg: WeekConfig, pg_admin_url, s3, tmp_path_factory, check_rate: float = 1) -> Iterator[WeekResult]:
    """The week, in databases, a bucket and a simulator of its own, all removed afterwards."""
    tag = secrets.token_hex(4)
    with (
        simulator_process(tmp_path_factory.mktemp("week_sim"), check_rate) as sim,
        own_bucket(s3.client, f"hurren-week-test-{tag}") as bucket,
        own_databases(pg_admin_url, f"hurren_week_test_{tag}") as make_database,
    ):
        yield run_week(cfg, make_database=make_database, s3=s3.client, bucket=bucket, sim=sim,
                       say=lambda _line: None)  # fmt: skip


@pytest.fixture(scope="module")
def week(pg_admin_url, s3, tmp_path_factory):
    yield from _week(CONFIG, pg_admin_url, s3, tmp_path_factory)


@pytest.fixture(scope="module")
def week_in_two(pg_admin_url, s3, tmp_path_factory):
    yield from _week(IN_TWO, pg_admin_url, s3, tmp_path_factory, check_rate=0.01)


def test_the_whole_week_ran(week):
    assert week.stopped is None, report(week)
    assert [d.day for d in week.days] == [CONFIG.start + timedelta(days=n) for n in range(7)]
    assert len(week.runs) == 7 * 2 * 2  # a window per day, hospital and stream: the watermark advanced daily


def test_the_invariants_hold(week):
    assert week.failures == [], report(week)


def test_every_path_was_taken(week):
    t = week.totals
    assert t["loaded"] > 0 and t["quarantined"] > 0, report(week)
    assert t["unchanged"] > 0, "the overlap re-reads the previous evening's reports as unchanged"
    assert t["lab voided on platform"] + t["exam voided on platform"] > 0, report(week)
    assert t["daily count rows on platform"] > 0
    revisions = (
        t["loaded"] - t["lab valid in store"] - t["exam valid in store"]
    )  # new versions of stored reports
    assert (
        revisions > 0
        and week.push["labmaster acked"] + week.push["exammaster acked"]
        > t["lab valid in store"] + t["exam valid in store"]
    ), report(week)
    assert all(d.rss_mb["self"] > 0 and d.rss_mb["simulator"] > 0 for d in week.days)


def test_two_worker_processes_run_every_hospital_day_once_and_the_invariants_hold(week_in_two):
    assert week_in_two.stopped is None and week_in_two.failures == [], report(week_in_two)
    assert week_in_two.hospital_days == 2 * 3 and len(week_in_two.runs) == 3 * 2 * 2
    assert {r["source"] for r in week_in_two.runs} == {"week0", "week1"}
    assert week_in_two.totals["lab on platform"] == week_in_two.totals["lab valid in store"] > 0
    push = week_in_two.days[-1].stages["push"]
    assert push.reports > 0 and push.cpu_s > 0 and push.sim_cpu_s > 0 and push.pg_cpu_s > 0  # the CPU meter
