"""The synthetic hospital generator (hurren_testkit.synthetic) on SQLite: deterministic, spec-valid when
clean, and, with defects, different from the clean run in exactly the labelled rows and fields."""

from __future__ import annotations

import base64
import functools
import json
import re
import sqlite3
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime, Text, create_engine

from hurren import spec
from hurren_testkit import synthetic
from hurren_testkit.synthetic import DEFECT_KINDS, LABEL_TABLE, SOURCE_ENTITIES, WATERMARKS
from hurren_testkit.synthetic.__main__ import main as cli_main

DAY = date(2026, 11, 24)
SEED = 11
VOLUMES = dict(lab_reports=120, exam_reports=40, pacs_instances=5, lab_items=12)
DT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
UID = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*")
OPTIONS = spec.SpecOptions()
GROUP = {  # how rows of each table are grouped into the unit a defect belongs to
    "labmaster": ("org_code", "report_form_no"),
    "lab_subitem": ("org_code", "report_form_no"),
    "exammaster": ("org_code", "report_form_no"),
    "exam_subitem": ("org_code", "report_form_no"),
    "v_web_jcjg": ("ACCESS_NO",),
    "v_web_jctj": ("ACCESS_NO",),
}


# -- helpers ----------------------------------------------------------------------------------
def rows(db: Path, table: str) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f'SELECT * FROM "{table}" ORDER BY rowid')]
    finally:
        con.close()


def dump(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def generate(tmp: Path, name: str, **kwargs: Any) -> dict[str, tuple[Path, synthetic.Manifest]]:
    """Two hospitals, each in its own SQLite file; returns org_code -> (path, manifest)."""
    hospitals = synthetic.make_hospitals(2, seed=SEED)
    params = {**VOLUMES, "seed": SEED, **kwargs}
    manifests = synthetic.generate_region(
        f"sqlite:///{tmp}/{name}_{{org}}.db", hospitals=hospitals, day=DAY, **params
    )
    return {org: (tmp / f"{name}_{org}.db", m) for org, m in manifests.items()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, synthetic.Manifest]]:
    return generate(tmp_path_factory.mktemp("clean"), "clean")


@pytest.fixture(scope="module")
def defective(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, synthetic.Manifest]]:
    return generate(tmp_path_factory.mktemp("defective"), "bad", defect_rate=0.5)


# -- building blocks -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "id_no, valid",
    [
        ("11010519491231002X", True),  # the standard's own example, check character X
        ("440524188001010014", True),
        ("110105194912310021", False),  # wrong check character
        ("11010519490231002X", False),  # 1949-02-31 does not exist
        ("1101051949123100", False),
    ],
)
def test_id_number_check(id_no: str, valid: bool) -> None:
    assert synthetic.is_valid_id_no(id_no) is valid


def test_make_id_no_covers_every_check_character() -> None:
    seen = {synthetic.make_id_no("652301", date(1980, 1, 1) + timedelta(days=d), 123)[-1] for d in range(200)}
    assert seen == set("0123456789X")


def test_pdf_is_structurally_valid_and_padded() -> None:
    small = synthetic.build_pdf(
        "Report (1) \\ test", ["line one", "中文 becomes ?"], created="D:20261124103000+08'00'"
    )
    assert small.startswith(b"%PDF-1.4") and small.rstrip().endswith(b"%%EOF")
    assert synthetic.pdf_problems(small) == []
    big = synthetic.build_pdf("x", ["y"], pad_to=100 * 1024, pad_seed="s")
    assert synthetic.pdf_problems(big) == []
    assert 99 * 1024 <= len(big) <= 101 * 1024
    assert big == synthetic.build_pdf("x", ["y"], pad_to=100 * 1024, pad_seed="s")


def test_pdf_check_finds_a_wrong_xref_offset() -> None:
    pdf = synthetic.build_pdf("x", ["y"])
    broken = re.sub(
        rb"\n(\d{10}) 00000 n", lambda m: b"\n%010d 00000 n" % (int(m.group(1)) + 1), pdf, count=2
    )
    assert any("not object" in p for p in synthetic.pdf_problems(broken))
    assert synthetic.pdf_problems(b"<html></html>") != []


