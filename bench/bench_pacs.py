"""PACS views through the pipeline: rows per second and peak memory at a large hospital's day.

Run from the repository root, with the local PostgreSQL up (``scripts/services up pg``)::

    .venv/bin/python bench/bench_pacs.py                          # 2,000,000 instance rows
    .venv/bin/python bench/bench_pacs.py --rows 200000,2000000 --baseline main   # old and new, in turn
    .venv/bin/python bench/bench_pacs.py --validator gx --chunk-size 50000

What it does: a fresh source database gets one day of ``v_web_jcjg`` (``--rows`` instance rows,
``--per-study`` instances per study, written by PostgreSQL's ``generate_series``, so setting up is
not what is timed) and the matching ``v_web_jctj`` rows; a fresh store database gets the schema.
Then, each in a fresh interpreter (so ``ru_maxrss`` is that step's own peak): the ``pacs_instance``
stream (extract in chunks → validate → COPY + upsert), the ``pacs_study`` stream, and the
reconciliation of the day — exactly what the ``pacs__<id>`` DAG's tasks call
(``hurren.pipeline.run_stream``, ``hurren.pacs.reconcile``). A second instance run over the whole
day again (a backfill: every row read, validated and found unchanged) is timed too. Peak memory is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that interpreter; "baseline" is the same after
importing the libraries and before the run, so the difference is what the rows cost. Databases
are dropped afterwards unless ``--keep``.

``--baseline REF`` runs every step with the code of commit ``REF`` too (a temporary ``git
worktree``, ``bench/benchlib.py``), against the same source and a store of its own, old and new
taking turns step by step, so both meet the same machine. ``--validator`` (default ``pandas``, the
sources' default) is the engine that decides each batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("HURREN_BENCH_CODE") or HERE)  # the code measured: this tree's, or --baseline's
if str(ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugins"))
if str(HERE / "bench") not in sys.path:
    sys.path.append(str(HERE / "bench"))
if str(ROOT / "testkit") not in sys.path:
    sys.path.insert(1, str(ROOT / "testkit"))

DAY = date(2024, 3, 11)
ORG = "457759922"


def _sources_json(chunk_size: int) -> str:
    return json.dumps(
        {
            "hospitals": [
                {
                    "id": "bench",
                    "org_code": ORG,
                    "org_name": "基准医院",
                    "conn_id": "hurren_src_bench",
                    "dialect": "postgresql",
                    "chunk_size": chunk_size,
                    "initial_value": "2024-01-01 00:00:00",
                    "streams": ["pacs_instance", "pacs_study"],
                }
            ]
        }
    )


# ---------------------------------------------------------------------------------------------
# set-up: one day of PACS rows, made by the database itself

_INSTANCES_SQL = """
INSERT INTO v_web_jcjg ("FILEPATH", "CREATEDTIME", "STUDIUIID", "STUDYDATE", "SERIESIUID", "SERIESNO",
    "INSTANCESOPIUID", "INSTANCEINSTNO", "PATIENTNAME", "PATIENTAGE", "PATIENTSEX", "ACCESS_NO",
    "PATIENT_ID", "MODALITY", "INSTITUTIONNAME", "INSTITUTIONCODE", "FILESIZE")
SELECT '/pacs/{org}/2024/03/11/' || st || '/' || se || '/' || g || '.dcm',
       TIMESTAMP '{day} 00:00:00' + make_interval(secs => floor(g::float8 * 86000 / {rows})),
       '1.2.156.112605.14038.20240311.' || st,
       to_char(TIMESTAMP '{day} 00:00:00' + make_interval(secs => floor(st::float8 * {per} * 86000 / {rows})),
               'YYYY-MM-DD HH24:MI:SS'),
       '1.2.156.112605.14038.20240311.' || st || '.' || se,
       se::text,
       '1.2.156.112605.14038.20240311.' || st || '.' || se || '.' || g,
       (g % {per} + 1)::text,
       '患者' || (st % 9973),
       lpad(((st % 90) + 1)::text, 3, '0') || 'Y',
       CASE WHEN st % 2 = 0 THEN '1' ELSE '2' END,
       'CT240311' || lpad(st::text, 6, '0'),
       'P' || lpad((st % 500000)::text, 8, '0'),
       'CT',
       '基准医院',
       '{org}',
       (520000 + g % 9000)::text
FROM (SELECT g, g / {per} AS st, (g % {per}) / 50 + 1 AS se FROM generate_series(0, {rows} - 1) AS g) AS x
"""

_STUDIES_SQL = """
INSERT INTO v_web_jctj ("PATIENT_ID", "PATIENTNAME", "MODALITY", "ACCESS_NO", "STUDIUIID", "STUDYTIME",
    "MODIFYTIME", "INSTITUTIONNAME", "INSTITUTIONCODE", "FILESIZE", "INSTANCECOUNT")
