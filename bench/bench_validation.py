"""Benchmark: the validation engines at the pipeline's chunk sizes, this tree against a baseline.

Builds batches of lab reports (labmaster rows with 20 lab_subitem rows each) from the spec's
example report, breaks about 1 % of the rows (unknown codes, impossible dates, broken PDFs, wrong
ID check digits, non-numeric PQ results, XML control characters, oversize text, orphans), and
times, per chunk size (default 500 and 2,000 reports: ~10.5k and ~42k rows):

- the deciding engine (pandas) with the PDF outcome precomputed (``__pdf__pdf``, as the
  extraction passes it on) and with the Base64 PDF text (as a baseline tree can only read it);
- GX per chunk (the old default: every chunk pays GX's fixed cost);
- GX over a hospital-day-sized batch (``--day-masters``, default 5,000 reports ≈ 105k rows) and
  on a 1-report batch: GX's fixed part and its seconds per 100k rows — the cost of validating a
  hospital-day with GX once, whatever its chunking;
- a day of ``--day-chunks`` chunks (default 10) for a hospital whose analysts get GX results, side
  by side: GX per chunk (the old way: GX decides each chunk) against the pipeline's way now, the
  pandas engine deciding each chunk with the chunk staged to disk, then GX once over the day
  (``hurren.validation.GxDay``, at most ``--gx-max-rows`` rows per GX call), which must agree.

Each tree runs in a worker process of its own (this one, and with ``--baseline REF`` the commit
REF checked out in a temporary git worktree); the trees take turns run by run, so both see the
same machine load, and the figures are medians of ``--repeat`` runs. pandas and GX must agree exactly (checked in
this tree on every chunk size).

Run:  .venv/bin/python bench/bench_validation.py [--baseline db74841] [--chunks 500,2000] [--day-chunks 10]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # a worker imports the tree it measures (--plugins)
    _plugins = sys.argv[sys.argv.index("--plugins") + 1] if "--plugins" in sys.argv else str(ROOT / "plugins")
    sys.path[:0] = [_plugins]

from hurren import rules, spec  # noqa: E402
from hurren.validation import validate_reports  # noqa: E402

STR = "str"
PDF = (
    b"%PDF-1.4\n"
    + b"%\xe2\xe3\xcf\xd3\n"
    + b"1 0 obj << /Type /Catalog >> endobj\n" * 50
    + b"trailer << >>\n%%EOF\n"
)


def _fill(entity: str) -> dict[str, str]:
    """A valid value for every field, from the spec's types and dictionaries."""
    ent = spec.entity(entity)
    out = {}
    for f in ent.fields:
        dic = rules.dictionary_of(ent, f, spec.SpecOptions())
        if f.type == "datetime":
            out[f.name] = "2024-03-11 09:29:00"
        elif f.type == "date":
            out[f.name] = "2024-03-11"
        elif dic is not None and dic.kind == "closed":
            out[f.name] = sorted(dic.codes)[0]
        elif f.type == "number":
            out[f.name] = "1"
        else:
            out[f.name] = "检验" if f.length and f.length >= 128 else "x"
    return out