def test_schema_is_the_spec() -> None:
    md = synthetic.source_metadata()
    for name in SOURCE_ENTITIES:
        table = md.tables[name]
        assert [c.name for c in table.columns] == list(spec.entity(name).names)
        for col in table.columns:
            if col.name == WATERMARKS[name]:
                assert isinstance(col.type, DateTime) and not col.nullable
            else:
                assert isinstance(col.type, Text) and col.nullable
        assert not table.primary_key.columns  # duplicate keys must be storable
        assert any(WATERMARKS[name] in [c.name for c in ix.columns] for ix in table.indexes)
    assert LABEL_TABLE in md.tables


def test_defect_kinds_use_the_rule_vocabulary() -> None:
    rules = {
        "not_null",
        "length",
        "dictionary",
        "datetime",
        "number",
        "id_card",
        "pq_numeric",
        "limits_order",
        "unique_key",
        "orphan_item",
        "no_items",
        "pdf",
        "xml_chars",
        "uid",
    }
    for kind, (entity, rule, description) in DEFECT_KINDS.items():
        assert entity in SOURCE_ENTITIES and rule in rules and description, kind
    assert rules == {r for _, r, _ in DEFECT_KINDS.values()}


def test_hospitals_are_distinct_and_deterministic() -> None:
    hs = synthetic.make_hospitals(40, seed=3)
    assert hs == synthetic.make_hospitals(40, seed=3)
    assert len({h.org_code for h in hs}) == 40 and len({h.name for h in hs}) == 40
    assert all(re.fullmatch(r"[1-9]\d{8}", h.org_code) for h in hs)


# -- determinism and volumes ---------------------------------------------------------------------
def test_same_seed_same_bytes_whatever_the_chunk_size(tmp_path: Path, clean) -> None:
    again = generate(tmp_path, "again", chunk_size=7)
    for org, (path, _) in clean.items():
        assert dump(again[org][0]) == dump(path)


def test_another_seed_gives_other_data(tmp_path: Path, clean) -> None:
    other = generate(tmp_path, "other", seed=SEED + 1)
    org = next(iter(clean))
    assert rows(clean[org][0], "labmaster") != rows(other[org][0], "labmaster")


def test_volumes_are_exact(clean) -> None:
    for path, m in clean.values():
        counts = {t: len(rows(path, t)) for t in SOURCE_ENTITIES}
        assert counts == m.rows
        assert counts["labmaster"] == VOLUMES["lab_reports"]
        assert counts["exammaster"] == counts["v_web_jctj"] == VOLUMES["exam_reports"]
        assert counts["v_web_jcjg"] == VOLUMES["exam_reports"] * VOLUMES["pacs_instances"]
        assert VOLUMES["exam_reports"] <= counts["exam_subitem"] <= 3 * VOLUMES["exam_reports"]
        assert counts["sehr_accept_record"] == 8 and counts["sehr_quote_record"] == 5  # 5 % and 3 % of 160
        per_report = Counter(r["report_form_no"] for r in rows(path, "lab_subitem"))
        assert (
            0.8 * VOLUMES["lab_items"]
            <= sum(per_report.values()) / len(per_report)
            <= 1.2 * VOLUMES["lab_items"]
        )
        assert len(set(per_report.values())) > 3  # variable
        assert rows(path, LABEL_TABLE) == [] and m.defects == {}


# -- clean data is valid -------------------------------------------------------------------------
def _valid_time(f: spec.Field, v: str) -> bool:
    try:
        datetime.strptime(v, spec.DATE_FORMAT if f.type == "date" else spec.DATETIME_FORMAT)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("entity", SOURCE_ENTITIES)
def test_clean_rows_satisfy_the_field_specs(clean, entity: str) -> None:
    ent = spec.entity(entity)
    for path, _ in clean.values():
        for row in rows(path, entity):
            for f in ent.fields:
                v = row[f.name]
                if v is None or v == "":
                    assert f.nullable, (entity, f.name)
                    continue
                assert isinstance(v, str)
                assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", v), (entity, f.name)
                if f.type in ("date", "datetime"):
                    assert _valid_time(f, v), (entity, f.name, v)
                    if f.name != "birth_date":
                        assert v.startswith(f"{DAY:%Y-%m-%d}"), (entity, f.name, v)
                elif f.type == "number":
                    assert v.isdigit() and len(v) <= (f.length or 99), (entity, f.name, v)
                elif f.type == "uid":
                    assert UID.fullmatch(v) and len(v) <= 64, v
                elif f.type == "text" and f.length:
                    assert OPTIONS.measured_length(v) <= f.length, (entity, f.name, v)
                if f.dictionary:
                    assert v in spec.dictionary(f.dictionary), (entity, f.name, v)


