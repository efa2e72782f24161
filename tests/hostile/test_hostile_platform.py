"""A hostile platform: a tiny HTTP server on 127.0.0.1 answering the client's SOAP calls with
entity bombs, XXE, huge bodies, broken encryption, SOAP faults and HTML. Every answer must surface
as the documented PlatformError subclass (AnswerError, HTTPStatusError, ...), never a crash, and
no entity may ever be expanded.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hurren import crypto
from hurren.platform import AnswerError, HTTPStatusError, PlatformClient, PlatformError, SoapFault
from hurren.platform.envelope import Credential, seal_answer, unwrap
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit.simulator.server import read_soap_call, soap_answer, soap_fault

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


class _Streamed:
    """A body written piece by piece; ``length`` is sent as Content-Length unless None."""

    def __init__(
        self, pieces: Iterator[bytes], length: int | None, headers: dict[str, str] | None = None
    ) -> None:
        self.pieces, self.length, self.headers = pieces, length, headers or {}


class _Drip:
    """A whole HTTP answer (status line, headers, body) written ``piece`` bytes every ``every_s``
    seconds: a platform that answers, but never quite finishes."""

    def __init__(self, data: bytes, *, every_s: float, piece: int = 1) -> None:
        self.data, self.every_s, self.piece = data, every_s, piece


def http_answer(body: bytes, ctype: str = "text/xml; charset=utf-8") -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    answer: Answer = staticmethod(soap("ok"))
    wsdl: Callable[[], Any] | None = None  # what GET ?wsdl answers: bytes, _Streamed or _Drip
    written: list[int]  # bytes of each streamed body written before it ended or the client left


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _drip(self, out: _Drip) -> None:
        written = 0
        try:
            for i in range(0, len(out.data), out.piece):
                self.wfile.write(out.data[i : i + out.piece])
                self.wfile.flush()
                written += out.piece
                time.sleep(out.every_s)
        except OSError:  # the client hung up
            pass
        finally:
            self.close_connection = True
            self.server.written.append(written)

    def do_GET(self) -> None:  # noqa: N802 - the live WSDL
        out = self.server.wsdl() if self.server.wsdl else b""
        if isinstance(out, _Drip):
            self._drip(out)
            return
        self._write(200, "text/xml; charset=utf-8", out)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        method, params, ns, pns = read_soap_call(body)
        key = unwrap(params["strKey"], PRIVATE)
        status, ctype, out = self.server.answer(method, ns, pns, key)
        if isinstance(out, _Drip):
            self._drip(out)
            return
        self._write(status, ctype, out)

    def _write(self, status: int, ctype: str, out: Any) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if isinstance(out, _Streamed):
            if out.length is not None:
                self.send_header("Content-Length", str(out.length))
            for name, value in out.headers.items():
                self.send_header(name, value)
            self.end_headers()
            written = 0
            try:
                for piece in out.pieces:
                    self.wfile.write(piece)
                    written += len(piece)
            except OSError:  # the client hung up
                self.close_connection = True
            finally:
                self.server.written.append(written)
            return
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.written = []
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
        spec_options=DEFAULT_OPTIONS,
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
    ("soap-fault", raw(soap_fault("boom", "Server"), 500), SoapFault, r"SOAP fault \(Server\): boom"),
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


BIG = 50 * 1024 * 1024  # a 50 MB answer
CAP = 1024 * 1024  # the client's cap in these tests (the default, 32 MiB, is checked below)


def _huge(*, announce: bool) -> Answer:
    """50 MB of one SOAP answer, written in 1 MiB pieces while the client reads; with or without
    its Content-Length (then the body ends when the connection closes)."""
    piece = b"A" * CAP

    def answer(m: str, ns: str | None, pns: str | None, key: bytes) -> tuple[int, str, Any]:
        head, tail = soap_answer(m, "PLACEHOLDER", ns, pns).split(b"PLACEHOLDER")

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(BIG // CAP):
                yield piece
            yield tail

        return (
            200,
            "text/xml; charset=utf-8",
            _Streamed(body(), len(head) + BIG + len(tail) if announce else None),
        )

    return answer


@pytest.fixture
def capped(server: _Server) -> Iterator[PlatformClient]:
    host, port = server.server_address[:2]
    with PlatformClient(
        endpoint=f"http://{host}:{port}/Myhealth", credential=CREDENTIAL, public_key=PUBLIC, timeout=20,
        connect_timeout=2, max_answer_bytes=CAP, spec_options=DEFAULT_OPTIONS
    ) as c:  # fmt: skip
        yield c


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-content-length"])
def test_huge_body_is_refused_at_the_cap_unread(
    server: _Server, capped: PlatformClient, announce: bool
) -> None:
    """A 50 MB answer against a 1 MiB cap: AnswerError naming the cap, refused from its
    Content-Length before reading anything, or as soon as 1 MiB has been read; the client never
    holds much more than the cap (tracemalloc peak), and stops reading: the server cannot write
    the 50 MB (it sees the connection dropped; what it wrote sits in socket buffers)."""
    import tracemalloc

    server.answer = sealed(lambda key: seal_answer(ROWS, key))
    query(capped)  # loads the WSDL and warms the pool outside the measurement
    server.answer = _huge(announce=announce)
    server.written.clear()
    tracemalloc.start()
    try:
        with pytest.raises(AnswerError, match=f"the cap of {CAP} bytes") as info:
            query(capped)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    if announce:
        assert re.search(r"announces \d{8} bytes, more than the cap .* without reading it", message), message
    else:
        assert "is bigger than" in message and "the rest unread" in message
    assert peak < 8 * CAP, f"peak {peak / 1e6:.1f} MB while reading a capped answer"
    deadline = time.monotonic() + 10
    while not server.written and time.monotonic() < deadline:  # the handler thread finishes
        time.sleep(0.05)
    assert server.written and server.written[0] < BIG / 2, server.written
    print(
        f"client peak {peak / 1e6:.1f} MB; server wrote {server.written[0] / 1e6:.1f} of {BIG / 1e6:.0f} MB"
    )


def test_a_gzip_bomb_is_refused_at_the_cap_decoded(server: _Server, capped: PlatformClient) -> None:
    """50 MB of answer gzipped into ~50 KB (Content-Encoding: gzip, a small Content-Length): the cap
    counts decoded bytes, and decoding stops there."""
    import tracemalloc
    import zlib

    server.answer = sealed(lambda key: seal_answer(ROWS, key))
    query(capped)

    def answer(m: str, ns: str | None, pns: str | None, key: bytes) -> tuple[int, str, Any]:
        head, tail = soap_answer(m, "PLACEHOLDER", ns, pns).split(b"PLACEHOLDER")
        z = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
        packed = z.compress(head) + b"".join(z.compress(b"A" * CAP) for _ in range(BIG // CAP))
        packed += z.compress(tail) + z.flush()
        return (
            200,
            "text/xml; charset=utf-8",
            _Streamed(iter([packed]), len(packed), {"Content-Encoding": "gzip"}),
        )

    server.answer = answer
    tracemalloc.start()
    try:
        with pytest.raises(AnswerError, match=f"is bigger than the cap of {CAP} bytes"):
            query(capped)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * CAP, f"peak {peak / 1e6:.1f} MB while decoding a capped answer"


def test_the_default_cap_and_its_setting(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from hurren.platform import ConfigurationError
    from hurren.settings import DEFAULT_MAX_ANSWER_BYTES, Settings

    host, port = server.server_address[:2]
    kw = {"endpoint": f"http://{host}:{port}/Myhealth", "credential": CREDENTIAL, "public_key": PUBLIC,
          "spec_options": DEFAULT_OPTIONS}  # fmt: skip
    assert PlatformClient(**kw).max_answer_bytes == DEFAULT_MAX_ANSWER_BYTES == 32 * 1024 * 1024
    monkeypatch.setenv("HURREN_PLATFORM_MAX_ANSWER_BYTES", "4096")
    assert PlatformClient(**kw).max_answer_bytes == 4096  # what the push's client gets
    assert Settings.from_env().platform.max_answer_bytes == 4096
    assert PlatformClient(**kw, max_answer_bytes=10).max_answer_bytes == 10
    server.answer = soap("x" * 5000)
    with PlatformClient(**kw) as c, pytest.raises(AnswerError, match="cap of 4096 bytes"):
        query(c)
    monkeypatch.setenv("HURREN_PLATFORM_MAX_ANSWER_BYTES", "lots")
    with pytest.raises(ConfigurationError, match="HURREN_PLATFORM_MAX_ANSWER_BYTES"):
        PlatformClient(**kw)


def test_an_answer_at_the_cap_is_read(server: _Server) -> None:
    """The cap is inclusive, and a capped client still reads ordinary answers (keep-alive intact)."""
    sizes: list[int] = []

    def answer(m: str, ns: str | None, pns: str | None, key: bytes) -> tuple[int, str, bytes]:
        body = soap_answer(m, seal_answer(ROWS, key), ns, pns)
        sizes.append(len(body))
        return 200, "text/xml; charset=utf-8", body

    server.answer = answer
    host, port = server.server_address[:2]
    with PlatformClient(
        endpoint=f"http://{host}:{port}/Myhealth",
        credential=CREDENTIAL,
        public_key=PUBLIC,
        spec_options=DEFAULT_OPTIONS,
    ) as c:
        query(c)
    size = sizes[0]
    with PlatformClient(endpoint=f"http://{host}:{port}/Myhealth", credential=CREDENTIAL, public_key=PUBLIC,
                        max_answer_bytes=size, spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
        for _ in range(3):
            assert query(c)["item"] == [{"org_code": "457759922", "report_form_no": "R1"}]


# --- time: a whole call within its deadline, however slowly the answer drips -------------------

DRIP_S = 0.05  # a byte every 50 ms: each read is quick, the answer never ends (a 5 KB body: 4 min)


def _dripping_body() -> Answer:
    def answer(m: str, ns: str | None, pns: str | None, key: bytes) -> tuple[int, str, Any]:
        body = soap_answer(m, seal_answer(ROWS * 40, key), ns, pns)
        return 200, "text/xml", _Drip(http_answer(body), every_s=DRIP_S, piece=1)

    return answer


def _dripping_headers() -> Answer:
    def answer(m: str, ns: str | None, pns: str | None, key: bytes) -> tuple[int, str, Any]:
        head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Slow-%d: %s\r\n" % (i, b"z" * 40) for i in range(90))
        return 200, "text/xml", _Drip(head, every_s=DRIP_S, piece=1)

    return answer


@pytest.mark.parametrize("answer", [_dripping_body(), _dripping_headers()], ids=["body", "headers"])
def test_a_dripping_answer_ends_at_the_deadline(server: _Server, answer: Answer) -> None:
    """Every byte arrives well within the per-read timeout (2 s), so only a deadline on the whole
    call ends it: a TimeoutError naming the deadline, about when it passes (main's client, with
    per-read timeouts only, read this drip for minutes)."""
    from hurren.platform import TimeoutError as PlatformTimeout

    host, port = server.server_address[:2]
    with PlatformClient(endpoint=f"http://{host}:{port}/Myhealth", credential=CREDENTIAL, public_key=PUBLIC,
                        timeout=2, connect_timeout=2, deadline_s=1.5, spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
        server.answer = sealed(lambda key: seal_answer(ROWS, key))
        query(c)  # the WSDL loaded, the pool warm: what follows is the call alone
        server.answer = answer
        started = time.monotonic()
        with pytest.raises(PlatformTimeout, match="deadline of 1.5 s") as info:
            query(c)
        elapsed = time.monotonic() - started
        assert info.value.retryable
        assert 1.4 <= elapsed < 4, elapsed
        server.answer = sealed(lambda key: seal_answer(ROWS, key))
        assert query(c)["item"]  # the client goes on: a new connection, the next call in time


def _wsdl_url(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/Myhealth"


def test_the_live_wsdl_is_read_within_the_deadline(server: _Server) -> None:
    """HURREN_PLATFORM_WSDL=live (D23's way out): the platform's own WSDL, read like an answer."""
    from hurren.platform import DEFAULT_WSDL
    from hurren.platform import TimeoutError as PlatformTimeout

    shipped = DEFAULT_WSDL.read_bytes()
    server.wsdl = lambda: shipped
    server.answer = sealed(lambda key: seal_answer(ROWS, key))
    with PlatformClient(endpoint=_wsdl_url(server), credential=CREDENTIAL, public_key=PUBLIC, wsdl="live",
                        timeout=2, deadline_s=1.5, spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
        assert query(c)["item"]  # a live WSDL that is the shipped one works as the shipped one
    server.wsdl = lambda: _Drip(http_answer(shipped), every_s=DRIP_S, piece=16)
    started = time.monotonic()
    with PlatformClient(endpoint=_wsdl_url(server), credential=CREDENTIAL, public_key=PUBLIC, wsdl="live",
                        timeout=2, deadline_s=1.5, spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
        with pytest.raises(PlatformTimeout, match="WSDL .* deadline of 1.5 s"):
            query(c)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-content-length"])
def test_a_huge_live_wsdl_is_refused_at_its_cap(server: _Server, announce: bool) -> None:
    """50 MB where the WSDL should be: refused at MAX_WSDL_BYTES (4 MiB), from its Content-Length
    or as soon as the cap is passed, as a configuration error (the URL is wrong); the server cannot
    write the 50 MB (main's client read all of it into memory)."""
    from hurren.platform import ConfigurationError
    from hurren.platform.client import MAX_WSDL_BYTES

    piece = b"<!-- " + b"x" * (CAP - 9) + b" -->"

    def huge() -> Any:
        return _Streamed(iter([b'<?xml version="1.0"?>', *[piece] * (BIG // CAP)]),
                         21 + BIG if announce else None)  # fmt: skip

    server.wsdl = huge
    server.written.clear()
    with PlatformClient(endpoint=_wsdl_url(server), credential=CREDENTIAL, public_key=PUBLIC, wsdl="live",
                        timeout=5, spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
        with pytest.raises(ConfigurationError, match=f"more than the {MAX_WSDL_BYTES} bytes a WSDL may have"):
            query(c)
    deadline = time.monotonic() + 10
    while not server.written and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.written and server.written[0] < BIG / 2, server.written


# --- what the platform wrote, classified like any other answer ---------------------------------


def _other_element(text: str) -> Answer:
    """The answer under ``<return>`` (a JAX-WS service's name) instead of ``<MethodResult>``."""

    def answer(m: str, ns: str | None, pns: str | None, key: bytes) -> tuple[int, str, bytes]:
        return (
            200,
            "text/xml; charset=utf-8",
            soap_answer(m, text, ns, pns).replace(f"{m}Result".encode(), b"return"),
        )

    return answer


PUSH_CASES: list[tuple[str, Answer, str, str, str]] = [
    # (id, the platform's answer, the entry's status, its push_log outcome, text kept)
    ("client-fault", raw(soap_fault("机构编码不存在", "Client"), 500), "rejected", "error",
     "fault:Client: 机构编码不存在"),
    ("server-fault", raw(soap_fault("数据库连接超时", "Server"), 500), "queued", "transport",
     "fault:Server: 数据库连接超时"),
    ("transient-client-fault", raw(soap_fault("系统繁忙", "Client"), 500), "queued", "error",
     "fault:Client: 系统繁忙"),
    ("other-element-error", _other_element("error:报告单号重复"), "rejected", "error", "error:报告单号重复"),
    ("other-element-ok", _other_element("ok"), "queued", "transport",
     "answered <ArchiveAutoReportResponse><return> instead of <ArchiveAutoReportResult>: 'ok'"),
    ("other-element-text", _other_element("Object reference not set"), "queued", "transport",
     "'Object reference not set'"),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "status", "outcome", "text"), [c[1:] for c in PUSH_CASES],
                         ids=[c[0] for c in PUSH_CASES])  # fmt: skip
def test_a_fault_or_another_element_is_recorded_and_classified_by_the_push(
    server: _Server, tmp_path: Any, answer: Answer, status: str, outcome: str, text: str
) -> None:
    """The push runner with the real client against this server: a SOAP fault or an answer in
    another element is kept with its text (push_log, last_error) and decided like any answer: a
    Client fault or an error: is a rejection (unless transient_errors says otherwise), a Server
    fault a retry counted by the breaker, and an "ok" in the wrong element never an
    acknowledgement (main's client raised an opaque AnswerError, or an HTTPStatusError retried
    whatever the fault's code)."""
    from sqlalchemy import create_engine, select

    from hurren import store
    from hurren.push.options import PushOptions
    from hurren.push.runner import Pusher
    from tests.unit.test_push import Objects, put_report

    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_all(engine)
    objects = Objects()
    put_report(engine, objects, "F1")
    server.answer = answer
    options = PushOptions(max_attempts=5, max_wait_s=0, max_run_s=10, transient_errors=("繁忙",))
    host, port = server.server_address[:2]
    with PlatformClient(endpoint=f"http://{host}:{port}/Myhealth", credential=CREDENTIAL, public_key=PUBLIC,
                        timeout=5, spec_options=DEFAULT_OPTIONS) as c:  # fmt: skip
        Pusher(
            engine=engine,
            client=c,
            objects=objects,
            bucket="b",
            options=options,
            spec_options=DEFAULT_OPTIONS,
        ).run()
    with engine.connect() as conn:
        [entry] = conn.execute(select(store.outbox)).all()
        [call] = conn.execute(select(store.push_log)).all()
    engine.dispose()
    assert (entry.status, call.outcome) == (status, outcome)
    assert text in entry.last_error and text in call.answer


def test_a_query_answered_ok_fails_alike_in_the_library_and_the_command_line(server: _Server) -> None:
    """The spec answers a query with encrypted XML or error:; "ok" tells nothing of the result. The
    library raises AnswerError; the command line exits 3 saying so (main's printed "ok", exit 0)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    server.answer = soap("ok")
    host, port = server.server_address[:2]
    with PlatformClient(endpoint=f"http://{host}:{port}/Myhealth", credential=CREDENTIAL,
                        public_key=PUBLIC, spec_options=DEFAULT_OPTIONS) as c, pytest.raises(AnswerError, match="where encrypted XML was expected"):  # fmt: skip
        query(c)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "hurren.platform", "query", "GetCheckLabList", "--id-no", "110105198001010016",
         "--endpoint", f"http://{host}:{port}/Myhealth", "--public-key", PUBLIC, "--org-code", "457759922",
         "--visitor-code", "v"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(root / "plugins"), "HURREN_PLATFORM_VISITOR_KEY": "k"},
    )  # fmt: skip
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and "where encrypted XML was expected" in done.stderr
