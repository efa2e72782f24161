"""The client against the simulator over real HTTP on loopback: all ten methods, bad inputs, threads, CLIs.

The simulator runs in a background thread of the test process (a free port per module); the
command-line tests run ``python -m hurren.platform`` / ``python -m hurren_testkit.simulator`` as
subprocesses against it. No test needs the services of ``scripts/services``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from hurren import crypto
from hurren.platform import (
    Ack,
    AnswerError,
    BusinessError,
    ConfigurationError,
    Credential,
    HTTPStatusError,
    PayloadError,
    PlatformClient,
    QueryResult,
    SoapFault,
)
from hurren.platform import xml as px
from hurren.platform.envelope import open_request, seal_answer, unwrap
from hurren.platform.methods import METHODS
from hurren.spec import DEFAULT_OPTIONS, SpecOptions
from hurren_testkit import samples
from hurren_testkit.simulator import Simulator, SimulatorConfig, Visitor

ROOT = Path(__file__).resolve().parents[2]
PRIVATE, PUBLIC = crypto.generate_keypair()
ORG = "457759922"
ORG_NAME = "昌吉市人民医院"
VISITOR_CODE, VISITOR_KEY = "hosp-visitor", "hosp-Secret-Key-1"
CREDENTIAL = Credential(org_code=ORG, org_name=ORG_NAME, visitor_code=VISITOR_CODE, visitor_key=VISITOR_KEY)
ID_NO = samples.SAMPLE_ID_NO
DECLARED = b'<?xml version="1.0" encoding="UTF-8"?>\n'  # D21: the simulator's default profile wants it


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        port=0,
        private_key=PRIVATE,
        visitors=(Visitor(org_code=ORG, code=VISITOR_CODE, key=VISITOR_KEY, org_name=ORG_NAME),),
    )
    with Simulator(config=config) as s:
        yield s


@pytest.fixture(scope="module")
def client(sim: Simulator) -> Iterator[PlatformClient]:
    with PlatformClient(
        endpoint=sim.url,
        credential=CREDENTIAL,
        public_key=sim.public_key,
        timeout=10,
        spec_options=DEFAULT_OPTIONS,
    ) as c:
        yield c


@pytest.fixture(autouse=True)
def clean(sim: Simulator, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    sim.platform.reset()
    caplog.set_level(logging.INFO, logger="hurren_testkit.simulator")
    yield
    # no traceback on the simulator's side, whatever the test sent it
    assert "Traceback" not in caplog.text
    assert not [
        r
        for r in caplog.records
        if r.name.startswith("hurren_testkit.simulator") and r.levelno >= logging.ERROR
    ]


def admin(sim: Simulator, path: str) -> Any:
    return httpx.get(f"{sim.admin_url}/{path}", timeout=5).raise_for_status().json()


def stored(sim: Simulator) -> dict[str, int]:
    return admin(sim, "received")["stored"]


def lab(**kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return samples.lab_report(**kwargs)


def exam(**kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return samples.exam_report(**kwargs)


# --------------------------------------------------------------------------------------------
# the ten methods
# --------------------------------------------------------------------------------------------


def test_archive_lab_report_with_a_130kb_pdf(sim: Simulator, client: PlatformClient) -> None:
    master, items = lab(items=3, pdf_size=130_000)
    assert client.archive_lab_report(master, items) == Ack(method="ArchiveAutoReport", text=None)
    [report] = admin(sim, "reports?kind=lab")["reports"]
    assert report["key"] == {
        "org_code": ORG,
        "report_form_no": "14437173",
        "patient_id": "1878",
        "event_type": "1",
        "event_no": "1878",
    }
    assert report["items"] == 3
    assert report["pdf_bytes"] == len(master["pdf"])
    assert report["pdf_sha256"] == hashlib.sha256(master["pdf"]).hexdigest()
    assert ID_NO not in json.dumps(admin(sim, "reports"))  # inspection never shows identifiers


def test_resubmission_replaces_master_and_sub_items(sim: Simulator, client: PlatformClient) -> None:
    master, items = lab(items=3)
    client.archive_lab_report(master, items)
    client.archive_lab_report(dict(master, report_title="复查报告"), items[:1])
    assert stored(sim)["labmaster"] == 1 and stored(sim)["lab_subitem"] == 1
    report = sim.platform.store.report("lab", [ORG, "14437173", "1878", "1", "1878"])
    assert report is not None and report.master["report_title"] == "复查报告"


def test_archive_exam_report(sim: Simulator, client: PlatformClient) -> None:
    assert client.archive_exam_report(*exam(items=2)).text is None
    assert stored(sim)["exammaster"] == 1 and stored(sim)["exam_subitem"] == 2


def test_archive_daily_counts(sim: Simulator, client: PlatformClient) -> None:
    client.archive_daily_counts(samples.daily_counts())
    client.archive_daily_counts(samples.daily_counts())  # same keys: upserted, not doubled
    assert stored(sim)["lab_exam_report"] == 2


def test_submit_accept_and_quote(sim: Simulator, client: PlatformClient) -> None:
    assert client.submit_accept(samples.accept_records(codes=("a", "b"), is_accept="2")) == Ack(
        method="SubmitAccept"
    )
    assert client.submit_quote(samples.quote_records(codes=("a",))) == Ack(method="SubmitQuote")
    assert stored(sim)["sehr_accept_record"] == 2 and stored(sim)["sehr_quote_record"] == 1


def test_void_of_an_unquoted_report_is_ok(sim: Simulator, client: PlatformClient) -> None:
    master, items = lab()
    client.archive_lab_report(master, items)
    assert client.delete_lab_report(master) == Ack(method="DeleteLabInfo", text=None)
    assert stored(sim)["voided"] == 1
    assert client.delete_lab_report(master).text is None  # a retried void is not an error
    assert client.get_check_lab_list(id_no=ID_NO, id_type="01").empty


def test_void_of_a_quoted_report_keeps_the_quoting_text(sim: Simulator, client: PlatformClient) -> None:
    master, items = exam()
    client.archive_exam_report(master, items)
    client.submit_quote(
        samples.quote_records(report_form_no=master["report_form_no"], codes=("115",), type_="1")
    )
    ack = client.delete_exam_report(master)
    assert ack.quoted and ack.text == f"{ORG_NAME} 急诊外科 郑伟军"
    # a resubmission revives the report
    client.archive_exam_report(master, items)
    assert stored(sim)["voided"] == 0


def test_void_of_an_unknown_report_is_refused(client: PlatformClient) -> None:
    with pytest.raises(BusinessError, match="no lab report registered with this key") as info:
        client.delete_lab_report(lab()[0])
    assert not info.value.retryable


def test_void_with_another_persons_id_is_refused(client: PlatformClient) -> None:
    master, items = lab()
    client.archive_lab_report(master, items)
    with pytest.raises(BusinessError, match="id_no/id_type do not match") as info:
        client.delete_lab_report(dict(master, id_no="650000190001019999"))
    assert "650000190001019999" not in str(info.value)


def _load_person(client: PlatformClient, *, old: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    lab_master, lab_items = lab(items=3)
    exam_master, exam_items = exam(items=2)
    client.archive_lab_report(lab_master, lab_items)
    client.archive_exam_report(exam_master, exam_items)
    if old:
        long_ago = datetime.now(px.BEIJING).replace(tzinfo=None) - timedelta(days=100)
        client.archive_lab_report(*lab(report_form_no="OLD-1", when=long_ago))
    return lab_master, exam_master


def test_get_check_lab_list(client: PlatformClient) -> None:
    _load_person(client, old=True)
    result = client.get_check_lab_list(id_no=ID_NO, id_type="01")
    assert isinstance(result, QueryResult)
    kinds = sorted((r["type"], r["item_code"], r["recognition"]) for r in result["item"])
    assert kinds == [
        ("check", "115", "1"),
        ("check", "116", "1"),
        ("lab", "A01", "1"),
    ]  # OLD-1 is out of the window
    assert all(r["org_name"] == ORG_NAME and r["expired_time"] for r in result["item"])


def test_get_check_lab_info(client: PlatformClient) -> None:
    _load_person(client)
    result = client.get_check_lab_info(id_no=ID_NO, id_type="01", event_no="5036612")
    assert result.counts() == {"exammaster": 1, "exam_subitem": 2, "labmaster": 1, "lab_subitem": 3}
    exam_master = result["exammaster"][0]
    assert exam_master["patient_condition_desc"] == "无"  # sent as patient_condition_descr (D2)
    assert "pdf" not in exam_master and exam_master["pdf_url"].startswith("http://")
    recognised = [i for i in result["lab_subitem"] if i["recognition"] == "1"]
    assert recognised and all(i["expired_time"] for i in recognised)
    assert all(i["expired_time"] == "" for i in result["lab_subitem"] if i["recognition"] == "0")


def test_exists_recure_info(client: PlatformClient) -> None:
    _load_person(client)
    result = client.exists_recure_info(
        id_no=ID_NO,
        id_type="01",
        event_no="5036612",
        dept_code="ZSBY-10",
        doc_code="9050",
        check=["115", "999"],
        lab=["250301002", "AG"],  # AG is not recognised (recognition 0)
    )
    [lab_master] = result["labmaster"]
    assert [i["item_code"] for i in lab_master["items"]] == ["250301002"]
    assert lab_master["items"][0]["lower_value"] == "40.0000"
    assert [e["item_code"] for e in result["exammaster"]] == ["115"]
    assert client.exists_recure_info(id_no=ID_NO, id_type="01", check=["nope"]).empty


def test_get_lab_info_by_accepted_items(client: PlatformClient) -> None:
    lab_master, _ = _load_person(client)
    assert client.get_lab_info(id_no=ID_NO, id_type="01", event_no="5036612").empty  # nothing accepted yet
    client.submit_accept(samples.accept_records(codes=("250301002", "250306005")))
    [master] = client.get_lab_info(id_no=ID_NO, id_type="01", event_no="5036612")["labmaster"]
    assert master["report_form_no"] == lab_master["report_form_no"] and master["org_name"] == ORG_NAME
    assert sorted(i["class_code"] for i in master["items"]) == ["250301002", "250306005"]
    everything = client.get_lab_info(id_no=ID_NO, id_type="01")
    assert len(everything["labmaster"][0]["items"]) == 3


def test_get_exam_info_reads_the_answers_spellings(client: PlatformClient) -> None:
    _, exam_master = _load_person(client)
    client.submit_accept(
        samples.accept_records(report_form_no=exam_master["report_form_no"], codes=("116",), type_="1")
    )
    [row] = client.get_exam_info(id_no=ID_NO, id_type="01", event_no="5036612")["exammaster"]
    assert row["exam_item_code"] == "116"
    assert row["outpat_diag_name"] == exam_master["outpat_diag_name"]  # answered as outpatient_diag_name (D2)
    assert row["patient_condition_desc"] == "无"


def test_queries_for_nobody_are_empty(client: PlatformClient) -> None:
    for call in (
        client.get_check_lab_list,
        client.get_check_lab_info,
        client.get_lab_info,
        client.get_exam_info,
    ):
        assert call(id_no="650000190001019999", id_type="01").empty


def test_every_method_is_counted(sim: Simulator, client: PlatformClient) -> None:
    master, items = lab()
    client.archive_lab_report(master, items)
    client.submit_accept(samples.accept_records())
    client.submit_quote(samples.quote_records())
    client.get_check_lab_list(id_no=ID_NO, id_type="01")
    client.get_check_lab_info(id_no=ID_NO, id_type="01")
    client.exists_recure_info(id_no=ID_NO, id_type="01", lab=["250301002"])
    client.get_lab_info(id_no=ID_NO, id_type="01")
    client.get_exam_info(id_no=ID_NO, id_type="01")
    client.delete_lab_report(master)
    with pytest.raises(BusinessError):
        client.delete_exam_report(exam()[0])
    received = admin(sim, "received")
    assert set(received["calls"]) == {
        "ArchiveAutoReport",
        "SubmitAccept",
        "SubmitQuote",
        "GetCheckLabList",
        "GetCheckLabInfo",
        "ExistsReCureInfo",
        "GetLabInfo",
        "GetExamInfo",
        "DeleteLabInfo",
        "DeleteExamInfo",
    }
    assert received["decrypted_payloads"] == 10
    assert received["answers"] == {
        "ok": 3,
        "ok:text": 1,
        "query": 5,
        "error": 1,
    }  # the void is of a quoted report


# --------------------------------------------------------------------------------------------
# WSDL, keep-alive, threads
# --------------------------------------------------------------------------------------------


def test_live_wsdl_is_served_with_this_address(sim: Simulator) -> None:
    text = httpx.get(sim.url + "?wsdl", timeout=5).text
    assert f'location="{sim.url}"' in text
    with PlatformClient(
        endpoint=sim.url, credential=CREDENTIAL, public_key=PUBLIC, wsdl="live", spec_options=DEFAULT_OPTIONS
    ) as live:
        assert live.wsdl == sim.url + "?wsdl"
        assert live.archive_daily_counts(samples.daily_counts()).text is None


def test_a_missing_wsdl_is_a_configuration_error(sim: Simulator, tmp_path: Path) -> None:
    with PlatformClient(
        endpoint=sim.url,
        credential=CREDENTIAL,
        public_key=PUBLIC,
        wsdl=tmp_path / "nope.wsdl",
        spec_options=DEFAULT_OPTIONS,
    ) as bad:
        with pytest.raises(ConfigurationError, match="cannot use the WSDL"):
            bad.get_check_lab_list(id_no=ID_NO, id_type="01")


def test_concurrent_calls_from_a_thread_pool(sim: Simulator) -> None:
    with PlatformClient(
        endpoint=sim.url,
        credential=CREDENTIAL,
        public_key=PUBLIC,
        pool_size=8,
        key_max_uses=25,
        spec_options=DEFAULT_OPTIONS,
    ) as shared:

        def work(n: int) -> str:
            if n % 4 == 3:
                return str(shared.get_check_lab_list(id_no=ID_NO, id_type="01").counts())
            master, items = lab(report_form_no=f"T-{n}", items=2)
            return str(shared.archive_lab_report(master, items))

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(80)))
    assert len(results) == 80
    assert stored(sim)["labmaster"] == 60 and stored(sim)["lab_subitem"] == 120
    received = admin(sim, "received")
    assert received["answers"] == {"ok": 60, "query": 20}


def test_client_repr_and_pickling_hide_credentials(client: PlatformClient) -> None:
    assert VISITOR_KEY not in repr(client) and VISITOR_CODE not in repr(client)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(client)


# --------------------------------------------------------------------------------------------
# bad inputs: a clear error, no traceback on either side
# --------------------------------------------------------------------------------------------


def test_wrong_platform_key(sim: Simulator) -> None:
    _, other_public = crypto.generate_keypair()
    with PlatformClient(
        endpoint=sim.url, credential=CREDENTIAL, public_key=other_public, spec_options=DEFAULT_OPTIONS
    ) as wrong:
        with pytest.raises(BusinessError, match="strKey: SM2 C3 check failed") as info:
            wrong.archive_daily_counts(samples.daily_counts())
    assert admin(sim, "received")["refused_by_part"] == {"strKey": 1}
    assert VISITOR_KEY not in str(info.value)


@pytest.mark.parametrize(
    "options,message",
    [
        (crypto.CryptoOptions(mode="C1C2C3"), "laid out as C1C2C3"),
        (crypto.CryptoOptions(with_04_prefix=False), "without the 04 prefix"),
        (crypto.CryptoOptions(key_form="hex"), "key_form='hex'"),
    ],
    ids=["sm2-mode", "04-prefix", "key-form"],
)
def test_wrong_ciphertext_layout(sim: Simulator, options: crypto.CryptoOptions, message: str) -> None:
    with PlatformClient(
        endpoint=sim.url,
        credential=CREDENTIAL,
        public_key=PUBLIC,
        crypto_options=options,
        spec_options=DEFAULT_OPTIONS,
    ) as wrong:
        with pytest.raises(BusinessError, match=message):
            wrong.get_check_lab_list(id_no=ID_NO, id_type="01")


def test_wrong_credential(sim: Simulator) -> None:
    bad = Credential(org_code=ORG, org_name=ORG_NAME, visitor_code=VISITOR_CODE, visitor_key="guessed")
    with PlatformClient(
        endpoint=sim.url, credential=bad, public_key=PUBLIC, spec_options=DEFAULT_OPTIONS
    ) as wrong:
        with pytest.raises(BusinessError, match="strCredential: unknown visitor or wrong key") as info:
            wrong.submit_quote(samples.quote_records())
    assert "guessed" not in str(info.value) and VISITOR_CODE not in str(info.value)


def _sealed(client: PlatformClient, payload: bytes) -> tuple[str, str, str]:
    s = client.seal(payload)
    return s.payload, s.credential, s.key


def _cut(text: str, n: int) -> str:
    return base64.b64encode(base64.b64decode(text)[:-n]).decode()


@pytest.mark.parametrize(
    "mangle,message",
    [
        (lambda p, c, k: (p[:-2] + "*=", c, k), "strReportInfo: strReportInfo is not valid Base64"),
        (lambda p, c, k: (_cut(p, 7), c, k), "strReportInfo: SM4 ciphertext is .* not a positive multiple"),
        (lambda p, c, k: (p, "%%%", k), "strCredential: .*Base64"),
        (lambda p, c, k: (p, c, "not-base64"), "strKey: .*Base64"),
        (lambda p, c, k: (p, c, ""), "strKey: SM2 ciphertext"),
        (lambda p, c, k: ("", "", ""), "strKey"),
    ],
    ids=[
        "corrupted-base64",
        "truncated-ciphertext",
        "corrupted-credential",
        "corrupted-key",
        "empty-key",
        "all-empty",
    ],
)
def test_mangled_strings(client: PlatformClient, mangle, message: str) -> None:
    payload, credential, key = mangle(
        *_sealed(client, px.build_daily_counts(samples.daily_counts(), options=DEFAULT_OPTIONS))
    )
    answer = client.invoke("ArchiveAutoReport", payload=payload, credential=credential, key=key)
    assert answer.startswith("error:")
    assert re.search(message, answer), answer


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_envelope_written_from_a_template_is_zeeps_own(client: PlatformClient, method: str) -> None:
    """The client fills a per-method envelope rendered once by zeep (``_Envelopes``): the bytes must be
    those zeep writes for the same call. An argument that needs escaping goes through zeep itself."""
    from zeep.wsdl.utils import etree_to_string

    envelopes = client._service_proxy()
    service = envelopes.service
    args = _sealed(client, px.build_daily_counts(samples.daily_counts(), options=DEFAULT_OPTIONS))
    sent: list[bytes] = []
    transport = service._client.transport
    real_post = transport.post
    transport.post = lambda address, message, headers: (
        sent.append(message) or real_post(address, message, headers)
    )
    try:
        client.invoke(method, payload=args[0], credential=args[1], key=args[2])
        envelope, _ = service._binding._create(
            method, args, {}, client=service._client, options=service._binding_options
        )
        assert sent[0] == etree_to_string(envelope)
        assert envelopes._parts[method] is not None  # it was the template that wrote it
        client.invoke(method, payload="a<b & c", credential=args[1], key=args[2])
        assert b"a&lt;b &amp; c" in sent[1]
    finally:
        transport.post = real_post


@pytest.mark.parametrize(
    "payload,message",
    [
        (b"<root><labmaster><item/></labmaster>", "strReportInfo: strReportInfo is not well-formed XML"),
        (b"<root>&#1;</root>", "not well-formed"),
        (b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><root>&x;</root>', "DOCTYPE"),
        (DECLARED + b"<root><something/></root>", "ArchiveAutoReport takes labmaster"),
        (DECLARED + b"<root><labmaster/><exam_subitem/></root>", "ArchiveAutoReport takes"),
        (DECLARED + b"<root><labmaster/></root>", "labmaster: no report in the payload"),
        ("<root>维吾尔</root>".encode("gbk"), "not well-formed"),
    ],
    ids=["unclosed", "char-ref", "xxe", "unknown-element", "mixed", "no-item", "wrong-encoding"],
)
def test_malformed_payloads(client: PlatformClient, payload: bytes, message: str) -> None:
    with pytest.raises(BusinessError, match=message):
        client.call("ArchiveAutoReport", payload)


def test_illegal_characters_never_leave_the_client(sim: Simulator, client: PlatformClient) -> None:
    master, items = lab()
    with pytest.raises(PayloadError, match=r"labmaster\.report_title: character U\+0001"):
        client.archive_lab_report(dict(master, report_title="血常规\x01"), items)
    assert admin(sim, "received")["calls"] == {}


def _refusal(
    client: PlatformClient, master: dict[str, Any], items: list[dict[str, Any]], kind: str = "lab"
) -> str:
    with pytest.raises(BusinessError) as info:
        client.archive_report(kind, master, items)
    return info.value.reason


def test_oversize_fields_are_measured_in_bytes_d14(client: PlatformClient) -> None:
    master, items = lab()
    reason = _refusal(client, dict(master, report_title="T" * 257, class_name="检" * 43), items)
    assert "labmaster[0].report_title: 257 bytes of utf-8 exceeds VARCHAR2(256)" in reason
    assert "labmaster[0].class_name: 129 bytes of utf-8 exceeds VARCHAR2(128)" in reason  # 43 characters


def test_unknown_dictionary_codes(client: PlatformClient) -> None:
    master, items = exam()
    reason = _refusal(
        client,
        dict(master, sex_code="F", participant_dept_std_code="1411", class_code="A01"),
        [dict(items[0], recognition=3)],
        kind="exam",
    )
    assert "exammaster[0].sex_code: code 'F' is not in STD_SEX" in reason  # D5
    assert "exammaster[0].participant_dept_std_code: code '1411' is not in STD_DEPT" in reason  # D10
    assert "exammaster[0].class_code: code 'A01' is not in Modality" in reason  # D4
    assert "exam_subitem[0].recognition: code '3' is not in STD_LAB_EXAM_RECOGNITION" in reason


def test_formats_numbers_nulls_and_pdf(client: PlatformClient) -> None:
    master, items = lab()
    reason = _refusal(
        client,
        dict(
            master,
            name=None,
            authenticator_dtime="2024/03/11 09:29",
            retrieve_date="2024-02-30",
            event_type="abc",
            pdf=b"not a pdf",
        ),
        [dict(items[0], serial_no=12345678901)],
    )
    for expected in (
        "labmaster[0].name: is empty but required",
        "labmaster[0].authenticator_dtime: '2024/03/11 09:29' is not a datetime YYYY-MM-DD HH:MM:SS",
        "labmaster[0].retrieve_date: '2024-02-30' is not a date YYYY-MM-DD",
        "labmaster[0].event_type: 'abc' is not a whole number (NUMBER(2))",
        "labmaster[0].pdf: is not a PDF",
    ):
        assert expected in reason
    assert "(and " in reason or "lab_subitem[0].serial_no" in reason


def test_refusals_never_echo_patient_identifiers(client: PlatformClient) -> None:
    master, items = exam()
    name, id_no = "患者真名" * 20, "6" * 130
    reason = _refusal(
        client, dict(master, name=name, id_no=id_no, birth_date="1967-13-01"), items, kind="exam"
    )
    assert (
        "exammaster[0].id_no: 130 bytes" in reason
        and "exammaster[0].birth_date: <hidden> is not a date" in reason
    )
    assert name[:4] not in reason and id_no not in reason and "1967-13-01" not in reason


def test_accept_refusal_requires_a_reason(client: PlatformClient) -> None:
    records = samples.accept_records(is_accept="2")
    records[0]["reason"] = None
    with pytest.raises(
        BusinessError, match=r"sehr_accept_record\[0\]\.reason: is required when is_accept is 2"
    ):
        client.submit_accept(records)


def test_bad_query_filters(client: PlatformClient) -> None:
    with pytest.raises(BusinessError, match="id_type '9X' is not in STD_ID_TYPE"):
        client.get_check_lab_list(id_no=ID_NO, id_type="9X")
    with pytest.raises(BusinessError, match="id_no is missing or empty"):
        client.get_lab_info(id_no="", id_type="01")


# --------------------------------------------------------------------------------------------
# answers our simulator never gives: a fake session in place of the network
# --------------------------------------------------------------------------------------------


class FakeSession(requests.Session):
    """Answers every POST with the given status, content type and body."""

    def __init__(
        self, body: bytes, *, status: int = 200, content_type: str = "text/xml; charset=utf-8"
    ) -> None:
        super().__init__()
        self.body, self.status, self.content_type = body, status, content_type

    def post(self, url: str | bytes, data: Any = None, json: Any = None, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.headers["Content-Type"] = self.content_type
        response.url = str(url)
        return response


def _soap(result: str | None, method: str = "GetLabInfo") -> bytes:
    inner = "" if result is None else f"<{method}Result>{result}</{method}Result>"
    return (
        '<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<soap:Body><{method}Response xmlns="http://tempuri.org/">{inner}</{method}Response></soap:Body></soap:Envelope>'
    ).encode()


def _fault(code: str) -> bytes:
    return (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault>'
        f"<faultcode>soap:{code}</faultcode><faultstring>Server was unable to read request.</faultstring>"
        "</soap:Fault></soap:Body></soap:Envelope>"
    ).encode()


@pytest.mark.parametrize(
    "session,error,message",
    [
        (FakeSession(_soap("ok")), AnswerError, "answered 'ok' where encrypted XML was expected"),
        (FakeSession(_soap(None)), AnswerError, "answered nothing"),
        (FakeSession(_soap("QUJDRA==")), AnswerError, "cannot decrypt the GetLabInfo answer"),
        (FakeSession(_soap("not base64!")), AnswerError, "neither ok/error nor Base64"),
        (FakeSession(b"<html><body>maintenance</body>"), AnswerError, "not well-formed"),
        (
            FakeSession(b'<!DOCTYPE x [<!ENTITY a "b">]>' + _soap("ok")),
            AnswerError,
            "contains a DOCTYPE; refused",
        ),
        (FakeSession(_fault("Client"), status=500), SoapFault, r"SOAP fault \(Client\): Server was unable"),
        (FakeSession(_fault("Server"), status=500), SoapFault, r"SOAP fault \(Server\): Server was unable"),
        (FakeSession(b"busy", status=503, content_type="text/plain"), HTTPStatusError, "HTTP 503"),
    ],
    ids=[
        "ok-to-a-query",
        "empty",
        "undecryptable",
        "not-base64",
        "not-xml",
        "doctype",
        "client-fault",
        "server-fault",
        "503",
    ],
)
def test_answers_we_cannot_use(session: FakeSession, error: type[Exception], message: str) -> None:
    with PlatformClient(
        endpoint="http://platform.invalid/Myhealth",
        credential=CREDENTIAL,
        public_key=PUBLIC,
        session=session,
        spec_options=DEFAULT_OPTIONS,
    ) as c:
        with pytest.raises(error, match=message) as info:
            c.get_lab_info(id_no=ID_NO, id_type="01")
    if isinstance(info.value, HTTPStatusError):
        assert info.value.retryable == (info.value.status_code != 400)
    if isinstance(info.value, SoapFault):  # the request's fault is a refusal, the server's a failure
        assert info.value.retryable == (info.value.code == "Server")
        assert info.value.text == "Server was unable to read request."


def test_a_submit_answered_with_encrypted_text_is_an_answer_error() -> None:
    session = FakeSession(_soap("QUJDRA==", method="SubmitQuote"))
    with PlatformClient(
        endpoint="http://platform.invalid/Myhealth",
        credential=CREDENTIAL,
        public_key=PUBLIC,
        session=session,
        spec_options=DEFAULT_OPTIONS,
    ) as c:
        with pytest.raises(AnswerError, match="answered neither ok nor error"):
            c.submit_quote(samples.quote_records())


@pytest.mark.parametrize(
    "body,status,fault",
    [
        (b"not xml", 500, "not well-formed"),
        (b"<Envelope/>", 500, "SOAP 1.1"),
        (
            b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>',
            500,
            "no method element",
        ),
        (
            b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Nope/></s:Body></s:Envelope>',
            500,
            "no method 'Nope'",
        ),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', 500, "DOCTYPE"),
    ],
    ids=["not-xml", "not-soap-11", "empty-body", "unknown-method", "doctype"],
)
def test_malformed_soap_gets_a_fault(sim: Simulator, body: bytes, status: int, fault: str) -> None:
    response = httpx.post(sim.url, content=body, headers={"Content-Type": "text/xml"}, timeout=5)
    assert response.status_code == status
    assert "<faultcode>soap:" in response.text and fault in response.text


def test_unqualified_parameters_are_answered_unqualified(sim: Simulator, client: PlatformClient) -> None:
    # a JAX-WS style request: method element qualified, parameters not
    payload, credential, key = _sealed(
        client, px.build_query_filter("GetCheckLabList", id_no=ID_NO, id_type="01", options=SpecOptions())
    )
    body = (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<m:GetCheckLabList xmlns:m="http://ws.example/"><strFilter>{payload}</strFilter>'
        f"<strCredential>{credential}</strCredential><strKey>{key}</strKey></m:GetCheckLabList></s:Body></s:Envelope>"
    ).encode()
    text = httpx.post(sim.url, content=body, timeout=5).text
    assert '<m:GetCheckLabListResponse xmlns:m="http://ws.example/"><GetCheckLabListResult>' in text


def test_a_wrong_path_is_an_http_status_error(sim: Simulator) -> None:
    with PlatformClient(
        endpoint=sim.url + "-missing", credential=CREDENTIAL, public_key=PUBLIC, spec_options=DEFAULT_OPTIONS
    ) as lost:
        with pytest.raises(HTTPStatusError) as info:
            lost.get_check_lab_list(id_no=ID_NO, id_type="01")
    assert info.value.status_code == 404 and not info.value.retryable


# --------------------------------------------------------------------------------------------
# command lines
# --------------------------------------------------------------------------------------------


def _cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'plugins'}{os.pathsep}{ROOT / 'testkit'}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        input=None if stdin is None else stdin.decode(),
    )


def _platform_env(sim: Simulator) -> dict[str, str]:
    return {
        "HURREN_PLATFORM_URL": sim.url,
        "HURREN_PLATFORM_PUBLIC_KEY": sim.public_key,
        "HURREN_PLATFORM_ORG_CODE": ORG,
        "HURREN_PLATFORM_ORG_NAME": ORG_NAME,
        "HURREN_PLATFORM_VISITOR_CODE": VISITOR_CODE,
        "HURREN_PLATFORM_VISITOR_KEY": VISITOR_KEY,
    }


def test_cli_sample_send_query(sim: Simulator, tmp_path: Path) -> None:
    env = _platform_env(sim)
    sample = _cli("hurren_testkit.samples", "lab")
    assert sample.returncode == 0 and sample.stdout.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    (tmp_path / "lab.xml").write_text(sample.stdout, encoding="utf-8")
    sent = _cli("hurren.platform", "send", "ArchiveAutoReport", str(tmp_path / "lab.xml"), env=env)
    assert (sent.returncode, sent.stdout.strip(), sent.stderr) == (0, "ok", "")
    query = _cli("hurren.platform", "query", "GetCheckLabList", "--id-no", ID_NO, "--id-type", "01", env=env)
    assert query.returncode == 0 and '<item type="lab"' in query.stdout
    recure = _cli(
        "hurren.platform", "query", "ExistsReCureInfo", "--id-no", ID_NO, "--lab", "250301002", env=env
    )
    assert recure.returncode == 0 and 'item_code="250301002"' in recure.stdout
    refused = _cli("hurren.platform", "query", "GetLabInfo", "--id-no", ID_NO, "--id-type", "XX", env=env)
    assert refused.returncode == 1 and refused.stdout.startswith("error:strFilter: id_type")
    assert "Traceback" not in sent.stderr + query.stderr + refused.stderr


def test_cli_send_and_query_seal_as_the_client_does_in_gbk(tmp_path: Path) -> None:
    """``send`` and ``query`` take the client's own sealing path: under ``--text-encoding gbk`` a
    UTF-8 payload file and a query filter reach a GBK platform in GBK, declared so (D21), like the
    credential (main sent the file's UTF-8 bytes as they were and built filters in UTF-8)."""
    gbk = crypto.CryptoOptions(text_encoding="gbk")
    received: list[tuple[str, bytes]] = []
    with Simulator(config=SimulatorConfig(port=0, private_key=PRIVATE, crypto_options=gbk)) as sim_gbk:
        handle = sim_gbk.platform.handle

        def recording(method_name: str, params: Any) -> str:
            m = METHODS[method_name]
            key = unwrap(params["strKey"], PRIVATE, options=gbk)
            opened = open_request(payload=params[m.payload_param], credential=params["strCredential"], key=key,
                                  payload_param=m.payload_param, options=gbk)  # fmt: skip
            received.append((method_name, opened.payload))
            return handle(method_name, params)

        sim_gbk.platform.handle = recording
        env = {**_platform_env(sim_gbk), "HURREN_PLATFORM_TEXT_ENCODING": "gbk"}
        (tmp_path / "lab.xml").write_text(_cli("hurren_testkit.samples", "lab").stdout, encoding="utf-8")
        sent = _cli("hurren.platform", "send", "ArchiveAutoReport", str(tmp_path / "lab.xml"), env=env)
        asked = _cli("hurren.platform", "query", "ExistsReCureInfo", "--id-no", ID_NO, "--lab", "250301002",
                     "--dept-name", "耳鼻喉科", env=env)  # fmt: skip
    assert (sent.returncode, sent.stdout.strip(), sent.stderr) == (0, "ok", "")
    assert asked.returncode == 0 and 'item_code="250301002"' in asked.stdout, asked.stderr
    assert [m for m, _ in received] == ["ArchiveAutoReport", "ExistsReCureInfo"]
    for _, payload in received:
        assert payload.startswith(b'<?xml version="1.0" encoding="GBK"?>'), payload[:60]
    assert "检验".encode("gbk") in received[0][1] and "耳鼻喉科".encode("gbk") in received[1][1]
    assert "检验".encode() not in received[0][1]


def test_cli_errors_are_one_line(sim: Simulator, tmp_path: Path) -> None:
    env = _platform_env(sim)
    down = _cli(
        "hurren.platform",
        "query",
        "GetLabInfo",
        "--id-no",
        ID_NO,
        "--endpoint",
        "http://127.0.0.1:9/Myhealth",
        env=env,
    )
    assert down.returncode == 3 and down.stderr.startswith("platform: GetLabInfo: cannot connect")
    no_key = _cli(
        "hurren.platform",
        "query",
        "GetLabInfo",
        "--id-no",
        ID_NO,
        env={**env, "HURREN_PLATFORM_PUBLIC_KEY": ""},
    )
    assert no_key.returncode == 2 and "HURREN_PLATFORM_PUBLIC_KEY" in no_key.stderr
    missing = _cli("hurren.platform", "send", "ArchiveAutoReport", str(tmp_path / "missing.xml"), env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("platform: ")
    for result in (down, no_key, missing):
        assert "Traceback" not in result.stderr and VISITOR_KEY not in result.stderr + result.stdout


def test_cli_keygen_and_decrypt(tmp_path: Path) -> None:
    made = _cli("hurren.platform", "keygen", "--out", str(tmp_path / "key.json"))
    pair = json.loads((tmp_path / "key.json").read_text())
    assert made.stdout.strip() == pair["public_key"] == crypto.public_key_from_private(pair["private_key"])
    assert (tmp_path / "key.json").stat().st_mode & 0o777 == 0o600
    key = bytes(range(16))
    (tmp_path / "answer.txt").write_text(seal_answer('<root><item a="维"/></root>'.encode(), key))
    plain = _cli("hurren.platform", "decrypt", "--sm4-key", key.hex(), str(tmp_path / "answer.txt"))
    assert plain.returncode == 0 and '<item a="维"/>' in plain.stdout
    wrong = _cli("hurren.platform", "decrypt", "--sm4-key", "00" * 16, str(tmp_path / "answer.txt"))
    assert wrong.returncode == 3 and "cannot decrypt" in wrong.stderr and "Traceback" not in wrong.stderr


def test_simulator_runs_alone_and_stops_cleanly(tmp_path: Path) -> None:
    key_file = tmp_path / "sim-key.json"
    printed = _cli("hurren_testkit.simulator", "--key-file", str(key_file), "--print-public-key")
    assert (
        printed.returncode == 0 and printed.stdout.strip() == json.loads(key_file.read_text())["public_key"]
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'plugins'}{os.pathsep}{ROOT / 'testkit'}",
        "HURREN_SIM_KEY_FILE": str(key_file),
        "HURREN_SIM_VISITORS": f"{ORG}:{VISITOR_CODE}:{VISITOR_KEY}:{ORG_NAME}",
        "HURREN_SIM_FAULTS": '{"seed": 3}',
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hurren_testkit.simulator", "--port", "0", "--db", str(tmp_path / "sim.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = re.search(r"serving (http://\S+)", line).group(1)
        assert proc.stdout is not None and printed.stdout.strip() in proc.stdout.readline()
        with PlatformClient(
            endpoint=url,
            credential=CREDENTIAL,
            public_key=printed.stdout.strip(),
            spec_options=DEFAULT_OPTIONS,
        ) as c:
            assert c.archive_daily_counts(samples.daily_counts()).text is None
        assert httpx.get(url.rsplit("/", 1)[0] + "/_admin/faults", timeout=5).json()["seed"] == 3
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped" in out
    assert "Traceback" not in err and VISITOR_KEY not in out + err
    assert (tmp_path / "sim.db").exists()


def test_simulator_refuses_bad_settings() -> None:
    bad = _cli("hurren_testkit.simulator", "--faults", '{"error_rate": 2}')
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr and "Traceback" not in bad.stderr
    bad = _cli("hurren_testkit.simulator", "--visitor", "only-one-part")
    assert bad.returncode == 2 and "ORG_CODE:VISITOR_CODE:KEY" in bad.stderr


@pytest.mark.parametrize("rate, checked", [(0.0, 0), (0.25, 1)])
def test_fast_ack_stores_unchecked_reports_with_their_pdf_digest(rate: float, checked: int) -> None:
    """check_rate < 1 (benchmarks): only the sampled submissions are checked field by field, the
    first one included when the rate is above 0; every one is still decrypted and stored with its
    PDF's SHA-256, so what the platform holds stays verifiable."""
    config = SimulatorConfig(port=0, private_key=PRIVATE, check_rate=rate)
    with Simulator(config=config) as s, PlatformClient(endpoint=s.url, credential=CREDENTIAL,
                                                       public_key=s.public_key, timeout=10,
                                                       spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
        master, items = lab(items=2, pdf_size=5_000)
        bad = dict(master, sex_code="F")  # not in STD_SEX: refused when checked
        if checked:
            with pytest.raises(BusinessError, match="sex_code: code 'F' is not in STD_SEX"):
                c.archive_lab_report(bad, items)
        for n in range(3):
            own = [dict(i, report_form_no=f"F-{n}") for i in items]
            assert c.archive_lab_report(dict(bad, report_form_no=f"F-{n}"), own).text is None
        received = s.platform.received()
    assert (received["checked_payloads"], received["unchecked_payloads"]) == (checked, 3)
    assert received["stored"]["labmaster"] == 3 and received["stored"]["lab_subitem"] == 6
    assert {r["pdf_sha256"] for r in s.platform.store.report_keys("lab")} == {
        hashlib.sha256(master["pdf"]).hexdigest()
    }


def test_check_rate_is_between_0_and_1() -> None:
    bad = _cli("hurren_testkit.simulator", "--check-rate", "1.5")
    assert bad.returncode == 2 and "--check-rate must be between 0 and 1" in bad.stderr
