"""A week of a city's reports through the whole pipeline against the simulator: throughput and peak memory.

    .venv/bin/python bench/bench_week.py                    # the full size: 2 hospitals x 7 days x 3,000 reports
    .venv/bin/python bench/bench_week.py --per-day 750      # the same week at a quarter of the volume
    .venv/bin/python bench/bench_week.py --hospitals 2 --per-day 100 --pdf-kb 5 --days 3   # a quick look
    .venv/bin/python bench/bench_week.py --per-day 750 --days 2 --workers 2 --baseline main   # old vs new, 2 processes

Volume. The spec gives no report volumes: its sizing section (1.5.2-1.5.3) gives a front-end
machine (>= 16 cores, 32 GB, 1 TB) and line bandwidths by city population (一级地市, more than 8
million people: >= 2,000 Mbit/s). We assume, as ``docs/deploy.md`` does for its sizing example,
that a large city has **30 hospitals in scope with 3,000 audited reports a day each** (80 % lab
with ~20 sub-items, 20 % exam with 1-3 sub-items; 100 KB PDFs): 90,000 reports a day, 630,000 a
week. That does not fit in 30 minutes on a 2-core machine. The full size keeps a hospital-day at
its assumed real volume and runs the whole week, for 2 of the 30 hospitals: 42,000 reports, 1/15
(6.7 %) of the city's week. ``--hospitals``, ``--per-day`` (or ``--scale``) and ``--days`` choose
another share, which the run prints.

What runs, day by day, as production runs it (all on loopback, in places of its own):

1. **generate**: each hospital's day with ``hurren_testkit.synthetic`` into its own PostgreSQL source
   database (COPY), 1 % defective; from day 2 also revisions (1 % of a day's volume) and voids
   (0.2 %) of earlier valid reports, stamped late that evening. A separate process does it (one,
   spawned for the week): the hospitals are not our pipeline, and their memory is not ours;
2. **pipeline**: ``hurren.pipeline.run_stream`` for lab, then exam, per hospital, incrementally: one
   window per stream and day ending at midnight (Beijing), so the watermark advances day by day and
   the 10-minute overlap re-reads a few reports (counted as unchanged); Great Expectations
   validates (``--validator``), PDFs go to S3;
3. **push**: ``hurren.push`` ``Pusher`` runs (production options, concurrency 4) until nothing is
   due, against a simulator of this run's own (its own process, SQLite file, SM2 key, one
   visitor credential), by default in fast-ack mode (``--check-rate 0.01``: one report in a
   hundred checked field by field; every one decrypted and stored with its PDF's SHA-256, which
   the invariants compare; ``--check-rate 1`` checks all);
4. **daily counts**: ``hurren.daily_counts.compute_day`` for the day and the two before it
   (``recount_days`` 3, as the DAG) before the push, which sends the changed rows from the outbox
   with the reports; after it, ``reconcile_day`` compares them with what the platform acknowledged.

``--workers N`` deals the hospitals out to N processes, each running its hospitals' week (its own
generator; the push of its hospitals only, ``org_codes``) into the one store, against the one
simulator: pipeline and push of different hospitals overlap. Stage seconds are then summed over
the workers, and the week's wall time gives the end-to-end reports/s. ``--baseline REF`` runs the
same week first with REF's code (a temporary ``git worktree``; this driver and this tree's
simulator), then with this tree's, and prints both side by side.

Measured per stage and day: seconds, reports/s, rows/s (masters + sub-items), PDF MB/s, the CPU
milliseconds per report of this process, the simulator, the PostgreSQL backends of this
process's connections (``application_name``) and the S3 server (shared: an upper bound), and the
peak RSS of this process (the pipeline, the push and the counts) and of the simulator (a thread
samples /proc every 0.1 s; the generator's ``ru_maxrss`` is shown apart; the PostgreSQL and S3
servers are shared services, not counted). At the end the invariants are
checked (:func:`check_invariants`): every run's extracted = loaded + unchanged + stale + quarantined;
every valid report in the store was acknowledged in its stored version and the simulator holds it,
with that version's PDF (SHA-256), every voided one is void there or never reached it, nothing is left
queued, rejected or dead; every day's counts were acknowledged and match the reports the platform
acknowledged; and the peak RSS of the last day is not above the first day's (within
``rss_tolerance``): memory is bounded by the chunk, not by the days.

Everything it creates (databases, bucket, simulator, its temporary files) is its own and is
removed at the end. ``--max-minutes`` stops before a day that would not finish in time; the
invariants are then checked on the days done. ``tests/load/test_week.py`` runs the same
:func:`run_week` in a reduced size.
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing
import os
import platform
import re
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("HURREN_BENCH_CODE") or HERE)  # the code measured: this tree's, or --baseline's
if str(ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugins"))
    sys.path.insert(1, str(HERE / "testkit"))  # the test kit: always this tree's
if str(HERE / "bench") not in sys.path:
    sys.path.append(str(HERE / "bench"))

from benchlib import checkout, code_env, cpu_seconds, describe  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from hurren import daily_counts, load, pipeline, spec, store  # noqa: E402
from hurren.platform import Credential  # noqa: E402
from hurren.push.connection import PlatformConfig, TimedSession  # noqa: E402
from hurren.push.options import PushOptions  # noqa: E402
from hurren.push.runner import Pusher  # noqa: E402
from hurren.rules import load_rulebook  # noqa: E402
from hurren.sources import Source, parse_sources  # noqa: E402
from hurren_testkit import synthetic  # noqa: E402

# Compatibility with the older code ``--baseline`` measures (e.g. 7920c33, issue #13's figure): only
# what the measured code lacks is filled in here, never in the library.
try:
    from hurren.spec import DEFAULT_OPTIONS  # noqa: E402
except ImportError:  # before DEFAULT_OPTIONS: the functions took the options' defaults when given none
    DEFAULT_OPTIONS = spec.SpecOptions()


def _minio_client(*args: Any) -> Any:
    try:
        from hurren.clients import minio_client
    except ImportError:  # before the rename hurren.connections -> hurren.clients
        from hurren.connections import minio_client
    return minio_client(*args)


def _rulebook_kwargs() -> dict[str, Any]:
    """``rulebook=`` for ``run_stream`` where the measured code takes it (older code loaded its own)."""
    takes = "rulebook" in inspect.signature(pipeline.run_stream).parameters
    return {"rulebook": load_rulebook()} if takes else {}


BEIJING = ZoneInfo("Asia/Shanghai")
CITY_HOSPITALS, CITY_PER_DAY, WEEK = 30, 3_000, 7  # the assumed large city (docstring)
LAB_SHARE = 0.8
KINDS = {"lab": ("labmaster", "lab_subitem"), "exam": ("exammaster", "exam_subitem")}
REPORTS = ("labmaster", "exammaster")
PLATFORM_ORG, PLATFORM_ORG_NAME = (
    "650100000",
    "乌鲁木齐市全民健康信息平台",
)  # the municipal platform's credential
VISITOR_CODE, VISITOR_KEY = "week-visitor", "week-key"
STAGES = ("generate", "pipeline lab", "pipeline exam", "push", "daily counts")
MB = 1e6


@dataclass(frozen=True, kw_only=True)
class WeekConfig:
    hospitals: int = 2
    per_day: int = 3_000  # audited reports per hospital and day, lab and exam together
    days: int = 7
    start: date = date(2024, 3, 4)  # a Monday
    lab_items: int = 20
    pdf_kb: float = 100.0
    defect_rate: float = 0.01
    revise_rate: float = 0.01  # of a day's volume, revised from day 2 on (earlier valid reports)
    void_rate: float = 0.002  # likewise voided
    chunk_size: int = 500  # sources.json default
    concurrency: int = 4  # PushOptions default
    workers: int = 1  # processes, each running its share of the hospitals (pipeline and push overlap)
    validator: str = "gx"  # the DAGs' default
    recount_days: int = 3  # the daily_counts DAG's default
    seed: int = 2024
    max_minutes: float | None = None
    # the last day's peak RSS may exceed the first day's by this share or by this much, whichever is larger
    # (a day's peak varies by about 10 % with what the allocator kept: bench/README.md)
    rss_tolerance: float = 0.25
    rss_slack_mb: float = 64.0

    @property
    def lab_per_day(self) -> int:
        return round(self.per_day * LAB_SHARE)

    @property
    def exam_per_day(self) -> int:
        return self.per_day - self.lab_per_day

    @property
    def reports(self) -> int:
        return self.hospitals * self.per_day * self.days

    @property
    def city_share(self) -> float:
        """The share of the assumed large city's week (30 hospitals x 3,000 reports x 7 days)."""
        return self.reports / (CITY_HOSPITALS * CITY_PER_DAY * WEEK)


