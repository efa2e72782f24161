"""Site decisions D21-D24 (docs/spec-decisions.md) against the simulator over real HTTP: the client
sends what the option says, and the simulator, given the same profile, enforces it.

D20 (update vs void) needs the store and the outbox: ``tests/integration/test_push_faults.py``.
D24 (ECB under one session key) is shown on the wire here and block by block in
``tests/unit/test_envelope.py``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from lxml import etree

from hurren import crypto
from hurren.platform import BusinessError, Credential, PlatformClient
from hurren.platform import xml as px
from hurren.spec import DEFAULT_OPTIONS, SpecOptions
from hurren_testkit import samples
from hurren_testkit.simulator import Simulator, SimulatorConfig

PRIVATE, _ = crypto.generate_keypair()
CREDENTIAL = Credential(org_code="457759922", org_name="昌吉市人民医院", visitor_code="v", visitor_key="k")
ID_NO = samples.SAMPLE_ID_NO
SOAP_11 = "http://schemas.xmlsoap.org/soap/envelope/"


def simulator(**profile: Any) -> Simulator:
    encoding = profile.pop("text_encoding", "utf-8")
    return Simulator(
        config=SimulatorConfig(
            port=0,
            private_key=PRIVATE,
            spec_options=SpecOptions(**profile),
            crypto_options=crypto.CryptoOptions(text_encoding=encoding),
        )
    )


def client(sim: Simulator, *, text_encoding: str = "utf-8", **profile: Any) -> PlatformClient:
    return PlatformClient(
        endpoint=sim.url,
        credential=CREDENTIAL,
        public_key=sim.public_key,
        spec_options=SpecOptions(**profile),
        crypto_options=crypto.CryptoOptions(text_encoding=text_encoding),
        timeout=10,
    )


# --- D21: the XML declaration -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
@pytest.mark.parametrize("declaration", [True, False], ids=["with", "without"])
def test_a_platform_gets_the_declaration_it_wants_on_every_call_d21(declaration: bool, encoding: str) -> None:
    """Client and simulator agree: every kind of call goes through (report, void, records, counts,
    each query), and the answers, written the platform's way, are read."""
    with simulator(xml_declaration=declaration, text_encoding=encoding) as sim:
        with client(sim, xml_declaration=declaration, text_encoding=encoding) as c:
            master, items = samples.exam_report(items=2)
            assert c.archive_exam_report(master, items).text is None
            assert c.archive_daily_counts(samples.daily_counts()).text is None
            assert c.submit_accept(samples.accept_records(codes=("115",), type_="1")).text is None
            assert c.get_check_lab_list(id_no=ID_NO, id_type="01")["item"]
            [row] = c.get_exam_info(id_no=ID_NO, id_type="01")["exammaster"][:1]
            assert row["conclusion"] == master["conclusion"]  # Chinese text, both ways, in its encoding
            assert c.exists_recure_info(id_no=ID_NO, id_type="01", check=["115"]).counts()
            assert c.delete_exam_report(master).text is None
        assert sim.platform.received()["answers"].get("error", 0) == 0


@pytest.mark.parametrize("declaration", [True, False], ids=["with", "without"])
def test_a_platform_refuses_the_other_choice_naming_the_part_d21(declaration: bool) -> None:
    with simulator(xml_declaration=not declaration) as sim, client(sim, xml_declaration=declaration) as c:
        with pytest.raises(BusinessError, match=r"strCredential: .*\(D21\)") as info:
            c.archive_lab_report(*samples.lab_report())
        assert (
            "takes none" in info.value.reason
            if declaration
            else "has no XML declaration" in info.value.reason
        )
        assert sim.platform.received()["stored"]["labmaster"] == 0


def test_a_gbk_platform_refuses_a_payload_declared_utf8() -> None:
    """What the command line used to send a GBK platform: the credential in GBK, the payload as
    the file was (UTF-8). The platform names the part and the encodings."""
    with simulator(text_encoding="gbk") as sim, client(sim, text_encoding="gbk") as c:
        utf8 = px.build_query_filter("GetCheckLabList", id_no=ID_NO, id_type="01", options=SpecOptions())
        sealed = c.seal(utf8)
        answer = c.invoke(
            "GetCheckLabList", payload=sealed.payload, credential=sealed.credential, key=sealed.key
        )
    assert answer == "error:strFilter: declares the encoding utf-8; this platform reads gbk"


# --- D22: patient_local_id --------------------------------------------------------------------------


def test_patient_local_id_is_read_from_exam_answers_and_never_sent_d22() -> None:
    """The registration does not carry it (no such field in exammaster's table, nor a column in the
    hospitals' views); the exam answers do (GetCheckLabInfo, GetExamInfo), as the spec's examples
    show, and the client reads it like any attribute. A registration that carries it (the spec's
    own exam example) is accepted and its value answered back."""
    master, items = samples.exam_report(items=1)
    assert b"patient_local_id" not in px.build_exam_report(master, items, options=DEFAULT_OPTIONS)
    with simulator() as sim, client(sim) as c:
        c.archive_exam_report(master, items)
        [row] = c.get_exam_info(id_no=ID_NO, id_type="01")["exammaster"]
        assert row["patient_local_id"] == master["patient_id"]  # nothing registered: the platform's own
        [info] = c.get_check_lab_info(id_no=ID_NO, id_type="01")["exammaster"]
        assert info["patient_local_id"] == master["patient_id"]
        with_it = px.build_exam_report(master, items, options=DEFAULT_OPTIONS).replace(
            b'patient_id="', b'patient_local_id="X2308255" patient_id="'
        )
        assert c.call_document("ArchiveAutoReport", with_it).text is None
        [row] = c.get_exam_info(id_no=ID_NO, id_type="01")["exammaster"]
        assert row["patient_local_id"] == "X2308255"
        c.archive_lab_report(*samples.lab_report())
        [lab] = c.get_lab_info(id_no=ID_NO, id_type="01")["labmaster"]
        assert "patient_local_id" not in lab  # the spec's lab answers have none


