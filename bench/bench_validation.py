"""Benchmark: Great Expectations vs plain vectorised pandas, the same rules on the same batch.

Builds one batch of lab reports (default 10,000 labmaster rows with 20 lab_subitem rows each, so
200,000 sub-items) from the spec's example report, breaks about 1 % of the rows (unknown codes,
impossible dates, broken PDFs, wrong ID check digits, non-numeric PQ results, XML control
characters, oversize text, orphans), validates it with both engines in one run, checks that they
agree exactly, and prints rows per second for each and the ratio.

Run:  .venv/bin/python bench/bench_validation.py [--masters 10000] [--items-per-master 20]

GX's first call in a process also pays for importing great_expectations and building the
suites; that warm-up is timed on its own and left out of the rows/s figures, as is the fixed
per-call cost, which is measured separately on a 1-report batch.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "plugins")]

from hurren import rules, spec  # noqa: E402
from hurren.rules import load_rulebook  # noqa: E402
from hurren.spec import DEFAULT_OPTIONS  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masters", type=int, default=10_000)
    ap.add_argument("--items-per-master", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    masters, items = build(args.masters, args.items_per_master, args.seed)
    rows = len(masters) + len(items)
    print(f"batch: {len(masters):,} labmaster + {len(items):,} lab_subitem = {rows:,} rows "
          f"(built in {time.perf_counter() - t:.1f} s)")  # fmt: skip

    tiny_m, tiny_i = masters.iloc[:1], items.iloc[: args.items_per_master]
    t = time.perf_counter()
    validate_reports(
        tiny_m,
        tiny_i,
        master_entity="labmaster",
        engine="gx",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    warmup = time.perf_counter() - t
    t = time.perf_counter()
    tiny = validate_reports(
        tiny_m,
        tiny_i,
        master_entity="labmaster",
        engine="gx",
        options=DEFAULT_OPTIONS,
        rulebook=load_rulebook(),
    )
    fixed = time.perf_counter() - t
    n_exp = sum(tiny.stats["expectations"].values())
    print(f"gx warm-up (import + suites): {warmup:.1f} s; fixed cost per call on a 1-report batch: "
          f"{fixed:.2f} s for {n_exp} expectations = {fixed / n_exp * 1000:.1f} ms per expectation")  # fmt: skip

    results = {}
    for engine in ("pandas", "gx"):
        t = time.perf_counter()
        v = validate_reports(
            masters,
            items,
            master_entity="labmaster",
            engine=engine,
            options=DEFAULT_OPTIONS,
            rulebook=load_rulebook(),
        )
        secs = time.perf_counter() - t
        results[engine] = (v, secs)
        s = v.stats
        print(f"{engine:>6}: {secs:6.2f} s  {rows / secs:>9,.0f} rows/s  (prepare {s['prepare_s']:.2f} s, "
              f"engine {s['engine_s']:.2f} s, assemble {s['assemble_s']:.2f} s; {len(v.failures):,} failures, "
              f"{len(v.held_keys):,} held)")  # fmt: skip

    (vp, sp), (vg, sg) = results["pandas"], results["gx"]
    pd.testing.assert_frame_equal(vp.failures, vg.failures)
    assert vp.held_keys == vg.held_keys
    print(f"agree: identical failures ({len(vp.failures):,} rows, rules {sorted(set(vp.failures['rule']))})")
    ep, eg = vp.stats["engine_s"], vg.stats["engine_s"]
    print(f"ratio: pandas is {sg / sp:.1f}x faster end to end; engines alone (shared preparation and "
          f"assembly left out): pandas {rows / ep:,.0f} rows/s, GX {rows / eg:,.0f} rows/s, {eg / ep:.1f}x; "
          f"GX above its fixed cost: {rows / max(eg - fixed, 1e-9):,.0f} rows/s")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "pandas_s": sp,
                    "gx_s": sg,
                    "pandas_rows_per_s": rows / sp,
                    "gx_rows_per_s": rows / sg,
                    "gx_warmup_s": warmup,
                    "gx_fixed_s": fixed,
                    "pandas_engine_s": ep,
                    "gx_engine_s": eg,
                    "expectations": n_exp,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