def test_clean_patients_are_consistent(clean) -> None:
    seen_4byte = False
    for path, _ in clean.values():
        for m in rows(path, "exammaster") + rows(path, "labmaster"):
            seen_4byte |= any(ord(c) > 0xFFFF for c in m["name"])
            if m["id_type_code"] != "01":
                continue
            assert synthetic.is_valid_id_no(m["id_no"])
            assert m["sex_code"] == ("1" if int(m["id_no"][16]) % 2 else "2")
            assert m["sex_name"] == spec.dictionary("STD_SEX").codes[m["sex_code"]]
            if "birth_date" in m:
                assert m["birth_date"].replace("-", "") == m["id_no"][6:14]
            for f in ("participant_dept_std", "performer_dept_std"):
                assert m[f + "_name"] == spec.dictionary("STD_DEPT").codes[m[f + "_code"]]
    assert seen_4byte, "expected a few names with a 4-byte UTF-8 character"


def test_clean_reports_are_whole(clean) -> None:
    tol = OPTIONS.effective_dtime_tolerance_s
    for path, _ in clean.values():
        for kind, key in (("lab", "serial_no"), ("exam", "exam_item_code")):
            masters = {
                (m["org_code"], m["event_no"], m["report_form_no"]): m for m in rows(path, f"{kind}master")
            }
            items = defaultdict(list)
            for it in rows(path, f"{kind}_subitem"):
                items[(it["org_code"], it["event_no"], it["report_form_no"])].append(it)
            assert set(items) == set(masters)  # no orphans, no master without items
            for k, its in items.items():
                m = masters[k]
                assert len({it[key] for it in its}) == len(its)  # unique sub-item keys
                auth = datetime.strptime(m["authenticator_dtime"], spec.DATETIME_FORMAT)
                for it in its:
                    eff = datetime.strptime(it["effective_dtime"], spec.DATETIME_FORMAT)
                    assert timedelta(0) <= auth - eff <= timedelta(seconds=tol)
                    assert it["last_update_dtime"] == m["last_update_dtime"]
                for a, b in (("participant_dtime", "author_dtime"), ("author_dtime", "authenticator_dtime")):
                    assert m[a] <= m[b]
                assert m["last_update_dtime"] >= m["authenticator_dtime"]
                pdf = base64.b64decode(m["pdf"], validate=True)
                assert synthetic.pdf_problems(pdf) == [] and m["report_form_no"].encode() in pdf


def test_clean_lab_results_match_their_limits(clean) -> None:
    kinds = Counter()
    for path, _ in clean.values():
        for it in rows(path, "lab_subitem"):
            kinds[it["result_type"]] += 1
            assert it["result_type_descr"] == spec.dictionary("STD_OBSERVATION_TYPE").codes[it["result_type"]]
            if it["result_type"] == "CD":
                assert not re.fullmatch(r"[\d.]+", it["result_value"])
                continue
            v, lo, hi = (
                float(it["result_value"]),
                float(it["norm_lower_limit"]),
                float(it["norm_upper_limit"]),
            )
            assert lo < hi
            assert it["result_interpre"] == ("L" if v < lo else "H" if v > hi else "N")
            kinds[it["result_interpre"]] += 1
    assert kinds["CD"] and kinds["H"] and kinds["L"] and kinds["N"] > kinds["H"] + kinds["L"]


