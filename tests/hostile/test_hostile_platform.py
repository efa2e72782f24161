"""A hostile platform: a tiny HTTP server on 127.0.0.1 answering the client's SOAP calls with
entity bombs, XXE, huge bodies, broken encryption, SOAP faults and HTML. Every answer must surface
as the documented PlatformError subclass (AnswerError, HTTPStatusError, ...), never a crash, and
no entity may ever be expanded.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hurren import crypto
from hurren.platform import AnswerError, HTTPStatusError, PlatformClient, PlatformError
from hurren.platform.envelope import Credential, seal_answer, unwrap
from hurren.simulator.server import read_soap_call, soap_answer, soap_fault

PRIVATE, PUBLIC = crypto.generate_keypair()
CREDENTIAL = Credential(org_code="457759922", org_name="某医院", visitor_code="v", visitor_key="k")
ROWS = b'<root><item org_code="457759922" report_form_no="R1"/></root>'

# (status, content type, body) from (method, ns, param_ns, the caller's SM4 key)
Answer = Callable[[str, str | None, str | None, bytes], tuple[int, str, bytes]]


def soap(answer: str) -> Answer:
    return lambda m, ns, pns, key: (200, "text/xml; charset=utf-8", soap_answer(m, answer, ns, pns))


def sealed(make: Callable[[bytes], str]) -> Answer:
    return lambda m, ns, pns, key: (200, "text/xml; charset=utf-8", soap_answer(m, make(key), ns, pns))


def raw(body: bytes, status: int = 200, ctype: str = "text/xml; charset=utf-8") -> Answer:
    return lambda m, ns, pns, key: (status, ctype, body)


def with_doctype(doctype: bytes, inner: bytes = b"&xxe;") -> Answer:
    def answer(m: str, ns: str | None, pns: str | None, key: bytes) -> tuple[int, str, bytes]:
        body = soap_answer(m, "PLACEHOLDER", ns, pns).replace(b"PLACEHOLDER", inner)
        decl, rest = body.split(b"?>", 1)
        return 200, "text/xml", decl + b"?>" + doctype + rest

    return answer


XXE = b'<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
LAUGHS = (
    b'<!DOCTYPE soap:Envelope [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>"
)
XXE_INSIDE = (
    b'<?xml version="1.0"?><!DOCTYPE root [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><root>&xxe;</root>'
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    answer: Answer = staticmethod(soap("ok"))  # type: ignore[assignment]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        method, params, ns, pns = read_soap_call(body)
        key = unwrap(params["strKey"], PRIVATE)
        status, ctype, out = self.server.answer(method, ns, pns, key)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server: _Server) -> Iterator[PlatformClient]:
    host, port = server.server_address[:2]
    with PlatformClient(
        endpoint=f"http://{host}:{port}/Myhealth",
        credential=CREDENTIAL,
        public_key=PUBLIC,
        timeout=20,
        connect_timeout=2,
    ) as c:
        yield c


def query(client: PlatformClient) -> Any:
    return client.get_check_lab_list(id_no="110105198001010016", id_type="01")


def test_the_server_is_a_platform(server: _Server, client: PlatformClient) -> None:
    server.answer = sealed(lambda key: seal_answer(ROWS, key))
    result = query(client)
    assert result["item"] == [{"org_code": "457759922", "report_form_no": "R1"}]


CASES: list[tuple[str, Answer, type[PlatformError], str]] = [
    ("xxe-in-soap", with_doctype(XXE), AnswerError, "DOCTYPE"),
    ("billion-laughs-in-soap", with_doctype(LAUGHS, b"&lol9;"), AnswerError, "DOCTYPE"),
    ("xxe-in-decrypted-answer", sealed(lambda key: seal_answer(XXE_INSIDE, key)), AnswerError, "DOCTYPE"),
    ("bad-base64", soap("this is !!! not base64"), AnswerError, "Base64"),
    ("wrong-key", sealed(lambda key: seal_answer(ROWS, bytes(16))), AnswerError, "decrypt"),
    (
        "truncated",
        sealed(lambda key: base64.b64encode(crypto.sm4_encrypt(ROWS, key)[:-5]).decode()),
        AnswerError,
        "truncated",
    ),
    (
        "truncated-to-a-block",
        sealed(lambda key: base64.b64encode(crypto.sm4_encrypt(ROWS, key)[:16]).decode()),
        AnswerError,
        "decrypt",
    ),
    (
        "encrypted-junk",
        sealed(lambda key: seal_answer(b"\x00\xff not xml", key)),
        AnswerError,
        "not well-formed",
    ),
    ("soap-fault", raw(soap_fault("boom", "Server"), 500), HTTPStatusError, "SOAP fault"),
    ("html-200", raw(b"<html><body>Login</body></html>", 200, "text/html"), AnswerError, "cannot be read"),
    ("html-502", raw(b"<html><body>Bad gateway</body></html>", 502, "text/html"), HTTPStatusError, "502"),
    ("not-xml", raw(b"\x00\x01garbage", 200, "text/xml"), AnswerError, "not well-formed"),
    ("empty-body", raw(b"", 200, "text/xml"), AnswerError, "not well-formed"),
    ("empty-answer", soap(""), AnswerError, "nothing"),
    ("ok-where-xml-expected", soap("ok"), AnswerError, "encrypted XML"),
]


@pytest.mark.parametrize(("answer", "error", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_answers_surface_as_platform_errors(
    server: _Server, client: PlatformClient, answer: Answer, error: type[PlatformError], text: str
) -> None:
    server.answer = answer
    with pytest.raises(error, match=text) as info:
        query(client)
    assert "root:" not in str(info.value)  # /etc/passwd never read into a message
    assert len(str(info.value)) < 2000


def test_business_error_on_submit(server: _Server, client: PlatformClient) -> None:
    from hurren.platform import BusinessError

    server.answer = soap("error:<!ENTITY x 'y'>&x;")
    with pytest.raises(BusinessError, match="ENTITY"):
        client.submit_accept([])


def test_huge_body_surfaces_as_an_answer_error(server: _Server, client: PlatformClient) -> None:
    """A 50 MB answer. NOTE: PlatformClient does not cap the body: requests reads all of it into
    memory (client.py _QuietTransport.post: response.content) before zeep parses it; lxml's
    huge_tree=False then refuses the 50 MB text node. The outcome is an AnswerError, but the memory
    is spent first (reported, not changed here)."""
    big = "A" * (50 * 1024 * 1024)
    server.answer = soap(big)
    with pytest.raises(AnswerError, match="not well-formed"):  # misleading: it is well-formed, only huge
        query(client)