SELECT min("PATIENT_ID"), min("PATIENTNAME"), 'CT', min("ACCESS_NO"), "STUDIUIID", min("STUDYDATE"),
       max("CREATEDTIME"), '基准医院', '{org}', sum("FILESIZE"::bigint)::text, count(*)::text
FROM v_web_jcjg GROUP BY "STUDIUIID"
"""


def _make_source(url: str, rows: int, per_study: int) -> float:
    from sqlalchemy import create_engine, text

    from hurren_testkit import synthetic

    t0 = time.perf_counter()
    engine = create_engine(url)
    with engine.begin() as conn:
        synthetic.create_source_schema(conn)
        args = {"org": ORG, "day": DAY.isoformat(), "rows": rows, "per": per_study}
        conn.execute(text(_INSTANCES_SQL.format(**args)))
        conn.execute(text(_STUDIES_SQL.format(**args)))
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# one measured step, in a child interpreter


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    """CPU seconds of this process so far (user + system): what the step cost it, however busy
    the machine (wall time also holds the wait for PostgreSQL, and for the other processes)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _backends_cpu_s(engine: Any) -> dict[str, float]:
    """CPU seconds of this interpreter's PostgreSQL backends so far, by tag (its pooled
    connections stay open until it exits, so they hold the step's whole share)."""
    from benchlib import cpu_seconds
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT application_name, pid FROM pg_stat_activity WHERE application_name LIKE 'bench_pacs_%'"
            )
        ).all()
    out = {"pg_store_cpu_s": 0.0, "pg_hospital_cpu_s": 0.0}
    for tag, pid in rows:
        out[f"pg_{tag.removeprefix('bench_pacs_')}_cpu_s"] += cpu_seconds(pid)
    return out


def _child(args: argparse.Namespace) -> None:
    import pandas  # noqa: F401 - the libraries the step uses, loaded before the baseline
    from sqlalchemy import create_engine

    from hurren import pacs, pipeline, rules, spec, store, validation  # noqa: F401
    from hurren.sources import parse_sources

    if args.validator == "gx":
        validation.gx_context()  # the GX context is built once per process: part of the baseline
    source = parse_sources(_sources_json(min(args.chunk_size, 100_000))).get("bench")
    source = dataclasses.replace(source, chunk_size=args.chunk_size)
    # tagged, so that their backends' CPU is found (a hospital's database is elsewhere in production)
    src, dst = (
        create_engine(url, connect_args={"application_name": tag})
        for url, tag in ((args.source_url, "bench_pacs_hospital"), (args.store_url, "bench_pacs_store"))
    )
    store.create_reconciliation(dst)
    # a tree with hurren.site passes the site's decisions explicitly; an older one defaulted them
    site = (
        {"options": spec.DEFAULT_OPTIONS, "rulebook": rules.load_rulebook()}
        if hasattr(spec, "DEFAULT_OPTIONS")
        else {}
    )
    baseline = _maxrss_mb()
    t0, cpu0 = time.perf_counter(), _cpu_s()
    if args.step == "reconcile":
        s = pacs.reconcile(dst, org_code=ORG, first_day=DAY, last_day=DAY, run_id=args.run_id)
        out = {"rows": s.instances, "studies": s.studies, "ok": s.ok, "by_issue": dict(s.by_issue)}
    else:
        summary = pipeline.run_stream(
            source=source,
            stream=args.step,
            source_engine=src,
            store_engine=dst,
            pdfs=None,
            run_id=args.run_id,
            dag_id="bench_pacs",
            until=datetime.combine(DAY + timedelta(days=1), datetime.min.time()),
            validator=args.validator,
            # the second run reads the whole day again (a backfill), everything already stored
            backfill_since=datetime.combine(DAY, datetime.min.time()) if args.run_id == "rerun" else None,
            **site,
        )
        c = summary.counts
        out = {
            "rows": c.extracted,
            "loaded": c.loaded,
            "unchanged": c.unchanged,
            "quarantined": c.quarantined,
            "batches": summary.batches,
        }
    out.update(
        seconds=time.perf_counter() - t0, cpu_s=_cpu_s() - cpu0, baseline_mb=baseline, peak_mb=_maxrss_mb()
    )
    out.update(_backends_cpu_s(dst))
    print(json.dumps(out))


