"""A site profile that changes decisions, followed by the store, the validation and the pushed XML.

The site directory (``HURREN_SITE_DIR``) holds ``spec-options.json`` (D14 lengths counted in
characters, D21 no XML declaration) and ``rules.json`` (``dtime_order`` an error for lab
masters, a warning in the shipped rule book); the envelope's SM2 layout is C1C2C3. A synthetic
hospital in PostgreSQL gets one report with a 100-character Chinese title (300 bytes of UTF-8 in a
VARCHAR2(256)) and one audited before it was performed. The real extraction DAG and the real
``push_reports`` DAG run with ``dag.test()`` against the simulator over HTTP, configured with the
same profile. What must hold: the long title is stored and registered on the platform (under the
spec's defaults it is a length error, and the default simulator refuses it); the report audited
too early is quarantined with ``dtime_order`` (the defaults only warn); the payloads carry no
declaration (the defaults' do).
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text

from hurren import crypto, dagfactory, rules, spec, store
from hurren.platform import xml as payloads
from hurren.site import site
from hurren_testkit import synthetic
from hurren_testkit.simulator import Simulator, SimulatorConfig, checks
from tests.fixtures.regions import configure_region

pytestmark = pytest.mark.services

DAY = date(2024, 3, 11)
UNTIL = datetime(2024, 3, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
PROFILE = {"length_semantics": "char", "xml_declaration": False}
SITE_RULES = {"overrides": [{"rule": "dtime_order", "severity": "error", "entity": "labmaster",
                             "why": "this site holds reports audited before they were performed"}]}  # fmt: skip
LONG_TITLE = "检" * 100  # 100 characters, 300 bytes of UTF-8: VARCHAR2(256) holds it only in characters
SM2 = crypto.CryptoOptions(mode="C1C2C3")
PDF = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()


@pytest.fixture(scope="module")
def sim():
    config = SimulatorConfig(port=0, private_key=crypto.generate_keypair()[0], crypto_options=SM2,
                             spec_options=spec.SpecOptions.from_mapping(PROFILE))  # fmt: skip
    with Simulator(config=config) as s:
        yield s


@pytest.fixture(scope="module")
def region(services, make_database, s3, tmp_path_factory, monkeypatch_module, sim):
    [h] = synthetic.make_hospitals(1, seed=1401)
    url = make_database("hospital_site14")
    synthetic.generate_hospital_day(url, org=h, day=DAY, lab_reports=8, exam_reports=2, seed=1401, defect_rate=0.0,
                                    pdf_kb=2, lab_items=3)  # fmt: skip
    src = create_engine(url)
    with src.begin() as conn:
        forms = [
            r.report_form_no for r in conn.execute(text("select report_form_no from labmaster order by 1"))
        ]
        long_title, too_early = forms[0], forms[1]
        conn.execute(text("update labmaster set report_title = :t where report_form_no = :f"),
                     {"t": LONG_TITLE, "f": long_title})  # fmt: skip
        conn.execute(text(
            "update labmaster set participant_dtime = to_char(authenticator_dtime::timestamp + interval '1 hour', "
            "'YYYY-MM-DD HH24:MI:SS') where report_form_no = :f"), {"f": too_early})  # fmt: skip
    src.dispose()
    site_dir = tmp_path_factory.mktemp("site")
    (site_dir / "spec-options.json").write_text(json.dumps(PROFILE))
    (site_dir / "rules.json").write_text(json.dumps(SITE_RULES))
    monkeypatch_module.setenv("HURREN_SITE_DIR", str(site_dir))
    monkeypatch_module.setenv("HURREN_PLATFORM_SM2_MODE", "C1C2C3")
    store_url = make_database("hurren_site14_store")
    sources = configure_region(monkeypatch_module, tmp_path_factory,
                               [{"id": "site14", "org_code": h.org_code, "org_name": h.name}], {"site14": url},
                               store_url=store_url, bucket=s3.bucket_reports, sim=sim)  # fmt: skip
    engine = create_engine(store_url)
    store.create_all(engine)
    yield {"source": sources.get("site14"), "engine": engine, "forms": forms, "long_title": long_title,
           "too_early": too_early}  # fmt: skip
    engine.dispose()


@pytest.fixture(scope="module")
def pushed(region, run_dag):
    result = run_dag(dagfactory.report_dag(region["source"], "lab", doc_md="e2e"), logical_date=UNTIL)
    assert result.state == "success", result.summary()
    loaded = result.xcom("extract_validate_load")
    push = run_dag("push_reports", logical_date=UNTIL, timeout=180)
    assert push.state == "success", push.summary()
    return loaded, push.xcom("push")


def test_the_site_is_resolved_from_its_directory(region):
    here = site()
    assert here.spec_options == spec.SpecOptions.from_mapping(PROFILE)
    assert here.spec_options_origin.endswith("spec-options.json")
    assert here.rulebook.severity("dtime_order", "labmaster", "authenticator_dtime") == "error"
    assert rules.load_rulebook().severity("dtime_order", "labmaster", "authenticator_dtime") == "warning"


def test_the_store_and_the_validation_follow_the_profile(region, pushed):
    loaded, _ = pushed
    assert loaded["extracted"] == len(region["forms"])
    assert loaded["quarantined"] == 1 and loaded["errors_by_rule"] == {"dtime_order": 1}, loaded
    assert loaded["loaded"] == len(region["forms"]) - 1
    m = store.SPEC_TABLES["labmaster"]
    with region["engine"].connect() as conn:
        titles = dict(conn.execute(select(m.c.report_form_no, m.c.report_title)).all())
        held = conn.execute(select(store.quarantine.c.report_form_no, store.quarantine.c.rules)).all()
    assert titles[region["long_title"]] == LONG_TITLE
    assert region["too_early"] not in titles
    assert [r.report_form_no for r in held] == [region["too_early"]]
    assert {r["rule"] for r in json.loads(held[0].rules)} == {"dtime_order"}
    # under the spec's defaults the title breaks its length (D14: bytes), and dtime_order only warns
    assert (
        spec.DEFAULT_OPTIONS.measured_length(LONG_TITLE)
        > 256
        >= site().spec_options.measured_length(LONG_TITLE)
    )
    length = [c for c in rules.plan("labmaster", spec.DEFAULT_OPTIONS).checks
              if c.rule == "length" and c.field == "report_title"]  # fmt: skip
    assert [c.check for c in length] == ["bytes"]


def test_the_platform_holds_what_the_profile_allows_and_the_xml_follows_it(region, sim, pushed):
    on_platform = {r["key"]["report_form_no"]: r for r in sim.platform.store.report_keys("lab")}
    assert sorted(on_platform) == sorted(set(region["forms"]) - {region["too_early"]})
    got = sim.platform.store.report("lab", tuple(on_platform[region["long_title"]]["key"].values()))
    assert got is not None and got.master["report_title"] == LONG_TITLE
    entity, master = spec.entity("labmaster"), {**got.master, "pdf": PDF}  # the simulator keeps PDFs apart
    assert checks.check_record(entity, master, index=None, options=site().spec_options) == []
    refused = checks.check_record(entity, master, index=None, options=spec.DEFAULT_OPTIONS)
    assert [p.field for p in refused] == ["report_title"], refused  # the default platform refuses it
    ours = payloads.build_report("lab", got.master, got.items, options=site().spec_options)
    theirs = payloads.build_report("lab", got.master, got.items, options=spec.DEFAULT_OPTIONS)
    assert not ours.startswith(b"<?xml") and theirs.startswith(b"<?xml")