def test_clean_pacs_rows_match_the_exam_reports(clean) -> None:
    for path, _ in clean.values():
        exams = {m["study_instance_uid"]: m for m in rows(path, "exammaster")}
        studies = rows(path, "v_web_jctj")
        assert {s["STUDIUIID"] for s in studies} == set(exams)
        instances = defaultdict(list)
        for r in rows(path, "v_web_jcjg"):
            instances[r["STUDIUIID"]].append(r)
        for s in studies:
            m, inst = exams[s["STUDIUIID"]], instances[s["STUDIUIID"]]
            assert (s["MODALITY"], s["ACCESS_NO"], s["PATIENT_ID"]) == (
                m["class_code"],
                m["pacs_id"],
                m["patient_id"],
            )
            assert int(s["INSTANCECOUNT"]) == len(inst) and int(s["FILESIZE"]) == sum(
                int(r["FILESIZE"]) for r in inst
            )
            assert s["MODIFYTIME"] == max(r["CREATEDTIME"] for r in inst)
            assert len({r["INSTANCESOPIUID"] for r in inst}) == len(inst)
            assert all(
                r["STUDYDATE"] == m["performer_dtime"] and r["PATIENTSEX"] == m["sex_code"] for r in inst
            )


def test_records_refer_to_the_other_hospitals_reports(clean) -> None:
    reports = {}
    for org, (path, _) in clean.items():
        for kind, key in (("lab", "class_code"), ("exam", "exam_item_code")):
            masters = {m["report_form_no"]: m for m in rows(path, f"{kind}master")}
            for it in rows(path, f"{kind}_subitem"):
                if it["recognition"] == "1":
                    m = masters[it["report_form_no"]]
                    reports[(org, it["report_form_no"], it[key])] = (kind, m["id_no"], m["id_type_code"])
    for org, (path, _) in clean.items():
        for table in ("sehr_accept_record", "sehr_quote_record"):
            recs = rows(path, table)
            assert recs
            keys = [tuple(r[k] for k in spec.entity(table).key) for r in recs]
            assert len(set(keys)) == len(keys)
            for r in recs:
                assert r["hr_org_code"] != org
                kind, id_no, id_type = reports[(r["hr_org_code"], r["hr_report_form_no"], r["code"])]
                assert (r["id_no"], r["id_type_code"]) == (id_no, id_type)
                assert r["type"] == ("2" if kind == "lab" else "1")
                if table == "sehr_accept_record":
                    assert (r["reason"] is not None) == (r["is_accept"] == "2")