def _step(
    step: str,
    args: argparse.Namespace,
    source_url: str,
    store_url: str,
    run_id: str,
    code: Path | None = None,
) -> dict:
    """One step in a fresh interpreter; ``code``: the tree whose hurren it runs (default this one)."""
    from benchlib import code_env

    cmd = [
        sys.executable, __file__, "--child", "--step", step, "--source-url", source_url, "--store-url", store_url,
        "--chunk-size", str(args.chunk_size), "--validator", args.validator, "--run-id", run_id,
    ]  # fmt: skip
    env = code_env(code) if code is not None else None
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=HERE, env=env)  # noqa: S603
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


STEPS = (
    ("pacs_instance", "first", "pacs_instance"),
    ("pacs_study", "first", "pacs_study"),
    ("reconcile", "first", "reconcile"),
    ("pacs_instance", "rerun", "pacs_instance, the day again (unchanged)"),
)


def _measure(args: argparse.Namespace, admin: Any, rows: int, trees: dict[str, Path | None]) -> None:
    """One day of ``rows`` instance rows: one source, a store per tree, each step run by every
    tree in turn (old, new, old, new, ... with ``--repeat``), each in a fresh interpreter."""
    from sqlalchemy import text

    from hurren.settings import settings
    from hurren_testkit.synthetic import drop_database

    token = secrets.token_hex(3)
    src_name = f"hurren_bench_pacs_src_{token}"
    stores = {
        (name, i): f"hurren_bench_pacs_store_{name}{i}_{token}" for i in range(args.repeat) for name in trees
    }
    names = [src_name, *stores.values()]
    with admin.connect() as conn:
        for n in names:
            conn.execute(text(f'CREATE DATABASE "{n}"'))
    src_url = settings().database_url(src_name)
    try:
        setup = _make_source(src_url, rows, args.per_study)
        print(f"<!-- {rows} rows set up in {setup:.1f} s -->")
        for step, run_id, label in STEPS:
            for i in range(args.repeat):
                for name, code in trees.items():
                    r = _step(step, args, src_url, settings().database_url(stores[name, i]), run_id, code)
                    print(
                        f"| {rows:,} | {label} | {name} | {r['rows']:,} | {r['seconds']:.1f} | "
                        f"{r['rows'] / r['seconds']:,.0f} | {r.get('cpu_s', float('nan')):.1f} | "
                        f"{r['pg_store_cpu_s']:.1f} | {r['pg_hospital_cpu_s']:.1f} | "
                        f"{r['peak_mb']:.0f} | {r['baseline_mb']:.0f} | {r['peak_mb'] - r['baseline_mb']:.0f} |",
                        flush=True,
                    )
                    shown = {"rows", "seconds", "cpu_s", "pg_store_cpu_s", "pg_hospital_cpu_s", "peak_mb", "baseline_mb"}  # fmt: skip
                    extra = {k: v for k, v in r.items() if k not in shown}
                    print(f"<!-- {label}, {name}: {extra} -->", flush=True)
    finally:
        if args.keep:
            print(f"kept: {names}")
        else:
            for n in names:
                drop_database(admin, n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--rows", default="2000000", help="instance rows of the day; a comma-separated list runs each"
    )
    p.add_argument("--per-study", type=int, default=100, help="instances per study")
    p.add_argument(
        "--chunk-size", type=int, default=50_000, help="rows per batch (the pacs DAG's chunk_size)"
    )
    p.add_argument("--validator", choices=("gx", "pandas"), default="pandas", help="the engine that decides")
    p.add_argument("--baseline", metavar="REF", help="also run the commit REF (a git worktree), interleaved")
    p.add_argument("--repeat", type=int, default=1, help="runs of each step per tree (a fresh store each)")
    p.add_argument("--keep", action="store_true", help="keep the databases")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--source-url", help=argparse.SUPPRESS)
    p.add_argument("--store-url", help=argparse.SUPPRESS)
    p.add_argument("--run-id", default="bench", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return 0

    from benchlib import checkout, describe
    from sqlalchemy import create_engine

    from hurren.settings import settings

    admin = create_engine(settings().database_url("postgres"), isolation_level="AUTOCOMMIT")
    print(
        f"python {platform.python_version()}; chunk_size {args.chunk_size}, validator {args.validator}, "
        f"{args.per_study} instances per study"
        + (f"; old = {describe(args.baseline)}, new = this tree" if args.baseline else "")
    )
    print(
        "| instance rows | step | tree | rows | seconds | rows/s | CPU s (ours) | PostgreSQL CPU s: store | "
        "the hospital's | peak RSS MB | baseline MB | rows cost MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    with ExitStack() as stack:
        trees: dict[str, Path | None] = {"new": None}
        if args.baseline:
            trees = {"old": stack.enter_context(checkout(args.baseline)), "new": None}
        try:
            for rows in (int(r) for r in args.rows.split(",")):
                _measure(args, admin, rows, trees)
        finally:
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
