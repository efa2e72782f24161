"""The simulator's HTTP side: SOAP 1.1 on ``<path>``, the WSDL on ``<path>?wsdl``, admin under ``/_admin``.

Built on the standard library's ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, one thread per
connection): no framework, and full control of the socket, which the fault modes need (close
unanswered, reset, answer late).

Admin endpoints (JSON; ``X-Admin-Token`` header required when ``--admin-token`` is set):

    GET  /_admin/health        {"status": "ok"}
    GET  /_admin/public-key    {"public_key": "04..."}  the simulator's SM2 public key
    GET  /_admin/faults        current faults, remaining down time, faults injected so far
    POST /_admin/faults        JSON, merged into the current faults (see hurren_testkit.simulator.faults)
    GET  /_admin/received      calls per method, answers per kind, decrypted payloads, stored counts
    GET  /_admin/reports       stored reports by key (no patient identifiers); ?kind=lab|exam
    POST /_admin/reset         {"data": true, "faults": true, "counters": true} (all by default)

SOAP requests are matched by the local names of the body's first element (the method) and its
children (the parameters), whatever their namespace; the answer mirrors the request's namespaces.
Only SOAP 1.1 is served, and a ``SOAPAction`` header naming another operation than the body's is a
Client fault, as ASMX answers it (D23).
Malformed SOAP gets a SOAP fault (HTTP 500, faultcode Client); everything about the payload itself
is answered ``error:<reason>`` with HTTP 200, as the platform does.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lxml import etree

from hurren.platform.client import DEFAULT_WSDL
from hurren.platform.exceptions import AnswerError
from hurren.platform.methods import METHODS
from hurren.platform.xml import parse_xml
from hurren_testkit.simulator.config import SimulatorConfig
from hurren_testkit.simulator.faults import FaultsError
from hurren_testkit.simulator.service import Platform

__all__ = ["Simulator"]

log = logging.getLogger("hurren_testkit.simulator")

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_ADDRESS = re.compile(r'(<soap:address\s+location=")[^"]*(")')
_ADMIN_BODY_MAX = 64 * 1024


class _SoapFault(Exception):
    def __init__(self, message: str, *, code: str = "Client") -> None:
        super().__init__(message)
        self.code = code


def _local(tag: object) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _namespace(tag: object) -> str | None:
    return etree.QName(tag).namespace if isinstance(tag, str) else None


def read_soap_call(body: bytes) -> tuple[str, dict[str, str], str | None, str | None]:
    """(method, params, namespace of the method element, namespace of its parameters)."""
    try:
        root = parse_xml(body, what="the SOAP request")
    except AnswerError as exc:
        raise _SoapFault(str(exc)) from None
    if _local(root.tag) != "Envelope":
        raise _SoapFault("the request is not a SOAP envelope")
    if _namespace(root.tag) != SOAP_ENV:
        raise _SoapFault(
            "only SOAP 1.1 (http://schemas.xmlsoap.org/soap/envelope/) is served", code="VersionMismatch"
        )
    body_el = next((c for c in root if _local(c.tag) == "Body"), None)
    call = next((c for c in body_el if isinstance(c.tag, str)), None) if body_el is not None else None
    if call is None:
        raise _SoapFault("the SOAP body holds no method element")
    params: dict[str, str] = {}
    param_ns: str | None = None
    for child in call:
        if isinstance(child.tag, str):
            params[_local(child.tag)] = child.text or ""
            param_ns = _namespace(child.tag)
    return _local(call.tag), params, _namespace(call.tag), param_ns


def check_soap_action(header: str | None, method: str) -> None:
    """D23: a SOAPAction that names another operation is refused as an ASMX service refuses it;
    none, or an empty one, is let through (SOAP 1.1 leaves its use to the service)."""
    action = (header or "").strip().strip('"')
    if action and re.split(r"[/#]", action)[-1] != method:
        raise _SoapFault(f"Server did not recognize the value of HTTP Header SOAPAction: {action[:200]}.")


def soap_answer(method: str, answer: str, ns: str | None, param_ns: str | None) -> bytes:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    # a prefix, not a default namespace: lxml would not undeclare it for an unqualified result
    response = etree.SubElement(
        body, f"{{{ns}}}{method}Response" if ns else f"{method}Response", nsmap={"m": ns} if ns else None
    )
    result = etree.SubElement(response, f"{{{param_ns}}}{method}Result" if param_ns else f"{method}Result")
    result.text = answer
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def soap_fault(message: str, code: str = "Client") -> bytes:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    fault = etree.SubElement(etree.SubElement(env, f"{{{SOAP_ENV}}}Body"), f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = message
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], *, platform: Platform, config: SimulatorConfig) -> None:
        self.platform = platform
        self.config = config
        self.wsdl_text = DEFAULT_WSDL.read_text(encoding="utf-8")
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        self.platform.stats.add(connections=1)  # a client that keeps connections alive opens few
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open keep-alive connection (on stop), so no handler thread serves on."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            log.debug("connection from %s ended: %s", client_address[0], type(exc).__name__)
            return
        log.error(
            "request from %s failed: %s (DEBUG log level shows the traceback)",
            client_address[0],
            type(exc).__name__,
        )
        log.debug("request failed", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HurrenPlatformSimulator/1.0"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s " + format, self.client_address[0], *args)

    # -- plumbing -------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, content_type: str, *, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (a timed-out call): nothing to answer to
            self.close_connection = True

    def _json(self, status: int, value: Any) -> None:
        self._send(
            status,
            json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8"),
            "application/json; charset=utf-8",
        )

    def _read_body(self, limit: int) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send(411, b"send a Content-Length (chunked bodies are not supported)\n", "text/plain")
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > limit:
            self._send(413, b"body too large or bad Content-Length\n", "text/plain")
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Reset the connection without an answer (SO_LINGER 0 → RST): a platform that is down."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # the file objects hold the socket open: close them first, so the close happens now, as
            # an RST, and not later after the server's graceful shutdown(SHUT_WR) sent a FIN
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
        except OSError:
            pass
        self.wfile = io.BytesIO()  # the request loop flushes it once more
        self.close_connection = True

    # -- routes ---------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        if url.path.startswith("/_admin/"):
            self._admin("GET", url.path, url.query)
        elif url.path == self.server.config.path and url.query.lower().startswith("wsdl"):
            base = self.server.config.base_url(self.headers.get("Host"))
            text = _ADDRESS.sub(
                lambda m: f"{m.group(1)}{base}{self.server.config.path}{m.group(2)}", self.server.wsdl_text
            )
            self._send(200, text.encode("utf-8"), "text/xml; charset=utf-8")
        else:
            self._send(
                404,
                b"not found: the SOAP service is at " + self.server.config.path.encode() + b"\n",
                "text/plain",
            )

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path.startswith("/_admin/"):
            self._admin("POST", url.path, url.query)
            return
        platform = self.server.platform
        if url.path != self.server.config.path:
            self._read_body(self.server.config.max_body_bytes)
            self._send(
                404,
                b"not found: the SOAP service is at " + self.server.config.path.encode() + b"\n",
                "text/plain",
            )
            return
        down = platform.faults.is_down()
        body = self._read_body(self.server.config.max_body_bytes)
        if down:
            # after reading the whole request: a client still sending would see the reset on its
            # send and then only an EOF, indistinguishable from a dropped answer
            self._reset()
            return
        if body is None:
            return
        started = time.perf_counter()
        try:
            method, params, ns, param_ns = read_soap_call(body)
            if method not in METHODS:
                raise _SoapFault(f"no method {method!r}; this service offers {', '.join(METHODS)}")
            check_soap_action(self.headers.get("SOAPAction"), method)
        except _SoapFault as exc:
            self._send(500, soap_fault(str(exc), exc.code), "text/xml; charset=utf-8")
            return
        decision = platform.faults.decide(method)
        if decision.latency_s:
            time.sleep(decision.latency_s)
        if decision.fault == "http500":
            log.info("%s: fault injected: HTTP 500", method)
            self._send(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html")
            return
        if decision.fault == "error":
            log.info("%s: fault injected: error answer", method)
            answer = platform.injected_refusal(method, params)
        else:
            answer = platform.handle(method, params)
        if decision.fault == "drop":
            log.info("%s: fault injected: connection closed without answer", method)
            self.close_connection = True
            return
        if decision.fault == "timeout":
            log.info("%s: fault injected: answering after %.1f s", method, decision.timeout_s)
            time.sleep(decision.timeout_s)
        self._send(200, soap_answer(method, answer, ns, param_ns), "text/xml; charset=utf-8")
        log.debug("%s answered %s in %.1f ms", method, answer[:5], (time.perf_counter() - started) * 1000)

    def _admin(self, verb: str, path: str, query: str) -> None:
        token = self.server.config.admin_token
        if token and not hmac.compare_digest(self.headers.get("X-Admin-Token", "").encode(), token.encode()):
            self._read_body(_ADMIN_BODY_MAX) if verb == "POST" else None
            self._json(401, {"error": "send the admin token in the X-Admin-Token header"})
            return
        values: dict[str, Any] = {}
        if verb == "POST":
            body = self._read_body(_ADMIN_BODY_MAX)
            if body is None:
                return
            if body.strip():
                try:
                    values = json.loads(body)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    self._json(400, {"error": f"the body is not JSON: {exc}"})
                    return
                if not isinstance(values, dict):
                    self._json(400, {"error": "the body must be a JSON object"})
                    return
        platform = self.server.platform
        route = (verb, path.rstrip("/"))
        if route == ("GET", "/_admin/health"):
            self._json(200, {"status": "ok"})
        elif route == ("GET", "/_admin/public-key"):
            self._json(200, {"public_key": platform.public_key})
        elif route == ("GET", "/_admin/faults"):
            self._json(200, platform.faults.status())
        elif route == ("POST", "/_admin/faults"):
            try:
                platform.faults.update(values)
            except FaultsError as exc:
                self._json(400, {"error": str(exc)})
                return
            log.info("faults set: %s", json.dumps(values, ensure_ascii=False))
            self._json(200, platform.faults.status())
        elif route == ("GET", "/_admin/received"):
            self._json(200, platform.received())
        elif route == ("GET", "/_admin/reports"):
            kind = (parse_qs(query).get("kind") or [None])[0]
            self._json(200, {"reports": platform.store.report_keys(kind)})
        elif route == ("POST", "/_admin/reset"):
            what = {k: bool(values.get(k, True)) for k in ("data", "faults", "counters")}
            platform.reset(**what)
            log.info("reset: %s", ", ".join(k for k, v in what.items() if v))
            self._json(200, {"reset": what})
        else:
            self._json(404, {"error": f"no admin route {verb} {path}"})


class Simulator:
    """The simulator as an object: ``Simulator(config=...).start()`` serves in a background thread."""

    def __init__(self, *, config: SimulatorConfig, platform: Platform | None = None) -> None:
        self.config = config
        self.platform = platform or Platform(config=config)
        self._httpd = _HTTPServer((config.host, config.port), platform=self.platform, config=config)
        self._thread: threading.Thread | None = None
        if not config.public_url:
            self.platform.base_url = f"http://{self.host}:{self.port}"

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The SOAP endpoint."""
        return f"http://{self.host}:{self.port}{self.config.path}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.port}/_admin"

    @property
    def public_key(self) -> str:
        return self.platform.public_key

    def start(self) -> Simulator:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="platform-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