def build(masters: int, per_master: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    base = _fill("labmaster") | {
        "org_code": "457759922", "event_type": "1", "id_type_code": "01", "id_no": "110105198001010016",
        "sex_code": "1", "name": "张三丰", "class_name": "生化", "report_title": "常规报告",
        "authenticator_dtime": "2024-03-11 09:28:59", "participant_dtime": "2024-03-11 08:09:38",
        "participant_dept_std_code": "A01", "performer_dept_std_code": "A30", "data_status": "1",
        "pdf": base64.b64encode(PDF).decode(),
    }  # fmt: skip
    n = np.arange(masters)
    m = pd.DataFrame({k: pd.array([v] * masters, dtype=STR) for k, v in base.items()})
    m["report_form_no"] = pd.array(np.char.add("R", n.astype(str)), dtype=STR)
    m["event_no"] = pd.array(np.char.add("E", n.astype(str)), dtype=STR)
    m["patient_id"] = pd.array(np.char.add("P", (n % 5000).astype(str)), dtype=STR)

    item_base = _fill("lab_subitem") | {
        "class_code": "250301002", "class_name": "白蛋白(ALB)", "result_type": "PQ", "result_value": "45.3",
        "norm_lower_limit": "40.0000", "norm_upper_limit": "55.0000", "result_interpre": "N",
        "effective_dtime": "2024-03-11 09:27:58", "recognition": "1",
    }  # fmt: skip
    k = masters * per_master
    it = pd.DataFrame({c: pd.array([v] * k, dtype=STR) for c, v in item_base.items()})
    owner = np.repeat(n, per_master)
    for c in ("org_code", "event_no", "report_form_no"):
        it[c] = m[c].to_numpy()[owner]
    it["serial_no"] = pd.array((np.arange(k) + 46530000).astype(str), dtype=STR)

    def pick(frame: pd.DataFrame, share: float) -> np.ndarray:
        return rng.choice(len(frame), size=max(1, int(len(frame) * share)), replace=False)

    defects_m = {
        "sex_code": "F",
        "authenticator_dtime": "2024-02-30 10:00:00",
        "author_dtime": "2024/03/01 10:00:00",
        "pdf": base64.b64encode(b"<html/>").decode(),
        "id_no": "110105198001010017",
        "class_name": "血" * 50,
    }
    for col, bad in defects_m.items():
        m.loc[pick(m, 0.002), col] = bad
    defects_i = {
        "result_value": "阳性",
        "class_local_name": "白蛋白\x01",
        "serial_no": "12a",
        "result_interpre": "XX",
        "norm_lower_limit": "99",
        "report_form_no": "ORPHAN",
    }
    for col, bad in defects_i.items():
        it.loc[pick(it, 0.002), col] = bad
    return m, it


def _precomputed(masters: pd.DataFrame) -> pd.DataFrame:
    """The masters as the extraction passes them on: the PDF's outcome and size, no Base64 text."""
    from hurren.validation import derived  # this tree only

    out = masters.drop(columns=["pdf"])
    codes = derived._pdf_outcomes(
        pa.array(masters["pdf"].to_numpy(dtype=object), type=derived.TEXT), 20 << 20
    )
    out["__pdf__pdf"] = codes.values(np.arange(len(codes)))
    out["pdf_size"] = [len(base64.b64decode(v)) for v in masters["pdf"]]
    return out


def worker(args: argparse.Namespace) -> None:
    """One tree's measurements, one per request: reads ``<what> <chunk>`` lines on stdin, answers
    each with a JSON line (seconds, rows), so the parent can alternate the trees run by run."""
    new_tree = (Path(args.plugins) / "hurren" / "validation" / "derived.py").exists()
    site = {
        "options": spec.SpecOptions(),
        "rulebook": rules.load_rulebook(),
    }  # the shipped defaults, in any tree
    batches = {c: build(c, args.items_per_master, args.seed) for c in args.chunks}
    if args.day_masters:
        batches[args.day_masters] = build(args.day_masters, args.items_per_master, args.seed)
    batches[1] = build(1, args.items_per_master, args.seed)
    if new_tree:
        precomputed = {c: _precomputed(m) for c, (m, _) in batches.items()}
    for line in sys.stdin:
        what, chunk = line.split()
        m, it = batches[int(chunk)]
        if what.startswith("pandas") and not new_tree and what != "pandas_base64":
            print(json.dumps(None), flush=True)
            continue
        if what == "gx_once" and not new_tree:
            print(json.dumps(None), flush=True)
            continue
        day_modes = ("gx_chunks", "gx_once")
        masters = precomputed[int(chunk)] if new_tree and what in ("pandas", "agree", *day_modes) else m
        if what in day_modes:
            print(json.dumps(_day(what, masters, it, args, site)), flush=True)
            continue
        if what == "agree":  # the engines give identical verdicts
            vp = validate_reports(masters, it, master_entity="labmaster", engine="pandas", **site)
            vg = validate_reports(masters, it, master_entity="labmaster", engine="gx", **site)
            pd.testing.assert_frame_equal(vp.failures, vg.failures)
            assert vp.held_keys == vg.held_keys and len(vp.held_keys) > 0
            print(json.dumps({"failures": len(vp.failures), "held": len(vp.held_keys)}), flush=True)
            continue
        engine = "gx" if what == "gx" else "pandas"
        t = time.perf_counter()
        validate_reports(masters, it, master_entity="labmaster", engine=engine, **site)
        print(json.dumps({"s": time.perf_counter() - t, "rows": len(masters) + len(it)}), flush=True)


def _day(
    what: str, masters: pd.DataFrame, items: pd.DataFrame, args: argparse.Namespace, site: dict[str, Any]
) -> dict[str, Any]:
    """A day of ``--day-chunks`` chunks for a GX hospital: GX per chunk, or (``gx_once``) the
    pandas engine per chunk with each chunk staged, then GX once over the staged day."""
    rows = (len(masters) + len(items)) * args.day_chunks
    t0 = time.perf_counter()
    if what == "gx_chunks":
        for _ in range(args.day_chunks):
            validate_reports(masters, items, master_entity="labmaster", engine="gx", **site)
        return {"s": time.perf_counter() - t0, "rows": rows, "calls": 2 * args.day_chunks}
    from hurren.validation import GxDay  # this tree only

    with GxDay(site["rulebook"], max_rows=args.gx_max_rows) as day:
        for _ in range(args.day_chunks):
            validate_reports(masters, items, master_entity="labmaster", engine="pandas", gx_day=day, **site)
        t1 = time.perf_counter()
        out = day.run()
    t2 = time.perf_counter()
    if out.disagreements:
        raise AssertionError(f"GX and pandas disagree: {out.disagreements}")
    return {"s": t2 - t0, "decide_s": t1 - t0, "gx_s": t2 - t1, "calls": out.calls, "rows": rows}


class _Worker:
    def __init__(self, tree: Path, args: argparse.Namespace) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--plugins", str(tree / "plugins"),
               "--chunks", ",".join(map(str, args.chunks)), "--items-per-master", str(args.items_per_master),
               "--seed", str(args.seed), "--day-masters", str(args.day_masters),
               "--day-chunks", str(args.day_chunks), "--gx-max-rows", str(args.gx_max_rows)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, what: str, chunk: int) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{what} {chunk}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the worker of {what} {chunk} ended")
        return json.loads(answer)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def measure(workers: dict[str, _Worker], what: str, chunk: int, repeat: int) -> dict[str, float | None]:
    """Median seconds of ``what`` per tree, the trees taking turns run by run."""
    times: dict[str, list[float]] = {name: [] for name in workers}
    for _ in range(repeat):
        for name, w in workers.items():
            answer = w.ask(what, chunk)
            if answer is not None:
                times[name].append(answer["s"])
    return {name: (statistics.median(ts) if ts else None) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--baseline", metavar="REF", help="also measure this commit (in a temporary git worktree)"
    )
    ap.add_argument("--chunks", type=lambda s: [int(x) for x in s.split(",")], default=[500, 2000],
                    help="reports per chunk (the sources' chunk_size), comma-separated")  # fmt: skip
    ap.add_argument("--items-per-master", type=int, default=20)
    ap.add_argument(
        "--day-masters", type=int, default=5000, help="reports of the GX hospital-day batch (0: skip)"
    )
    ap.add_argument("--day-chunks", type=int, default=10,
                    help="chunks of the GX hospital-day (GX per chunk vs GX once; 0: skip)")  # fmt: skip
    ap.add_argument("--gx-max-rows", type=int, default=500_000, help="GxDay's rows per GX call")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plugins", default=str(ROOT / "plugins"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    trees = {"new": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.baseline],
                           check=True)  # fmt: skip
            trees = {"old": base, "new": ROOT}
        workers = {name: _Worker(tree, args) for name, tree in trees.items()}
        try:
            figures = _figures(workers, args)
        finally:
            for w in workers.values():
                w.close()
            if args.baseline:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True
                )
    _report(figures, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _figures(workers: dict[str, _Worker], args: argparse.Namespace) -> dict[str, Any]:
    for w in workers.values():  # GX's import and suites: once per process, not measured
        w.ask("gx", 1)
    out: dict[str, Any] = {"chunks": {}}
    for chunk in args.chunks:
        rows = 0
        fig: dict[str, Any] = {}
        for what in ("pandas_base64", "pandas"):
            measure(workers, what, chunk, 1)  # warm: plans, regex caches
            fig[what] = measure(workers, what, chunk, args.repeat)
        fig["gx"] = measure(workers, "gx", chunk, max(1, args.repeat // 2))
        rows = workers["new"].ask("pandas", chunk)["rows"]
        fig["rows"] = rows
        fig["agree"] = workers["new"].ask("agree", chunk)
        if args.day_chunks:
            fig["day"] = _day_figures(workers, chunk, max(1, args.repeat // 2))
        out["chunks"][chunk] = fig
    if args.day_masters:
        fixed = measure(workers, "gx", 1, 3)
        big = measure(workers, "gx", args.day_masters, 1)
        rows = workers["new"].ask("pandas", args.day_masters)["rows"]
        out["gx_day"] = {
            name: {
                "rows": rows,
                "s": big[name],
                "fixed_s": fixed[name],
                "per_100k_s": (big[name] - fixed[name]) / rows * 1e5,
            }  # fmt: skip
            for name in workers
        }
    return out


def _day_figures(workers: dict[str, _Worker], chunk: int, repeat: int) -> dict[str, Any]:
    """A GX hospital's day, per chunk and once, the trees and the two ways taking turns; medians."""
    answers: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for name, w in workers.items():
            for what in ("gx_chunks", "gx_once"):
                a = w.ask(what, chunk)
                if a is not None:
                    answers.setdefault(f"{what}_{name}", []).append(a)
    out: dict[str, Any] = {}
    for key, runs in answers.items():
        runs = sorted(runs, key=lambda a: a["s"])
        out[key] = runs[len(runs) // 2]  # the median run, with its parts
    return out


def _report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    old = bool(args.baseline)
    print(f"lab reports, {args.items_per_master} sub-items each; medians of {args.repeat} runs, "
          + (f"this tree and {args.baseline} taking turns" if old else "this tree"))  # fmt: skip
    for chunk, f in figures["chunks"].items():
        rows = f["rows"]
        new_p, new_b, new_g = f["pandas"]["new"], f["pandas_base64"]["new"], f["gx"]["new"]
        print(f"chunk {chunk:,} reports ({rows:,} rows):")
        print(f"  new: pandas {rows / new_p:>9,.0f} rows/s (PDF outcome precomputed), {rows / new_b:,.0f} rows/s "
              f"(Base64 PDF); GX per chunk {new_g:.2f} s")  # fmt: skip
        if old:
            old_b, old_g = f["pandas_base64"]["old"], f["gx"]["old"]
            print(f"  old: pandas {rows / old_b:>9,.0f} rows/s (Base64 PDF); GX per chunk {old_g:.2f} s")
            print(f"  new pandas / old pandas: {old_b / new_p:.1f}x (same Base64 input: {old_b / new_b:.1f}x); "
                  f"new pandas / old default (GX per chunk): {old_g / new_p:.0f}x")  # fmt: skip
        print(f"  agree: pandas and GX give identical failures ({f['agree']['failures']:,}, "
              f"{f['agree']['held']:,} reports held)")  # fmt: skip
        day = f.get("day") or {}
        if "gx_once_new" in day:
            per, once = day["gx_chunks_new"], day["gx_once_new"]
            print(f"  a GX hospital's day of {args.day_chunks} chunks ({once['rows']:,} rows): GX per chunk "
                  f"{per['s']:.1f} s ({per['calls']} GX calls, {per['rows'] / per['s']:,.0f} rows/s); pandas "
                  f"per chunk + GX once {once['s']:.1f} s ({once['calls']} GX calls, {once['rows'] / once['s']:,.0f} "
                  f"rows/s: deciding and staging {once['decide_s']:.2f} s, GX {once['gx_s']:.1f} s): "
                  f"{per['s'] / once['s']:.1f}x")  # fmt: skip
        if "gx_chunks_old" in day:
            old_day = day["gx_chunks_old"]
            print(f"  old tree, GX per chunk over the same day: {old_day['s']:.1f} s")
    for name, day in (figures.get("gx_day") or {}).items():
        print(f"GX over one batch of {day['rows']:,} rows ({name}): {day['s']:.1f} s; fixed part "
              f"{day['fixed_s']:.2f} s per call, {day['per_100k_s']:.2f} s per 100k rows above it")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