@dataclass(slots=True)
class Stage:
    seconds: float = 0.0
    reports: int = 0
    rows: int = 0  # masters + sub-items (generate: every source row written)
    pdf_bytes: int = 0
    cpu_s: float = 0.0  # CPU of this process (all its threads)
    sim_cpu_s: float = 0.0  # of the simulator process
    pg_cpu_s: float = 0.0  # of the PostgreSQL backends serving this process's connections
    s3_cpu_s: float = 0.0  # of the S3 server (shared with whatever else uses it: an upper bound)

    def add(self, other: Stage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def rates(self) -> dict[str, float]:
        s = self.seconds or float("nan")
        return {"reports_s": self.reports / s, "rows_s": self.rows / s, "pdf_mb_s": self.pdf_bytes / MB / s,
                "cpu_ms_per_report": self.cpu_per_report()}  # fmt: skip

    def cpu_per_report(self) -> dict[str, float]:
        """CPU milliseconds per report: this process, the simulator, PostgreSQL, S3."""
        n = self.reports or float("nan")
        return {"self": self.cpu_s * 1e3 / n, "simulator": self.sim_cpu_s * 1e3 / n, "postgres": self.pg_cpu_s * 1e3 / n,
                "s3": self.s3_cpu_s * 1e3 / n}  # fmt: skip


@dataclass(slots=True)
class Day:
    day: date
    stages: dict[str, Stage] = field(default_factory=lambda: {s: Stage() for s in STAGES})
    wall_s: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)  # peak during the day: self, simulator; generator:
    # the generator process's peak so far (ru_maxrss)
    rss_by_stage: dict[str, float] = field(default_factory=dict)  # this process, peak per stage
    load_avg: float = 0.0  # 1-minute load average at the end of the day


@dataclass(slots=True)
class WeekResult:
    config: WeekConfig
    days: list[Day] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # run_stream summaries
    counts: list[dict[str, Any]] = field(default_factory=list)  # reconcile_day summaries, at the time
    push: Counter[str] = field(default_factory=Counter)  # "<entity> <Tally field>" summed over the push runs
    totals: dict[str, Any] = field(default_factory=dict)  # what check_invariants found
    failures: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the week stopped early (--max-minutes)
    hospital_days: int = 0  # done (a day of a hospital: its lab and exam pipeline runs)
    elapsed_s: float = 0.0
    max_rss_mb: float = 0.0  # getrusage: this process over its whole life
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # at the end
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def stage_totals(self) -> dict[str, Stage]:
        out = {s: Stage() for s in STAGES}
        for d in self.days:
            for name, st in d.stages.items():
                out[name].add(st)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": {**asdict(self.config), "start": self.config.start.isoformat(),
                       "city_share": self.config.city_share},  # fmt: skip
            "days": [{"day": d.day.isoformat(), "wall_s": d.wall_s, "rss_mb": d.rss_mb, "load_avg": d.load_avg,
                      "rss_by_stage": d.rss_by_stage,
                      "stages": {k: {**asdict(v), **v.rates()} for k, v in d.stages.items()}} for d in self.days],
            "stage_totals": {k: {**asdict(v), **v.rates()} for k, v in self.stage_totals().items()},
            "push": dict(self.push), "totals": self.totals, "failures": self.failures, "stopped": self.stopped,
            "elapsed_s": self.elapsed_s, "max_rss_mb": self.max_rss_mb, "load_avg": self.load_avg,
            "load_start": self.load_start,
        }  # fmt: skip


# --------------------------------------------------------------------------------------------
# memory


