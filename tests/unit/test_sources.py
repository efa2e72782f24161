"""Sources as configuration: the shipped file, defaults, every check and where the text comes from."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from hurren import sources
from hurren.sources import SOURCE_ENTITIES, STREAMS, SourcesError, parse_sources, resolve_sources

ROOT = Path(__file__).resolve().parents[2]


def hospital(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "korla",
        "org_code": "270258069",
        "org_name": "库尔勒市妇幼保健院",
        "conn_id": "hurren_src_korla",
        "dialect": "oracle",
    }
    base.update(overrides)
    return base


def doc(*hospitals: dict[str, object], **defaults: object) -> str:
    body: dict[str, object] = {"hospitals": list(hospitals) or [hospital()]}
    if defaults:
        body["defaults"] = defaults
    return json.dumps(body, ensure_ascii=False)


def problems(text: str) -> str:
    with pytest.raises(SourcesError) as info:
        parse_sources(text)
    return str(info.value)


def test_shipped_demo_configuration_loads() -> None:
    cfg = sources.load_sources(sources.DEFAULT_SOURCES_FILE)
    demo = cfg.get("demo")
    assert demo.dialect == "sqlite"
    assert demo.timezone == "Asia/Shanghai"
    assert demo.enabled and cfg.enabled == (demo,)
    assert set(demo.views) == set(SOURCE_ENTITIES)
    assert demo.pool.name == "hurren_src_demo"
    assert demo.validator == "gx"  # the demo shows Data Docs


def test_a_minimal_hospital_gets_every_default() -> None:
    s = parse_sources(doc()).get("korla")
    assert dict(s.views) == {e: e for e in SOURCE_ENTITIES}  # the spec's names
    assert s.streams == tuple(STREAMS)
    assert s.timezone == "Asia/Shanghai"
    assert s.schedule == "*/30 * * * *"
    assert s.initial_value == datetime(2024, 1, 1)
    assert (s.overlap_minutes, s.chunk_size, s.enabled, s.mapping_file) == (10, 500, True, None)
    assert s.validator == "pandas"  # GX results (once per run) only where a hospital asks for them
    assert s.pool == sources.Pool(name="hurren_src_korla", slots=2)
    assert s.pacs_study_uid_column == "STUDIUIID"


def test_hospital_values_win_over_defaults_and_views_merge() -> None:
    text = doc(
        hospital(views={"v_web_jcjg": "V_WEB_JC_JG"}, overlap_minutes=30, schedule="@hourly"),
        hospital(id="other", org_code="733802172", conn_id="c2", dialect="mssql", enabled=False),
        overlap_minutes=5,
        views={"labmaster": "HIS.V_LIS_MASTER"},
        initial_value="2023-06-01",
        pool={"slots": 3},
    )
    cfg = parse_sources(text)
    a, b = cfg.get("korla"), cfg.get("other")
    assert a.overlap_minutes == 30 and b.overlap_minutes == 5
    assert a.view("labmaster") == "HIS.V_LIS_MASTER" and a.view("v_web_jcjg") == "V_WEB_JC_JG"
    assert b.view("v_web_jcjg") == "v_web_jcjg"
    assert a.initial_value == datetime(2023, 6, 1)
    assert a.pool == sources.Pool(name="hurren_src_korla", slots=3)
    assert cfg.enabled == (a,)
    assert cfg.by_org_code("733802172") is b


def test_sources_are_frozen() -> None:
    s = parse_sources(doc()).get("korla")
    with pytest.raises(AttributeError):
        s.org_code = "x"
    with pytest.raises(TypeError):
        s.views["labmaster"] = "evil"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        pytest.param({"dialect": "db2"}, "use one of oracle, mssql, postgresql, mysql, sqlite", id="dialect"),
        pytest.param({"dialect": "mariadb"}, "MariaDB is mysql", id="dialect-hint-mariadb"),
        pytest.param({"dialect": "kingbase"}, "KingbaseES and openGauss are postgresql", id="dialect-hint"),
        pytest.param({"id": "Korla Hospital"}, "id 'Korla Hospital' must be", id="id"),
        pytest.param({"org_code": "27-02"}, "org_code '27-02'", id="org-code"),
        pytest.param({"conn_id": "a b"}, "conn_id 'a b'", id="conn-id"),
        pytest.param({"views": {"labmaster": "lab; DROP TABLE x"}}, "views.labmaster", id="view-injection"),
        pytest.param({"views": {"labmaster": '"LAB"'}}, "not a plain identifier", id="view-quoted"),
        pytest.param({"views": {"labmaster": "a.b.c"}}, "not a plain identifier", id="view-three-parts"),
        pytest.param({"views": {"lab_exam_report": "x"}}, "not a source entity", id="view-entity"),
        pytest.param({"pacs_study_uid_column": "STUDY UID"}, "pacs_study_uid_column", id="uid-column"),
        pytest.param({"timezone": "Beijing"}, "IANA zone name", id="timezone"),
        pytest.param({"schedule": "every hour"}, "5-field cron", id="schedule"),
        pytest.param({"initial_value": "2024/01/01"}, "initial_value", id="initial-value"),
        pytest.param({"overlap_minutes": -1}, "overlap_minutes", id="overlap-negative"),
        pytest.param({"overlap_minutes": 1.5}, "overlap_minutes", id="overlap-float"),
        pytest.param({"chunk_size": 0}, "chunk_size", id="chunk-size"),
        pytest.param(
            {"validator": "great_expectations"}, 'validator must be "pandas" or "gx"', id="validator"
        ),
        pytest.param({"enabled": "yes"}, "enabled must be true or false", id="enabled"),
        pytest.param({"streams": ["lab", "labs"]}, "streams must be", id="streams"),
        pytest.param({"pool": {"name": "p", "slots": 0}}, "pool must be", id="pool"),
        pytest.param(
            {"mapping_file": "nowhere.tsv"}, "mapping_file 'nowhere.tsv' not found", id="mapping-file"
        ),
        pytest.param({"colour": "red"}, "unknown key(s) ['colour']", id="unknown-key"),
        pytest.param({"org_name": ""}, "'org_name' is required", id="required"),
    ],
)
def test_each_bad_setting_is_named_with_what_to_do(override: dict[str, object], expected: str) -> None:
    message = problems(doc(hospital(**override)))
    assert expected in message
    assert "hospitals[0] (" in message


def test_every_problem_is_reported_at_once() -> None:
    text = doc(
        hospital(dialect="db2", timezone="Mars/Olympus"),
        hospital(id="b", org_code="270258069", conn_id="c2", chunk_size=-5),
    )
    message = problems(text)
    assert "dialect 'db2'" in message and "Mars/Olympus" in message
    assert "chunk_size" in message
    with pytest.raises(SourcesError) as info:
        parse_sources(text)
    assert len(info.value.problems) == 3


def test_repeated_ids_and_org_codes_are_refused() -> None:
    message = problems(doc(hospital(), hospital(conn_id="c2")))
    assert "id must be unique" in message and "org_code must be unique" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("{", "not valid JSON", id="json"),
        pytest.param("[]", "top level must be an object", id="top-level"),
        pytest.param('{"hospitals": []}', "non-empty list", id="no-hospitals"),
        pytest.param('{"hospitals": [1]}', "hospitals[0] must be an object", id="hospital-type"),
        pytest.param(
            json.dumps({"defaults": {"id": "x"}, "hospitals": [hospital()]}),
            "cannot be defaulted",
            id="default-id",
        ),
        pytest.param('{"hospitalz": []}', "unknown top-level key", id="top-key"),
    ],
)
def test_malformed_documents(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_mapping_file_is_resolved_and_checked(tmp_path: Path) -> None:
    (tmp_path / "270258069.tsv").write_text("field\tlocal_code\tstd_code\n", encoding="utf-8")
    path = tmp_path / "sources.json"
    path.write_text(doc(hospital(mapping_file="270258069.tsv")), encoding="utf-8")
    s = sources.load_sources(path).get("korla")
    assert s.mapping_file == tmp_path / "270258069.tsv"


def test_resolve_prefers_the_variable_then_the_env_file(tmp_path: Path) -> None:
    path = tmp_path / "sources.json"
    path.write_text(doc(hospital(id="from_file")), encoding="utf-8")
    env = {sources.ENV_FILE: str(path)}
    assert resolve_sources(None, environ=env).hospitals[0].id == "from_file"
    assert resolve_sources("  ", environ=env).hospitals[0].id == "from_file"
    variable = doc(hospital(id="from_variable"))
    cfg = resolve_sources(variable, environ=env)
    assert cfg.hospitals[0].id == "from_variable"
    assert "Airflow Variable" in cfg.origin
    assert resolve_sources(None, environ={}).get("demo")  # the shipped file


def test_errors_name_their_origin(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match="Airflow Variable 'hurren_sources'"):
        resolve_sources("{}")
    with pytest.raises(SourcesError, match="HURREN_SOURCES_FILE"):
        sources.load_sources(tmp_path / "missing.json")


def test_unknown_source_id_lists_the_configured_ones() -> None:
    with pytest.raises(SourcesError, match="configured: korla"):
        parse_sources(doc()).get("nope")


def test_importing_the_module_does_not_import_airflow() -> None:
    code = "import sys, hurren.sources, hurren.extract, hurren.load, hurren.mapping; print('airflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
