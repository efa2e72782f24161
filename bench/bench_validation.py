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
  hospital-day with GX once, whatever its chunking.

Each measurement runs in a worker process per tree (this one, and with ``--baseline REF`` the
commit REF checked out in a temporary git worktree), interleaved, so both see the same machine
load; the figures are medians of ``--repeat`` runs. pandas and GX must agree exactly (checked in
this tree on every chunk size).

Run:  .venv/bin/python bench/bench_validation.py [--baseline db74841] [--chunks 500,2000]
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


def _time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _chunk(chunk: int, args: argparse.Namespace, new_tree: bool) -> dict:
    m, it = build(chunk, args.items_per_master, args.seed)

    def run(masters: pd.DataFrame, engine: str):  # noqa: ANN202
        return validate_reports(masters, it, master_entity="labmaster", engine=engine)

    run(m, "pandas")  # warm (plans, regex caches)
    fig = {"rows": len(m) + len(it), "pandas_base64_s": _time(lambda: run(m, "pandas"), args.repeat)}
    fig["gx_chunk_s"] = _time(lambda: run(m, "gx"), max(1, args.repeat // 2))
    if new_tree:
        mp = _precomputed(m)
        fig["pandas_s"] = _time(lambda: run(mp, "pandas"), args.repeat)
        vp, vg = run(mp, "pandas"), run(mp, "gx")  # the engines agree
        pd.testing.assert_frame_equal(vp.failures, vg.failures)
        assert vp.held_keys == vg.held_keys and len(vp.held_keys) > 0
        fig["failures"] = len(vp.failures)
    return fig


def worker(args: argparse.Namespace) -> dict:
    """One tree's figures (run in a process of its own)."""
    new_tree = (Path(args.plugins) / "hurren" / "validation" / "derived.py").exists()
    m, it = build(1, args.items_per_master, args.seed)
    t = time.perf_counter()
    validate_reports(m, it, master_entity="labmaster", engine="gx")
    out: dict = {"gx_warmup_s": time.perf_counter() - t}  # import + suites, once per process
    out["chunks"] = {str(chunk): _chunk(chunk, args, new_tree) for chunk in args.chunks}
    if args.day_masters:
        m, it = build(args.day_masters, args.items_per_master, args.seed)
        tiny_m, tiny_i = m.iloc[:1], it.iloc[: args.items_per_master]
        fixed = _time(lambda: validate_reports(tiny_m, tiny_i, master_entity="labmaster", engine="gx"), 3)
        big = _time(lambda: validate_reports(m, it, master_entity="labmaster", engine="gx"), 1)
        rows = len(m) + len(it)
        out["gx_day"] = {"rows": rows, "s": big, "fixed_s": fixed, "per_100k_s": (big - fixed) / rows * 1e5}
    return out


def _run_worker(tree: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--plugins", str(tree / "plugins"),
           "--chunks", ",".join(map(str, args.chunks)), "--repeat", str(args.repeat),
           "--items-per-master", str(args.items_per_master), "--seed", str(args.seed),
           "--day-masters", str(args.day_masters)]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tree)
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plugins", default=str(ROOT / "plugins"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    trees = {"new": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.baseline],
                           check=True)  # fmt: skip
            trees = {"old": base, "new": ROOT}
        try:
            figures = {name: _run_worker(tree, args) for name, tree in trees.items()}
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True
                )

    new = figures["new"]
    old = figures.get("old")
    print(f"lab reports, {args.items_per_master} sub-items each; medians of {args.repeat} runs"
          + (f"; baseline {args.baseline}" if old else ""))  # fmt: skip
    for chunk, f in new["chunks"].items():
        rows = f["rows"]
        line = (f"chunk {int(chunk):>5,} reports ({rows:,} rows): pandas {rows / f['pandas_s']:>9,.0f} rows/s "
                f"(PDF outcome precomputed), {rows / f['pandas_base64_s']:>9,.0f} rows/s (Base64 PDF); "
                f"GX per chunk {f['gx_chunk_s']:.2f} s = {rows / f['gx_chunk_s']:,.0f} rows/s")  # fmt: skip
        print(line)
        if old:
            o = old["chunks"][chunk]
            print(f"    baseline: pandas {rows / o['pandas_base64_s']:>9,.0f} rows/s (Base64 PDF), GX per chunk "
                  f"{o['gx_chunk_s']:.2f} s; new/old pandas {o['pandas_base64_s'] / f['pandas_s']:.1f}x "
                  f"(same Base64 input: {o['pandas_base64_s'] / f['pandas_base64_s']:.1f}x); "
                  f"pandas vs the old default (GX per chunk): {o['gx_chunk_s'] / f['pandas_s']:.0f}x")  # fmt: skip
        print(f"    agree: pandas and GX give identical failures ({f['failures']:,})")
    for name, fig in figures.items():
        day = fig.get("gx_day")
        if day:
            print(f"GX over one batch of {day['rows']:,} rows ({name}): {day['s']:.1f} s; fixed part "
                  f"{day['fixed_s']:.2f} s per call, {day['per_100k_s']:.2f} s per 100k rows above it")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