def _rss_mb(pid: int | str) -> float:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class RssSampler:
    """Samples the resident set size of named processes every ``interval`` s; :meth:`take` returns
    the peaks since the last take (MiB) and starts over."""

    def __init__(self, pids: dict[str, int | str], interval: float = 0.1) -> None:
        self.pids, self.interval = pids, interval
        self._peaks = {n: 0.0 for n in pids}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        with self._lock:
            for name, pid in self.pids.items():
                self._peaks[name] = max(self._peaks[name], _rss_mb(pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def take(self) -> dict[str, float]:
        self._sample()
        with self._lock:
            out = dict(self._peaks)
            self._peaks = {n: 0.0 for n in self.pids}
        self._sample()
        return out

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class CpuMeter:
    """CPU seconds charged to a stage: this process (all threads), the simulator, the PostgreSQL
    backends of this process's connections (found by their ``application_name``) and the S3
    server (its pid file under ``HURREN_SERVICES_DIR``; shared, so an upper bound)."""

    def __init__(self, engine: Engine, tag: str, sim_pid: int) -> None:
        self.engine, self.tag, self.sim_pid = engine, tag, sim_pid
        pid_file = Path(os.environ.get("HURREN_SERVICES_DIR", HERE / ".services")) / "run" / "s3.pid"
        self.s3_pid = pid_file.read_text().strip() if pid_file.exists() else None

    def snap(self) -> tuple[float, float, dict[int, float], float]:
        with self.engine.connect() as conn:
            pids = conn.execute(text("select pid from pg_stat_activity where application_name = :t"),
                                {"t": self.tag}).scalars().all()  # fmt: skip
        s3 = cpu_seconds(self.s3_pid) if self.s3_pid else 0.0
        return time.process_time(), cpu_seconds(self.sim_pid), {p: cpu_seconds(p) for p in pids}, s3

    def charge(self, stage: Stage, before: tuple[float, float, dict[int, float], float]) -> None:
        own, sim, pg, s3 = self.snap()
        stage.cpu_s += own - before[0]
        stage.sim_cpu_s += sim - before[1]
        stage.pg_cpu_s += sum(v - before[2].get(pid, 0.0) for pid, v in pg.items())
        stage.s3_cpu_s += s3 - before[3]


# --------------------------------------------------------------------------------------------
# the places it runs in: its own simulator, bucket and databases


@dataclass(frozen=True)
class SimulatorProcess:
    """Where the run's simulator listens (picklable: worker processes get it too)."""

    pid: int
    url: str
    public_key: str
    db: Path

    def config(self) -> PlatformConfig:
        credential = Credential(org_code=PLATFORM_ORG, org_name=PLATFORM_ORG_NAME, visitor_code=VISITOR_CODE,
                                visitor_key=VISITOR_KEY)  # fmt: skip
        return PlatformConfig(
            endpoint=self.url,
            public_key=self.public_key,
            credential=credential,
            timeout_s=60,
            spec_options=DEFAULT_OPTIONS,
        )


@contextmanager
def simulator_process(workdir: Path, check_rate: float = 1.0) -> Iterator[SimulatorProcess]:
    """``python -m hurren_testkit.simulator`` on a free loopback port, in its own process, with its own
    key pair and SQLite file under ``workdir``; accepts the one visitor credential of this run.
    ``check_rate`` below 1: fast-ack (the share of reports checked field by field; every one is
    still decrypted and stored with its PDF's SHA-256, which the invariants compare). Always this
    tree's simulator, also when ``--baseline`` measures older code."""
    env = {**os.environ, "PYTHONPATH": f"{HERE / 'plugins'}{os.pathsep}{HERE / 'testkit'}"}
    db, log_path = workdir / "simulator.db", workdir / "simulator.log"
    with open(log_path, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hurren_testkit.simulator", "--host", "127.0.0.1", "--port", "0",
             "--key-file", str(workdir / "sim-key.json"), "--db", str(db), "--log-level", "WARNING",
             "--visitor", f"{PLATFORM_ORG}:{VISITOR_CODE}:{VISITOR_KEY}:{PLATFORM_ORG_NAME}",
             "--check-rate", str(check_rate)],
            stdout=subprocess.PIPE, stderr=log_file, text=True, env=env,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = re.search(r"serving (\S+) ", proc.stdout.readline())
        key = re.search(r"public key (\S+)", proc.stdout.readline())
        if not url or not key:
            raise RuntimeError(
                f"the simulator did not start:\n{log_path.read_text(encoding='utf-8')[-2000:]}"
            )
        yield SimulatorProcess(proc.pid, url.group(1), key.group(1), db)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def own_bucket(client: Any, name: str) -> Iterator[str]:
    """A new bucket ``name``, emptied and removed afterwards."""
    from minio.deleteobjects import DeleteObject

    client.make_bucket(name)
    try:
        yield name
    finally:
        names = [o.object_name for o in client.list_objects(name, recursive=True) if o.object_name]
        for i in range(0, len(names), 1000):
            errors = list(client.remove_objects(name, [DeleteObject(n) for n in names[i : i + 1000]]))
            if errors:
                print(f"bench_week: could not empty bucket {name}: {errors[:3]}", file=sys.stderr)
        client.remove_bucket(name)


@contextmanager
def own_databases(admin_url: str, prefix: str) -> Iterator[Callable[[str], str]]:
    """``make(name) -> url``: new databases ``<prefix>_<name>``, dropped (WITH FORCE) afterwards."""
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make(name: str) -> str:
        db = f"{prefix}_{name}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        made.append(db)
        return make_url(admin_url).set(database=db).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        try:
            for db in reversed(made):
                synthetic.drop_database(admin, db)
        finally:
            admin.dispose()


# --------------------------------------------------------------------------------------------
# the week


def _sources(hospitals: list[synthetic.Hospital], cfg: WeekConfig) -> list[Source]:
    body = {"defaults": {"initial_value": "2024-01-01 00:00:00", "chunk_size": cfg.chunk_size},
            "hospitals": [{"id": f"week{i}", "org_code": h.org_code, "org_name": h.name, "conn_id": f"week{i}",
                           "dialect": "postgresql"} for i, h in enumerate(hospitals)]}  # fmt: skip
    parsed = parse_sources(json.dumps(body))
    return [parsed.get(f"week{i}") for i in range(len(hospitals))]


def generate_day(cfg: WeekConfig, hospitals: list[synthetic.Hospital], urls: list[str], day: date,
                 n: int) -> tuple[Stage, float]:  # fmt: skip
    """Every hospital's ``day`` into its source database, and from the second day late revisions and
    voids of earlier valid reports (23:10-23:40); what was written, and this process's peak RSS.
    Runs in the generator process (``run_week``), so its memory is not the pipeline's."""
    st = Stage()
    for i, (h, url) in enumerate(zip(hospitals, urls, strict=True)):
        m = synthetic.generate_hospital_day(
            url, org=h, day=day, lab_reports=cfg.lab_per_day, exam_reports=cfg.exam_per_day, seed=cfg.seed + i,
            lab_items=cfg.lab_items, pdf_kb=cfg.pdf_kb, defect_rate=cfg.defect_rate,
        )  # fmt: skip
        st.reports += m.rows["labmaster"] + m.rows["exammaster"]
        st.rows += sum(m.rows.values())
        st.pdf_bytes += m.pdf_bytes
        if n == 0:
            continue
        evening = datetime.combine(day, datetime.min.time()) + timedelta(hours=23, minutes=10)
        for kind, volume in (("lab", cfg.lab_per_day), ("exam", cfg.exam_per_day)):
            revised, voided = round(volume * cfg.revise_rate), round(volume * cfg.void_rate)
            if revised + voided:
                ch = synthetic.generate_changes(
                    url, org=h, since=evening, count_updated=revised, count_voided=voided, seed=cfg.seed + i,
                    report=kind, window_s=1800, lab_items=cfg.lab_items, pdf_kb=cfg.pdf_kb,
                )  # fmt: skip
                st.reports += len(ch.updated) + len(ch.voided)
    return st, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _window_rows(src: Engine, stream: str, since: str, until: str) -> tuple[int, int]:
    """(masters + sub-items, PDF bytes) the window [since, until) holds at the source."""
    master, item = KINDS[stream]
    args = {"s": since, "u": until}
    with src.connect() as conn:
        m, b64 = conn.execute(text(f"select count(*), coalesce(sum(octet_length(pdf)), 0) from {master} "
                                   "where last_update_dtime >= :s and last_update_dtime < :u"), args).one()  # fmt: skip
        i = conn.execute(text(f"select count(*) from {item} where last_update_dtime >= :s and last_update_dtime < :u"),
                         args).scalar_one()  # fmt: skip
    return int(m) + int(i), int(b64) * 3 // 4


def _pushed(engine: Engine, run_id: str) -> tuple[int, int]:
    """(masters + sub-items, PDF bytes) of the register calls acknowledged in the push run ``run_id``."""
    out_rows = out_pdf = 0
    with engine.connect() as conn:
        for master, item in KINDS.values():
            m, i = store.SPEC_TABLES[master], store.SPEC_TABLES[item]
            ob, log_ = store.outbox, store.push_log
            acked = (
                select(ob.c.org_code, ob.c.report_form_no)
                .join(log_, log_.c.outbox_id == ob.c.id)
                .where(
                    ob.c.entity == master,
                    ob.c.action == "register",
                    log_.c.outcome == "ok",
                    log_.c.run_id.like(f"{run_id}@%"),
                )  # fmt: skip
                .subquery()
            )
            on = (m.c.org_code == acked.c.org_code) & (m.c.report_form_no == acked.c.report_form_no)
            n, pdf = conn.execute(select(func.count(), func.coalesce(func.sum(m.c.pdf_size), 0)).select_from(
                acked.join(m, on))).one()  # fmt: skip
            items = conn.execute(select(func.count()).select_from(acked.join(m, on).join(
                i, (i.c.org_code == m.c.org_code) & (i.c.event_no == m.c.event_no)
                & (i.c.report_form_no == m.c.report_form_no)))).scalar_one()  # fmt: skip
            out_rows += int(n) + int(items)
            out_pdf += int(pdf)
    return out_rows, out_pdf


def _push_until_done(engine: Engine, s3: Any, bucket: str, sim: SimulatorProcess, cfg: WeekConfig,
                     run_id: str, result: WeekResult, org_codes: tuple[str, ...]) -> Stage:  # fmt: skip
    """Pusher runs with production options (for these hospitals) until a run sends nothing; what
    they acknowledged."""
    stage = Stage()
    config = sim.config()
    options = PushOptions(concurrency=cfg.concurrency, org_codes=org_codes)
    for n in range(1, 6):
        rid = f"{run_id}-{n}"
        session = TimedSession(cfg.concurrency)
        try:
            with config.client(pool_size=cfg.concurrency, session=session) as client:
                t = time.perf_counter()
                res = Pusher(engine=engine, client=client, objects=s3, bucket=bucket, options=options,
                             text_encoding=config.crypto_options.text_encoding, session=session,
                             run_id=rid, spec_options=DEFAULT_OPTIONS).run()  # fmt: skip
                stage.seconds += time.perf_counter() - t
        finally:
            session.close()
        tally = res.total()
        for (entity, _org), t_ in res.tallies.items():
            result.push.update({f"{entity} {k}": v for k, v in asdict(t_).items() if v})
            if entity in REPORTS:
                stage.reports += t_.acked
        rows, pdf = _pushed(engine, rid)
        stage.rows += rows
        stage.pdf_bytes += pdf
        if tally.sent == 0 or res.platform_down:
            break
    return stage


def _daily_counts(engine: Engine, sources: list[Source], day: date, cfg: WeekConfig, run_id: str) -> Stage:
    """The day's counts and the recount days' (compute_day queues changed rows in the push outbox)."""
    stage = Stage()
    t = time.perf_counter()
    days = [d for d in daily_counts.days_to_count(day, cfg.recount_days) if d >= cfg.start]
    for source in sources:
        for d in days:
            stage.rows += len(
                daily_counts.compute_day(
                    engine, org_code=source.org_code, day=d, run_id=run_id, options=DEFAULT_OPTIONS
                ).rows
            )
        stage.reports += len(days)  # here: hospital-days counted
    stage.seconds += time.perf_counter() - t
    return stage


def _reconcile(
    engine: Engine, sources: list[Source], day: date, cfg: WeekConfig, result: WeekResult
) -> float:
    t = time.perf_counter()
    for source in sources:
        for d in daily_counts.days_to_count(day, cfg.recount_days):
            if d >= cfg.start:
                result.counts.append(
                    daily_counts.reconcile_day(
                        engine, org_code=source.org_code, day=d, options=DEFAULT_OPTIONS
                    )
                )
    return time.perf_counter() - t


def run_week(
    cfg: WeekConfig,
    *,
    make_database: Callable[[str], str],
    s3: Any,
    bucket: str,
    sim: SimulatorProcess,
    say: Callable[[str], None] = print,
) -> WeekResult:
    """The week of ``cfg`` in new databases made with ``make_database(name) -> url``, PDFs in
    ``bucket`` (empty, this run's own) of the MinIO client ``s3``, against ``sim``; then the
    invariants. Nothing here is dropped: the caller owns the places. With ``cfg.workers`` > 1 the
    hospitals are dealt out to that many processes, each running its share's week (generate,
    pipeline, counts, push of its hospitals only) into the one store; the days' stage figures are
    then summed over the workers (worker-seconds) and the week's wall time is the end-to-end figure."""
    started = time.perf_counter()
    result = WeekResult(cfg, load_start=os.getloadavg())
    hospitals = synthetic.make_hospitals(cfg.hospitals, seed=cfg.seed)
    src_urls = [make_database(f"src{i}") for i in range(cfg.hospitals)]
    store_url = make_database("store")
    engine = create_engine(store_url)
    store.create_reconciliation(engine)  # the store schema, reconciliation tables and indexes
    say(f"bench_week: {cfg.hospitals} hospital(s) x {cfg.days} day(s) x {cfg.per_day:,} reports "
        f"({cfg.lab_per_day:,} lab with ~{cfg.lab_items} sub-items, {cfg.exam_per_day:,} exam), PDFs {cfg.pdf_kb:g} KB, "
        f"validator {cfg.validator}, push concurrency {cfg.concurrency}, {cfg.workers} worker process(es): "
        f"{cfg.reports:,} reports, {cfg.city_share:.1%} of the assumed large city's week; "
        f"load average {result.load_start[0]:.2f}")  # fmt: skip
    shares = [list(range(w, cfg.hospitals, cfg.workers)) for w in range(min(cfg.workers, cfg.hospitals))]
    try:
        if len(shares) == 1:
            parts = [week_part(cfg, shares[0], src_urls, store_url, bucket, sim, s3=s3, say=say)]
        else:
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(len(shares), mp_context=spawn) as pool:
                futures = [
                    pool.submit(week_part, cfg, share, src_urls, store_url, bucket, sim) for share in shares
                ]
                parts = [f.result() for f in futures]
        _merge(result, parts)
        say("checking the invariants ...")
        src_engines = [create_engine(u) for u in src_urls]
        try:
            result.failures = check_invariants(result, engine=engine, sources=_sources(hospitals, cfg),
                                               src_engines=src_engines, sim=sim)  # fmt: skip
        finally:
            for e in src_engines:
                e.dispose()
    finally:
        engine.dispose()
    result.elapsed_s = time.perf_counter() - started
    result.max_rss_mb = max(
        [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, *(p.max_rss_mb for p in parts)]
    )
    result.load_avg = os.getloadavg()
    return result


def _merge(result: WeekResult, parts: list[WeekResult]) -> None:
    """The workers' weeks as one: a day's stages summed, its wall time, peak RSS and load the
    largest of the workers'; runs, counts and push tallies together."""
    for n in range(max(len(p.days) for p in parts)):
        days = [p.days[n] for p in parts if len(p.days) > n]
        d = Day(days[0].day, wall_s=max(x.wall_s for x in days), load_avg=max(x.load_avg for x in days))
        for x in days:
            for name, st in x.stages.items():
                d.stages[name].add(st)
            for k, v in x.rss_mb.items():
                d.rss_mb[k] = max(d.rss_mb.get(k, 0.0), v)
            for k, v in x.rss_by_stage.items():
                d.rss_by_stage[k] = max(d.rss_by_stage.get(k, 0.0), v)
        result.days.append(d)
    for p in parts:
        result.runs += p.runs
        result.counts += p.counts
        result.push.update(p.push)
        result.hospital_days += p.hospital_days
        result.stopped = result.stopped or p.stopped


def week_part(cfg: WeekConfig, share: list[int], src_urls: list[str], store_url: str, bucket: str,
              sim: SimulatorProcess, *, s3: Any = None, say: Callable[[str], None] = print) -> WeekResult:  # fmt: skip
    """The week of the hospitals numbered ``share`` (in this process, or in a worker process of
    :func:`run_week`): day by day, generate, pipeline, counts, push."""
    if s3 is None:  # a worker process: its own client
        s3 = _minio_client()
    started = time.perf_counter()
    part = WeekResult(cfg)
    hospitals = [synthetic.make_hospitals(cfg.hospitals, seed=cfg.seed)[i] for i in share]
    sources = [_sources(synthetic.make_hospitals(cfg.hospitals, seed=cfg.seed), cfg)[i] for i in share]
    urls = [src_urls[i] for i in share]
    tag = f"bench-week-{os.getpid()}"  # the PostgreSQL backends of this process, for the CPU meter
    src_engines = [create_engine(u, connect_args={"application_name": tag}) for u in urls]
    engine = create_engine(store_url, pool_size=cfg.concurrency + 2, max_overflow=4,
                           connect_args={"application_name": tag})  # fmt: skip
    pdfs = load.Pdfs(client=s3, bucket=bucket)
    who = f"worker {share[0] % cfg.workers + 1}: " if cfg.workers > 1 else ""
    try:
        with (
            RssSampler({"self": "self", "simulator": sim.pid}) as rss,
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as generator,
        ):
            rss.take()
            meter = CpuMeter(engine, tag, sim.pid)
            for n in range(cfg.days):
                day = cfg.start + timedelta(days=n)
                elapsed = time.perf_counter() - started
                if cfg.max_minutes is not None and part.days:
                    need = max(d.wall_s for d in part.days) * 1.1
                    if elapsed + need > cfg.max_minutes * 60:
                        part.stopped = (f"--max-minutes {cfg.max_minutes:g}: stopped before day {n + 1} "
                                        f"({elapsed / 60:.1f} min spent, a day takes ~{need / 60:.1f} min)")  # fmt: skip
                        say(who + part.stopped)
                        break
                part.days.append(_one_day(day, n, cfg, hospitals, sources, urls, src_engines, engine, pdfs,
                                          s3, bucket, sim, rss, generator, part, meter))  # fmt: skip
                part.hospital_days += len(share)
                d = part.days[-1]
                say(f"{who}day {n + 1} {day}: {d.wall_s:6.1f} s  " + "  ".join(
                    f"{k} {v.seconds:.1f} s" for k, v in d.stages.items()) +
                    f"  peak RSS {d.rss_mb['self']:.0f} MB (simulator {d.rss_mb['simulator']:.0f} MB)  "
                    f"load {d.load_avg:.2f}")  # fmt: skip
    finally:
        for e in src_engines:
            e.dispose()
        engine.dispose()
    part.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return part


def _one_day(day: date, n: int, cfg: WeekConfig, hospitals: list[synthetic.Hospital], sources: list[Source],
             src_urls: list[str], src_engines: list[Engine], engine: Engine, pdfs: load.Pdfs, s3: Any, bucket: str,
             sim: SimulatorProcess, rss: RssSampler, generator: Executor, result: WeekResult,
             meter: CpuMeter) -> Day:  # fmt: skip
    d = Day(day)
    t_day = time.perf_counter()
    peaks: list[dict[str, float]] = []
    run_id = f"week-{day}" + (f"-{os.getpid()}" if cfg.workers > 1 else "")  # a worker's push runs its own

    # 1. the hospitals' day, written by another process (the hospitals are not our pipeline)
    t = time.perf_counter()
    st, d.rss_mb["generator"] = generator.submit(generate_day, cfg, hospitals, src_urls, day, n).result()
    st.seconds = time.perf_counter() - t
    d.stages["generate"] = st
    d.rss_by_stage["generate"] = (p := rss.take())["self"]
    peaks.append(p)

    # 2. extract, validate, load: one incremental window per hospital and stream, up to midnight
    until = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=BEIJING)
    for stream in KINDS:
        st = d.stages[f"pipeline {stream}"]
        cpu = meter.snap()
        for source, src in zip(sources, src_engines, strict=True):
            t = time.perf_counter()
            summary = pipeline.run_stream(
                source=source, stream=stream, source_engine=src, store_engine=engine, pdfs=pdfs, run_id=run_id,
                dag_id=f"{stream}_reports__{source.id}", until=until, validator=cfg.validator, options=DEFAULT_OPTIONS,
                **_rulebook_kwargs(),
            )  # fmt: skip
            st.seconds += time.perf_counter() - t
            st.reports += summary.counts.extracted
            rows, pdf = _window_rows(src, stream, summary.since, summary.until)
            st.rows += rows
            st.pdf_bytes += pdf
            result.runs.append(summary.as_dict())
        meter.charge(st, cpu)
        d.rss_by_stage[f"pipeline {stream}"] = (p := rss.take())["self"]
        peaks.append(p)

    # 3. daily counts of the day (and the recount days), 4. the push, then the counts' reconciliation
    cpu = meter.snap()
    d.stages["daily counts"] = _daily_counts(engine, sources, day, cfg, run_id)
    meter.charge(d.stages["daily counts"], cpu)
    d.rss_by_stage["daily counts"] = (p := rss.take())["self"]
    peaks.append(p)
    cpu = meter.snap()
    d.stages["push"] = _push_until_done(engine, s3, bucket, sim, cfg, run_id, result,
                                       tuple(s.org_code for s in sources))  # fmt: skip
    meter.charge(d.stages["push"], cpu)
    d.rss_by_stage["push"] = (p := rss.take())["self"]
    peaks.append(p)
    cpu = meter.snap()
    d.stages["daily counts"].seconds += _reconcile(engine, sources, day, cfg, result)
    meter.charge(d.stages["daily counts"], cpu)
    peaks.append(rss.take())

    d.wall_s = time.perf_counter() - t_day
    d.rss_mb.update({k: max(p[k] for p in peaks) for k in peaks[0]})
    d.load_avg = os.getloadavg()[0]
    return d


# --------------------------------------------------------------------------------------------
# the invariants


def check_invariants(result: WeekResult, *, engine: Engine, sources: list[Source], src_engines: list[Engine],
                     sim: SimulatorProcess) -> list[str]:  # fmt: skip
    """What must hold after the week; each failure as a readable line (none: all held)."""
    cfg, bad = result.config, []
    totals: Counter[str] = Counter()

    # every run: extracted = loaded + unchanged + stale + quarantined; every run succeeded
    for r in result.runs:
        for k in ("extracted", "loaded", "unchanged", "stale", "quarantined"):
            totals[k] += r[k]
        if r["extracted"] != r["loaded"] + r["unchanged"] + r["stale"] + r["quarantined"]:
            bad.append(f"run {r['source']}/{r['stream']} {r['window']}: extracted {r['extracted']} != loaded "
                       f"{r['loaded']} + unchanged {r['unchanged']} + stale {r['stale']} + quarantined "
                       f"{r['quarantined']}")  # fmt: skip
    with engine.connect() as conn:
        runs = conn.execute(select(store.run.c.status, func.count()).where(store.run.c.stream.in_(list(KINDS)))
                            .group_by(store.run.c.status)).all()  # fmt: skip
    if dict(runs) != {"success": len(result.runs)}:
        bad.append(f"etl_run rows by status {dict(runs)}, expected {len(result.runs)} success")
    expected_runs = result.hospital_days * len(KINDS)
    if len(result.runs) != expected_runs:
        bad.append(f"{len(result.runs)} pipeline runs, expected {expected_runs}")
    if result.days and totals["loaded"] == 0:
        bad.append("nothing was loaded")

    # the store against the outbox and the simulator's own database
    void = {str(v) for v in spec.SpecOptions().void_data_status}
    db = sqlite3.connect(f"file:{sim.db}?mode=ro", uri=True)
    try:
        for kind, (master, _item) in KINDS.items():
            t = store.SPEC_TABLES[master]
            ent = spec.entity(master)
            ob = store.outbox
            with engine.connect() as conn:
                rows = conn.execute(
                    select(*(t.c[k] for k in ent.key), t.c.data_status, t.c.etl_content_hash, t.c.pdf_sha256)
                ).all()
                acked = {(k, h) for k, h in conn.execute(select(ob.c.record_key, ob.c.content_hash).where(
                    ob.c.entity == master, ob.c.status == "acked"))}  # fmt: skip
            on_platform = {k: (sha, voided) for k, sha, voided in db.execute(
                "select key, pdf_sha256, voided_at from report where kind = ?", (kind,))}  # fmt: skip
            valid = void_n = 0
            missing, not_acked, wrong_pdf, alive = [], [], [], []
            for r in rows:
                key = store.record_key(ent, r._mapping)
                if str(r.data_status) in void:
                    void_n += 1
                    if key in on_platform and on_platform[key][1] is None:
                        alive.append(key)
                    continue
                valid += 1
                if (key, r.etl_content_hash) not in acked:
                    not_acked.append(key)
                got = on_platform.get(key)
                if got is None or got[1] is not None:
                    missing.append(key)
                elif got[0] != r.pdf_sha256:
                    wrong_pdf.append(key)
            extra = sum(1 for v in on_platform.values() if v[1] is None) - (valid - len(missing))
            totals[f"{kind} valid in store"], totals[f"{kind} void in store"] = valid, void_n
            totals[f"{kind} on platform"] = sum(1 for v in on_platform.values() if v[1] is None)
            totals[f"{kind} voided on platform"] = sum(1 for v in on_platform.values() if v[1] is not None)
            for what, keys in (("valid in the store but not acknowledged in that version", not_acked),
                               ("valid in the store but not held (or void) on the platform", missing),
                               ("held on the platform with another PDF", wrong_pdf),
                               ("void in the store but alive on the platform", alive)):  # fmt: skip
                if keys:
                    bad.append(f"{kind}: {len(keys)} report(s) {what}, e.g. {keys[:3]}")
            if extra:
                bad.append(
                    f"{kind}: the platform holds {extra} live report(s) the store does not hold as valid"
                )
        with engine.connect() as conn:
            stuck = conn.execute(select(store.outbox.c.entity, store.outbox.c.status, func.count()).where(
                store.outbox.c.status.in_(("queued", "sending", "rejected", "dead"))).group_by(
                store.outbox.c.entity, store.outbox.c.status)).all()  # fmt: skip
            by_status = dict(
                conn.execute(
                    select(store.outbox.c.status, func.count()).group_by(store.outbox.c.status)
                ).all()
            )
            counts_rows = conn.execute(
                select(func.count()).select_from(store.SPEC_TABLES["lab_exam_report"])
            ).scalar_one()
        totals["outbox"] = dict(by_status)
        if stuck:
            bad.append(f"outbox entries left behind: {[tuple(s) for s in stuck]}")

        # daily counts: every hospital-day counted, sent and acknowledged as the reports were
        sent_counts = db.execute("select count(*) from record where entity = 'lab_exam_report'").fetchone()[0]
    finally:
        db.close()
    totals["daily count rows"], totals["daily count rows on platform"] = counts_rows, sent_counts
    if result.days and not counts_rows:
        bad.append("no daily counts were computed")
    if sent_counts != counts_rows:
        bad.append(f"the store has {counts_rows} daily count rows, the platform {sent_counts}")
    for c in result.counts:
        if c["issues"] or c["lab_acked"] != c["lab_counted"] or c["exam_acked"] != c["exam_counted"]:
            bad.append(f"daily counts {c['org_code']} {c['day']}: counted lab {c['lab_counted']} exam "
                       f"{c['exam_counted']}, acknowledged lab {c['lab_acked']} exam {c['exam_acked']}, "
                       f"issues {c['issues']}, push {c['push_status']}")  # fmt: skip

    # memory: bounded by the chunk, not by the days
    if len(result.days) >= 2:
        first, last = result.days[0].rss_mb["self"], result.days[-1].rss_mb["self"]
        allowed = first + max(first * cfg.rss_tolerance, cfg.rss_slack_mb)
        totals["rss first/last day MB"] = [round(first), round(last)]
        if last > allowed:
            bad.append(f"peak RSS grew with the days: day 1 {first:.0f} MB, day {len(result.days)} {last:.0f} MB "
                       f"(allowed {allowed:.0f} MB)")  # fmt: skip
    result.totals = dict(totals)
    return bad


# --------------------------------------------------------------------------------------------
# the command


def report(result: WeekResult) -> str:
    """The figures as text (the tables of bench/README.md)."""
    cfg = result.config
    lines = [
        f"\nbench_week: Python {platform.python_version()}, {os.cpu_count()} CPUs; {cfg.hospitals} hospitals x "
        f"{len(result.days)} of {cfg.days} days x {cfg.per_day:,} reports, PDFs {cfg.pdf_kb:g} KB; "
        f"{cfg.city_share:.1%} of the assumed city week (30 x 3,000 x 7)",  # fmt: skip
        f"\n{'stage':<14}{'seconds':>9}{'reports':>10}{'reports/s':>11}{'rows':>11}{'rows/s':>10}{'PDF MB':>9}{'MB/s':>7}",
    ]
    for name, st in result.stage_totals().items():
        r = st.rates()
        unit = " (hospital-days)" if name == "daily counts" else ""
        lines.append(f"{name:<14}{st.seconds:>9.1f}{st.reports:>10,}{r['reports_s']:>11.1f}{st.rows:>11,}"
                     f"{r['rows_s']:>10,.0f}{st.pdf_bytes / MB:>9,.0f}{r['pdf_mb_s']:>7.1f}{unit}")  # fmt: skip
    reports = sum(result.stage_totals()[f"pipeline {k}"].reports for k in KINDS)
    lines.append(f"{'end to end':<14}{result.elapsed_s:>9.1f}{reports:>10,}{reports / result.elapsed_s:>11.1f}"
                 f"   (reports extracted / the week's wall time, generation and checks included; "
                 f"{cfg.workers} worker process(es); stage seconds are summed over the workers)")  # fmt: skip
    lines.append(f"\nCPU ms per report{'':<4}{'ours':>8}{'simulator':>10}{'postgres':>9}{'s3 (<=)':>9}{'total':>8}"
                 + ("  (simulator and S3: each worker counts all workers' overlapping use; take them from "
                    "--workers 1)" if cfg.workers > 1 else ""))  # fmt: skip
    for name, st in result.stage_totals().items():
        if name in ("generate", "daily counts"):
            continue
        c = st.cpu_per_report()
        lines.append(f"{name:<21}{c['self']:>8.1f}{c['simulator']:>10.1f}{c['postgres']:>9.1f}{c['s3']:>9.1f}"
                     f"{sum(c.values()):>8.1f}")  # fmt: skip
    lines.append(f"\n{'day':<12}{'wall s':>8}" + "".join(f"{s:>15}" for s in STAGES)
                 + f"{'peak RSS MB':>13}{'simulator MB':>14}{'generator MB':>14}{'load':>6}")  # fmt: skip
    for d in result.days:
        lines.append(f"{d.day.isoformat():<12}{d.wall_s:>8.1f}" + "".join(f"{d.stages[s].seconds:>15.1f}" for s in STAGES)
                     + f"{d.rss_mb['self']:>13.0f}{d.rss_mb['simulator']:>14.0f}{d.rss_mb['generator']:>14.0f}"
                     f"{d.load_avg:>6.2f}")  # fmt: skip
    if result.days:
        lines.append("peak RSS per stage, day 1 -> last: " + ", ".join(
            f"{k} {result.days[0].rss_by_stage[k]:.0f} -> {result.days[-1].rss_by_stage[k]:.0f}"
            for k in result.days[0].rss_by_stage))  # fmt: skip
    lines.append(f"\npush tallies: {dict(result.push)}")
    lines.append(f"totals: {json.dumps(result.totals, ensure_ascii=False)}")
    lines.append(f"max RSS of this process (getrusage): {result.max_rss_mb:.0f} MB; load average (1, 5, 15 min) "
                 f"at the start {' '.join(f'{x:.2f}' for x in result.load_start)}, "
                 f"at the end {' '.join(f'{x:.2f}' for x in result.load_avg)}")  # fmt: skip
    if result.stopped:
        lines.append(f"STOPPED EARLY: {result.stopped}")
    lines.append(
        "invariants: " + ("all held" if not result.failures else "FAILED\n  " + "\n  ".join(result.failures))
    )
    lines.append(f"(the week took {result.elapsed_s / 60:.1f} min)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hurren.settings import settings

    d = WeekConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hospitals", type=int, default=d.hospitals)
    p.add_argument("--per-day", type=int, default=d.per_day, help="reports per hospital and day (80 %% lab)")
    p.add_argument("--days", type=int, default=d.days)
    p.add_argument("--scale", type=float, default=None,
                   help="instead of --hospitals/--per-day: this share of the assumed city's week, as its 30 "
                        "hospitals with 3,000 x SCALE reports a day each")  # fmt: skip
    p.add_argument("--pdf-kb", type=float, default=d.pdf_kb)
    p.add_argument("--lab-items", type=int, default=d.lab_items)
    p.add_argument(
        "--chunk", type=int, default=d.chunk_size, help="reports per batch (sources.json chunk_size)"
    )
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="push calls in flight")
    p.add_argument("--workers", type=int, default=d.workers, help="processes running hospitals in parallel")
    p.add_argument("--check-rate", type=float, default=0.01,
                   help="the simulator's share of reports checked field by field (1: all; 0.01: fast-ack)")  # fmt: skip
    p.add_argument("--baseline", metavar="REF", help="run the same week with REF's code first (a git worktree) "
                   "and show both side by side, e.g. --baseline db74841")  # fmt: skip
    p.add_argument("--validator", choices=("gx", "pandas"), default=d.validator)
    p.add_argument("--defect-rate", type=float, default=d.defect_rate)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--max-minutes", type=float, default=40.0, help="stop before a day that would end after this"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if a.baseline:
        return compare(a.baseline, [x for x in (argv if argv is not None else sys.argv[1:])])
    hospitals, per_day = a.hospitals, a.per_day
    if a.scale is not None:
        hospitals, per_day = CITY_HOSPITALS, max(1, round(CITY_PER_DAY * a.scale))
    cfg = WeekConfig(hospitals=hospitals, per_day=per_day, days=a.days, pdf_kb=a.pdf_kb, lab_items=a.lab_items,
                     chunk_size=a.chunk, concurrency=a.concurrency, validator=a.validator, defect_rate=a.defect_rate,
                     seed=a.seed, max_minutes=a.max_minutes, workers=a.workers)  # fmt: skip
    s = settings()
    tag = secrets.token_hex(3)
    client = _minio_client(s)
    with (
        tempfile.TemporaryDirectory(prefix="bench_week_") as tmp,
        simulator_process(Path(tmp), a.check_rate) as sim,
        own_bucket(client, f"hurren-week-{tag}") as bucket,
        own_databases(s.database_url("postgres"), f"hurren_week_{tag}") as make,
    ):
        result = run_week(cfg, make_database=make, s3=client, bucket=bucket, sim=sim)
        print(report(result), flush=True)  # before the clean-up, whatever it meets
        if a.json:
            a.json.write_text(
                json.dumps(result.as_dict(), ensure_ascii=False, indent=1, default=str), encoding="utf-8"
            )
        print("removing the databases, the bucket and the simulator ...", flush=True)
    return 1 if result.failures else 0


def compare(ref: str, argv: list[str]) -> int:
    """``--baseline REF``: the same week with REF's code, then with this tree's, one after the other
    in this run (each in its own process, places and simulator; the simulator is this tree's in
    both, so fast-ack applies to both), and their figures side by side."""
    args = [a for i, a in enumerate(argv) if a != "--baseline" and (i == 0 or argv[i - 1] != "--baseline")]
    args = [a for a in args if not a.startswith("--baseline=") and not a.startswith("--json")]
    figures, failed = {}, 0
    with checkout(ref) as tree, tempfile.TemporaryDirectory() as tmp:
        for name, code in (("old", tree), ("new", HERE)):
            out = Path(tmp) / f"{name}.json"
            print(f"\n=== {name}: {describe(ref) if name == 'old' else 'this tree'} ===", flush=True)
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args, "--json", str(out)],
                                  env=code_env(code), check=False)  # fmt: skip
            failed |= done.returncode
            figures[name] = json.loads(out.read_text(encoding="utf-8")) if out.exists() else None
    old, new = figures["old"], figures["new"]
    if not old or not new:
        print("a run failed; no comparison")
        return 1
    print(f"\nold = {describe(ref)}, new = this tree ({describe('HEAD')} + working tree); same week, same machine, "
          "one after the other\n")  # fmt: skip
    print(f"{'stage':<14}{'old s':>9}{'new s':>9}{'old rep/s':>11}{'new rep/s':>11}{'new/old':>9}")
    for stage in STAGES:
        o, n = old["stage_totals"][stage], new["stage_totals"][stage]
        ratio = n["reports_s"] / o["reports_s"] if o["reports_s"] else float("nan")
        print(f"{stage:<14}{o['seconds']:>9.1f}{n['seconds']:>9.1f}{o['reports_s']:>11.1f}{n['reports_s']:>11.1f}"
              f"{ratio:>9.2f}")  # fmt: skip
    reps = [
        sum(f["stage_totals"][f"pipeline {k}"]["reports"] for k in KINDS) / f["elapsed_s"] for f in (old, new)
    ]
    print(f"{'end to end':<14}{old['elapsed_s']:>9.1f}{new['elapsed_s']:>9.1f}{reps[0]:>11.1f}{reps[1]:>11.1f}"
          f"{reps[1] / reps[0]:>9.2f}")  # fmt: skip
    print("invariants: old " + ("held" if not old["failures"] else "FAILED") + ", new "
          + ("held" if not new["failures"] else "FAILED"))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