# -- defects ---------------------------------------------------------------------------------------
def _violates(rule: str, entity: str, field: str | None, row: dict[str, Any]) -> bool:
    """An independent, minimal reading of each rule, to check the defect is really one."""
    f = spec.entity(entity).field(field) if field else None
    v = row.get(field) if field else None
    if rule == "not_null":
        required = row["is_accept"] == "2" if (entity, field) == ("sehr_accept_record", "reason") else True
        return required and (v is None or v == "")
    if v is None and rule not in ("pdf", "limits_order"):
        return False  # only not_null and pdf concern a missing value
    if rule == "length":
        return OPTIONS.measured_length(v) > f.length and len(v) <= f.length
    if rule == "dictionary":
        return v not in spec.dictionary(f.dictionary)
    if rule == "datetime":
        return not _valid_time(f, v)
    if rule == "number":
        return not v.isdigit()
    if rule == "id_card":
        return row["id_type_code"] == "01" and not synthetic.is_valid_id_no(v)
    if rule == "pq_numeric":
        return row["result_type"] == "PQ" and not re.fullmatch(r"-?\d+(\.\d+)?", v)
    if rule == "limits_order":
        return float(row["norm_lower_limit"]) > float(row["norm_upper_limit"])
    if rule == "pdf":
        return not v or not base64.b64decode(v).startswith(b"%PDF-")
    if rule == "xml_chars":
        return bool(re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", v))
    if rule == "uid":
        return not (UID.fullmatch(v) and len(v) <= 64)
    raise AssertionError(rule)


@functools.cache
def _rows(db: Path, table: str) -> list[dict[str, Any]]:
    """rows(), read once per test session (callers must not modify the result)."""
    return rows(db, table)


@functools.cache
def _groups(db: Path, table: str) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for n, r in enumerate(_rows(db, table)):
        out[tuple(r[k] for k in GROUP[table]) if table in GROUP else (n,)].append(r)
    return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    return {k for k in a if a[k] != b[k]}


def test_every_kind_is_labelled_and_counted(defective) -> None:
    seen = Counter()
    for path, m in defective.values():
        labels = rows(path, LABEL_TABLE)
        assert Counter(lb["kind"] for lb in labels) == m.defects and len(labels) == m.labels
        assert [lb["seq"] for lb in labels] == list(range(1, len(labels) + 1))
        for lb in labels:
            assert (lb["entity"], lb["expected_rule"]) == DEFECT_KINDS[lb["kind"]][:2]
        seen.update(m.defects)
    assert set(seen) == set(DEFECT_KINDS)


def test_defective_run_differs_from_the_clean_run_exactly_where_labelled(clean, defective) -> None:
    for org, (bad_db, _) in defective.items():
        good_db = clean[org][0]
        labels = _rows(bad_db, LABEL_TABLE)
        touched: dict[str, set[tuple]] = defaultdict(set)  # table -> groups that labels account for
        for lb in labels:
            entity, rule, field = lb["entity"], lb["expected_rule"], lb["field"]
            key = json.loads(lb["row_key"])
            bad_rows = [r for r in _rows(bad_db, entity) if all(r[k] == v for k, v in key.items())]
            assert bad_rows, f"label {lb['seq']} {lb['kind']}: no {entity} row with key {key}"
            if entity in GROUP:
                group = tuple(bad_rows[0][k] for k in GROUP[entity])
            else:
                group = (_rows(bad_db, entity).index(bad_rows[-1]),)
            touched[entity].add(group)
            good = _groups(good_db, entity).get(group, [])
            bad = _groups(bad_db, entity)[group] if rule != "no_items" else None
            if rule == "orphan_item":
                assert good == [] and len(bad) == 1
                master = "labmaster" if entity == "lab_subitem" else "exammaster"
                assert not [m for m in _rows(bad_db, master) if m["report_form_no"] == lb["report_form_no"]]
            elif rule == "unique_key":
                assert len(bad) == len(good) + 1 and len(bad_rows) == 2
                key_field = "serial_no" if entity == "lab_subitem" else "exam_item_code"
                first, second = [n for n, r in enumerate(bad) if r[key_field] == lb["item_key"]]
                assert bad[:second] + bad[second + 1 :] == good and _diff(bad[first], bad[second])
            elif rule == "no_items":
                item_table = "lab_subitem" if entity == "labmaster" else "exam_subitem"
                group = (lb["org_code"], lb["report_form_no"])
                assert _groups(good_db, item_table)[group] and group not in _groups(bad_db, item_table)
                touched[item_table].add(group)
                assert _groups(good_db, entity)[group] == _groups(bad_db, entity)[group]
            else:
                assert len(bad) == len(good)
                changed = [(g, b) for g, b in zip(good, bad, strict=True) if g != b]
                assert len(changed) == 1, (lb["kind"], changed)
                g, b = changed[0]
                allowed = {field, "is_accept", "id_type_code", "norm_upper_limit"}
                # accept_reason_missing on an accepted record turns is_accept to 2; reason stays NULL
                assert field in _diff(g, b) or lb["kind"] == "accept_reason_missing", (
                    lb["kind"],
                    _diff(g, b),
                )
                assert _diff(g, b) <= allowed, (lb["kind"], _diff(g, b))
                assert _violates(rule, entity, field, b), (lb["kind"], field, b.get(field))
                assert not _violates(rule, entity, field, g), (lb["kind"], field, g.get(field))
        for table in SOURCE_ENTITIES:
            good, bad = _groups(good_db, table), _groups(bad_db, table)
            for group in set(good) | set(bad):
                if group not in touched[table]:
                    assert good.get(group) == bad.get(group), (table, group)


def test_defect_kinds_subset_and_rate(tmp_path: Path) -> None:
    out = generate(tmp_path, "subset", defect_rate=0.1, defect_kinds=["lab_sex_code", "pacs_sex"])
    for path, m in out.values():
        assert m.defects == {"lab_sex_code": 12, "pacs_sex": 4}  # round(0.1 * 120), round(0.1 * 40)
        labelled = {lb["report_form_no"] for lb in rows(path, LABEL_TABLE) if lb["kind"] == "lab_sex_code"}
        assert labelled == {r["report_form_no"] for r in rows(path, "labmaster") if r["sex_code"] == "7"}


def test_unknown_defect_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown defect kind"):
        generate(tmp_path, "x", defect_kinds=["lab_typo"], defect_rate=0.1)


# -- later changes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("report", ["lab", "exam"])
def test_changes_are_after_the_watermark_and_say_what_changed(tmp_path: Path, report: str) -> None:
    h = synthetic.make_hospitals(1, seed=SEED)[0]
    url = f"sqlite:///{tmp_path}/h.db"
    synthetic.generate_hospital_day(url, org=h, day=DAY, seed=SEED, defect_rate=0.2, **VOLUMES)
    db = tmp_path / "h.db"
    master, item = f"{report}master", f"{report}_subitem"
    before = {m["report_form_no"]: m for m in rows(db, master)}
    since = datetime.strptime(max(m["last_update_dtime"] for m in before.values()), spec.DATETIME_FORMAT)
    ch = synthetic.generate_changes(
        url, org=h, since=since, count_new=3, count_updated=2, count_voided=2, seed=5, report=report
    )
    assert (len(ch.new), len(ch.updated), len(ch.voided)) == (3, 2, 2)
    assert since < ch.first_change <= ch.last_change
    after = {m["report_form_no"]: m for m in rows(db, master)}
    assert len(after) == len(before) + 3
    changed = {rfn for rfn, m in after.items() if m["last_update_dtime"] > f"{since:%Y-%m-%d %H:%M:%S}"}
    assert changed == {k.report_form_no for k in ch.new + ch.updated + ch.voided}
    labelled = {lb["report_form_no"] for lb in rows(db, LABEL_TABLE)}
    for k in ch.updated:
        old, new = before[k.report_form_no], after[k.report_form_no]
        assert k.report_form_no not in labelled and new["data_status"] == "1"
        assert new["pdf"] != old["pdf"] and synthetic.pdf_problems(base64.b64decode(new["pdf"])) == []
        assert new["authenticator_dtime"] > old["authenticator_dtime"]
        assert new["patient_id"] == old["patient_id"] and new["id_no"] == old["id_no"]
    for k in ch.voided:
        assert after[k.report_form_no]["data_status"] == "0"
    items = defaultdict(list)
    for it in rows(db, item):
        items[it["report_form_no"]].append(it)
    for k in ch.new + ch.updated + ch.voided:
        m = after[k.report_form_no]
        assert items[k.report_form_no] and all(
            it["last_update_dtime"] == m["last_update_dtime"] for it in items[k.report_form_no]
        )
        auth = datetime.strptime(m["authenticator_dtime"], spec.DATETIME_FORMAT)
        for it in items[k.report_form_no]:
            assert (
                0
                <= (auth - datetime.strptime(it["effective_dtime"], spec.DATETIME_FORMAT)).total_seconds()
                <= 300
            )
    if report == "exam":
        new_uids = {after[k.report_form_no]["study_instance_uid"] for k in ch.new}
        studies = {s["STUDIUIID"]: s for s in rows(db, "v_web_jctj")}
        assert all(studies[u]["MODIFYTIME"] > f"{since:%Y-%m-%d %H:%M:%S}" for u in new_uids)


def test_watermark_is_a_real_timestamp_in_sqlite(tmp_path: Path) -> None:
    h = synthetic.make_hospitals(1, seed=1)[0]
    engine = create_engine(f"sqlite:///{tmp_path}/w.db")
    synthetic.generate_hospital_day(engine, org=h, day=DAY, lab_reports=3, exam_reports=1, seed=1)
    from sqlalchemy import select

    t = synthetic.source_metadata().tables["labmaster"]
    with engine.connect() as conn:
        values = conn.execute(select(t.c.last_update_dtime)).scalars().all()
    assert values and all(isinstance(v, datetime) and v.date() == DAY for v in values)
    assert all(DT.fullmatch(r["last_update_dtime"]) for r in rows(tmp_path / "w.db", "labmaster"))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--list-kinds"]) == 0
    assert "lab_orphan_item" in capsys.readouterr().out
    url = f"sqlite:///{tmp_path}/cli_{{org}}.db"
    assert (
        cli_main(
            [
                "--url",
                url,
                "--hospitals",
                "2",
                "--day",
                "2026-11-24",
                "--lab",
                "20",
                "--exam",
                "5",
                "--defect-rate",
                "0.2",
                "--seed",
                "7",
                "--pdf-kb",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("labmaster 20,") == 2 and "defects" in out
    assert len(list(tmp_path.glob("cli_*.db"))) == 2