# --- D23: the SOAP binding ------------------------------------------------------------------------


@pytest.fixture
def sent() -> Iterator[tuple[requests.Session, list[requests.PreparedRequest]]]:
    session = requests.Session()
    seen: list[requests.PreparedRequest] = []
    session.hooks["response"].append(lambda response, **_: seen.append(response.request))
    yield session, seen
    session.close()


def test_calls_are_soap_11_with_the_tempuri_namespace_and_soap_action_d23(sent: Any) -> None:
    session, seen = sent
    with simulator() as sim:
        with PlatformClient(
            endpoint=sim.url,
            credential=CREDENTIAL,
            public_key=sim.public_key,
            session=session,
            spec_options=DEFAULT_OPTIONS,
        ) as c:
            c.archive_lab_report(*samples.lab_report())
            c.get_check_lab_list(id_no=ID_NO, id_type="01")
    for request, method in zip(seen, ("ArchiveAutoReport", "GetCheckLabList"), strict=True):
        assert request.headers["SOAPAction"] == f'"http://tempuri.org/{method}"'
        assert request.headers["Content-Type"].startswith("text/xml")
        envelope = etree.fromstring(request.body)
        assert envelope.tag == f"{{{SOAP_11}}}Envelope"
        [call] = envelope.find(f"{{{SOAP_11}}}Body")
        assert call.tag == f"{{http://tempuri.org/}}{method}"
        assert [etree.QName(p).localname for p in call][1:] == ["strCredential", "strKey"]


def test_a_soap_action_naming_another_operation_is_a_client_fault_d23() -> None:
    """As an ASMX service answers it; the client reads it as a refusal (SoapFault, not retryable)."""
    with simulator() as sim:
        with PlatformClient(
            endpoint=sim.url, credential=CREDENTIAL, public_key=sim.public_key, spec_options=DEFAULT_OPTIONS
        ) as c:
            sealed = c.seal(
                px.build_query_filter("GetLabInfo", id_no=ID_NO, id_type="01", options=SpecOptions())
            )
        body = (
            f'<s:Envelope xmlns:s="{SOAP_11}"><s:Body><GetLabInfo xmlns="http://tempuri.org/">'
            f"<strFilter>{sealed.payload}</strFilter><strCredential>{sealed.credential}</strCredential>"
            f"<strKey>{sealed.key}</strKey></GetLabInfo></s:Body></s:Envelope>"
        )
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"http://tempuri.org/GetExamInfo"',
        }
        refused = httpx.post(sim.url, content=body, headers=headers, timeout=5)
        assert (
            refused.status_code == 500
            and "did not recognize the value of HTTP Header SOAPAction" in refused.text
        )
        headers["SOAPAction"] = '"http://tempuri.org/GetLabInfo"'
        assert httpx.post(sim.url, content=body, headers=headers, timeout=5).status_code == 200


def test_the_way_out_is_the_platforms_own_wsdl_d23(sent: Any) -> None:
    """HURREN_PLATFORM_WSDL=live: the client reads ``<endpoint>?wsdl`` and speaks what it says (here
    the simulator serves ours); the download is capped and bounded in time
    (tests/hostile/test_hostile_platform.py)."""
    session, seen = sent
    with simulator() as sim:
        with PlatformClient(
            endpoint=sim.url,
            credential=CREDENTIAL,
            public_key=sim.public_key,
            wsdl="live",
            session=session,
            spec_options=DEFAULT_OPTIONS,
        ) as c:
            assert c.wsdl == sim.url + "?wsdl"
            assert c.archive_daily_counts(samples.daily_counts()).text is None
    assert [r.method for r in seen] == ["GET", "POST"] and seen[0].url == sim.url + "?wsdl"


# --- D24: ECB under one session key ---------------------------------------------------------------


def test_first_cipher_blocks_repeat_only_within_one_key_window_d24(sent: Any) -> None:
    """On the wire to the simulator: every strReportInfo starts with the same 16 bytes (the
    declaration), so under one session key all share their first ciphertext block; with
    ``key_max_uses=3`` no more than three calls do, each window under a new strKey, and the
    simulator reads every one."""
    session, seen = sent
    with simulator() as sim:
        with PlatformClient(endpoint=sim.url, credential=CREDENTIAL, public_key=sim.public_key, session=session,
                            key_max_uses=3, spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
            for day in range(7):
                rows = [dict(r, date_t=f"2024-03-{day + 1:02d}") for r in samples.daily_counts()]
                assert c.archive_daily_counts(rows).text is None
    calls = []
    for request in seen:
        call = etree.fromstring(request.body).find(f"{{{SOAP_11}}}Body")[0]
        params = {etree.QName(p).localname: p.text for p in call}
        calls.append((params["strKey"], base64.b64decode(params["strReportInfo"])[:16]))
    windows: dict[str, set[bytes]] = {}
    for key, first in calls:
        windows.setdefault(key, set()).add(first)
    assert [len([k for k, _ in calls if k == key]) for key in windows] == [3, 3, 1]  # the ring's bound
    assert all(len(firsts) == 1 for firsts in windows.values())  # one key, one prefix: one first block
    assert len({next(iter(f)) for f in windows.values()}) == 3  # across keys: nothing in common
