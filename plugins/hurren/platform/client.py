"""The SOAP client of the region platform's Myhealth service: ten methods, typed answers.

    client = PlatformClient(endpoint=url, credential=Credential(...), public_key=platform_sm2_key)
    ack = client.archive_lab_report(master, subitems)        # Ack, or raises (see exceptions)
    result = client.get_lab_info(id_no=..., id_type="01", event_no=...)   # QueryResult

How a call goes: build the XML (``hurren.platform.xml``) → SM4 + Base64 with the current session
key, credential encrypted once per key, strKey wrapped once per key (``Envelope``) → SOAP 1.1 via
zeep over a keep-alive ``requests`` pool → the answer read into ``Ack`` / ``QueryResult`` or
raised as ``BusinessError`` (``error:``), ``TransportError`` (no answer) or ``AnswerError``
(an answer we cannot read). The client never retries: the caller decides (every submission is an
upsert by key on the platform, so retrying after a transport error is safe).

Choices:

- The WSDL we ship (``Myhealth.wsdl``, see its header for the assumption) is the default;
  ``wsdl="live"`` loads ``<endpoint>?wsdl``, any other text is a path or URL. Loaded on first use,
  so building a client (in a DAG file) touches no network.
- One ``requests.Session`` with a pool of ``pool_size`` connections, no proxy from the
  environment (``trust_env=False``; pass ``proxies`` explicitly). zeep's transport is replaced by
  one that never logs message bodies, whatever the log level.
- Thread-safe: the zeep service, the session pool and the key ring may be shared by threads.
- Credentials and the platform key come from the caller; they never reach a log line or an
  exception message (``repr`` of the client shows the endpoint and org code only).
- The answer body is streamed and capped at ``max_answer_bytes`` (default
  ``$HURREN_PLATFORM_MAX_ANSWER_BYTES``, else 32 MiB): a bigger answer is refused with an
  ``AnswerError`` naming the cap, from its Content-Length before anything is read, else as soon
  as the cap is passed; the rest is never read and the connection is dropped, so memory stays
  bounded by the cap. The largest legitimate answers are the queries' (one patient's recent
  reports and sub-items, no PDFs: a few MB even for a long inpatient stay); submissions answer
  ``ok`` / ``error:<reason>``.
- Time: ``timeout`` bounds each wait for the next bytes; ``deadline_s`` (300 s) bounds a whole
  call, however slowly its answer drips in. One watchdog thread shuts the socket of a call still
  running at its deadline (the pools of the client's adapter tell it which socket), which ends
  the call with a ``TimeoutError`` whatever it was waiting for: headers, body, or the server
  still reading our request. A session passed in gets that adapter mounted.
- The live WSDL (``wsdl="live"`` or a URL) is read under the same deadline and capped at
  :data:`MAX_WSDL_BYTES` (a real one is tens of KB): a bigger one is a ``ConfigurationError``.
- The envelope of a call with sealed strings (Base64) is zeep's own, rendered once per method with
  markers and filled per call (``_Envelopes``): zeep's per-call serialisation of ~240 KB cost about
  a millisecond. Strings given to ``invoke`` as they are go through zeep.
- SOAP: 1.1, as the shipped WSDL says (D23). A SOAP fault is a :class:`SoapFault` with its code
  and text; a body element other than ``<Method>Response/<Method>Result`` is read for its text:
  ``error:<reason>`` there is a ``BusinessError`` (a refusal is a refusal), anything else an
  ``AnswerError`` quoting it (never an acknowledgement: an ``ok`` in the wrong place is not one).
"""

from __future__ import annotations

import http.client
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import urllib3.exceptions
from lxml import etree
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from zeep import Client as ZeepClient
from zeep import Settings as ZeepSettings
from zeep import exceptions as zeep_exceptions
from zeep.transports import Transport
from zeep.wsdl.bindings.soap import Soap11Binding
from zeep.wsdl.utils import etree_to_string

from hurren import crypto, spec
from hurren.platform import xml
from hurren.platform.answers import Ack, QueryResult, read_query, read_status, read_submit, refusal
from hurren.platform.envelope import Credential, Envelope, Sealed
from hurren.platform.exceptions import (
    AnswerError,
    BusinessError,
    ConfigurationError,
    ConnectError,
    HTTPStatusError,
    PayloadError,
    PlatformError,
    RemoteProtocolError,
    SoapFault,
    TimeoutError,
    TransportError,
)
from hurren.platform.methods import METHODS, Method, method
from hurren.settings import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ANSWER_BYTES,
    SettingsError,
    max_answer_bytes_from_env,
)

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_WSDL",
    "MAX_WSDL_BYTES",
    "PlatformAdapter",
    "PlatformClient",
    "mount_adapter",
]

log = logging.getLogger(__name__)

DEFAULT_WSDL = Path(__file__).with_name("Myhealth.wsdl")
_DOCTYPE = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.I)


_READ_CHUNK = 64 * 1024
MAX_WSDL_BYTES = 4 * 1024 * 1024
"""The largest live WSDL read (an ASMX service's is tens of KB)."""


# --------------------------------------------------------------------------------------------
# the deadline: one watchdog thread, told by the pools which socket a call is using
# --------------------------------------------------------------------------------------------

_call = threading.local()  # per thread: the armed deadline of the HTTP call in progress


class _Armed:
    """One call's deadline; ``conn`` is the urllib3 connection it took from the pool."""

    __slots__ = ("at", "conn", "fired")

    def __init__(self, at: float) -> None:
        self.at, self.conn, self.fired = at, None, False

    def fire(self) -> None:
        self.fired = True
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the blocked recv/send returns at once
            except OSError:
                pass


class _Watchdog:
    """Fires the deadlines that pass while their call is still running. One daemon thread for the
    process, started on first use; a call that ends in time costs two dictionary operations."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._armed: dict[int, _Armed] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[_Armed]:
        armed = _Armed(time.monotonic() + seconds)
        with self._cv:
            self._armed[id(armed)] = armed
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="platform-deadlines", daemon=True)
                self._thread.start()
            self._cv.notify()
        _call.armed = armed
        try:
            yield armed
        finally:
            _call.armed = None
            with self._cv:
                self._armed.pop(id(armed), None)

    def _run(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                for key, armed in list(self._armed.items()):
                    if armed.at <= now:
                        del self._armed[key]
                        armed.fire()
                nearest = min((a.at for a in self._armed.values()), default=None)
                self._cv.wait(None if nearest is None else max(nearest - now, 0.01))


_WATCHDOG = _Watchdog()


class _Watched:
    """A pool that tells the current call's deadline which connection it hands out."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        armed = getattr(_call, "armed", None)
        if armed is not None:
            armed.conn = conn
        return conn


class _WatchedHTTPPool(_Watched, HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_Watched, HTTPSConnectionPool):
    pass


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class PlatformAdapter(HTTPAdapter):
    """The client's HTTP adapter: its pools tell the deadline watchdog which connection a call
    uses. Mount it on any session handed to a :class:`PlatformClient` (it does so itself)."""

    def __init__(self, pool_size: int) -> None:
        super().__init__(pool_connections=2, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def mount_adapter(session: requests.Session, pool_size: int) -> None:
    """``session`` with the client's adapter for http and https (pool of ``pool_size``)."""
    adapter = PlatformAdapter(pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


# --------------------------------------------------------------------------------------------
# the transport
# --------------------------------------------------------------------------------------------


class _QuietTransport(Transport):
    """zeep's transport without its DEBUG dump of every envelope (they carry patient data, encrypted or
    not), reading at most ``max_answer_bytes`` of an answer body, each call (and the live WSDL)
    within ``deadline_s``."""

    def __init__(
        self,
        *args: Any,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        deadline_s: float = DEFAULT_DEADLINE_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_answer_bytes = max_answer_bytes
        self.deadline_s = deadline_s

    def post(self, address: str, message: bytes | str, headers: dict[str, str]) -> requests.Response:
        with _WATCHDOG.deadline(self.deadline_s) as armed:
            try:
                response = self.session.post(
                    address, data=message, headers=headers, timeout=self.operation_timeout, stream=True
                )
                try:
                    content_type = response.headers.get("Content-Type", "").lower()
                    if response.status_code >= 300 and "xml" not in content_type:
                        # an error page, not a SOAP fault: zeep would read an XHTML page as an "unknown fault"
                        raise _HTTPStatus(response.status_code)
                    response._content = _read_capped(response, self.max_answer_bytes)  # what .content returns
                    response._content_consumed = True
                finally:
                    # all read: the connection goes back to the pool; otherwise it is closed, the rest unread
                    if response.raw is not None:
                        response.close()
            except Exception:
                if armed.fired:
                    raise _DeadlinePassed(self.deadline_s) from None
                raise
            if armed.fired:  # the shut socket may read as the end of a (truncated) body
                raise _DeadlinePassed(self.deadline_s)
        if _DOCTYPE.search(response.content[:4096]):  # a DOCTYPE can only come before the root element
            raise _DoctypeAnswer
        # a fault whatever the status; another element than the result only in a 2xx answer
        _inspect_answer(
            response.content, getattr(_call, "method", None) if response.status_code < 300 else None
        )
        return response

    def _load_remote_data(self, url: str) -> bytes:
        """The live WSDL (and what it imports), capped at MAX_WSDL_BYTES, within the deadline."""
        with _WATCHDOG.deadline(self.deadline_s) as armed:
            try:
                response = self.session.get(url, timeout=self.load_timeout, stream=True)
                try:
                    response.raise_for_status()
                    data = _read_capped(response, MAX_WSDL_BYTES)
                finally:
                    response.close()
            except Exception:
                if armed.fired:
                    raise _DeadlinePassed(self.deadline_s) from None
                raise
            if armed.fired:
                raise _DeadlinePassed(self.deadline_s)
            return data


_SOAP_FAULT = re.compile(rb"Fault\b")


def _local(element: Any) -> str:
    return etree.QName(element.tag).localname if isinstance(element.tag, str) else ""


def _inspect_answer(body: bytes, method: str | None) -> None:
    """A SOAP fault, or a body element other than ``<method>Response/<method>Result``, raised with
    its text (``_Fault``, ``_Unexpected``); anything else is zeep's to read. Only an answer that
    does not look like the method's result (a quick scan) is parsed here a first time."""
    expected = f"{method}Result".encode() if method else None
    if expected is not None and expected in body and not _SOAP_FAULT.search(body):
        return
    try:
        root = xml.parse_xml(body, what="the SOAP answer")
    except AnswerError:
        return  # not XML at all: zeep's message says so
    body_element = (
        next((c for c in root if _local(c) == "Body"), None) if _local(root) == "Envelope" else None
    )
    first = (
        next((c for c in body_element if isinstance(c.tag, str)), None) if body_element is not None else None
    )
    if first is None:
        return
    if _local(first) == "Fault":
        parts = {_local(c): c for c in first.iter() if isinstance(c.tag, str)}
        code_el = parts.get("faultcode") if "faultcode" in parts else parts.get("Value")  # SOAP 1.1 | 1.2
        text_el = parts.get("faultstring") if "faultstring" in parts else parts.get("Text")
        code = (code_el.text or "").strip().rsplit(":", 1)[-1] if code_el is not None else ""
        text = (text_el.text or "").strip() if text_el is not None else ""
        detail = parts.get("detail") if "detail" in parts else parts.get("Detail")
        more = " ".join(t.strip() for t in detail.itertext() if t.strip()) if detail is not None else ""
        raise _Fault(code, f"{text} ({more})" if text and more else text or more)
    if method is None:
        return
    children = [c for c in first if isinstance(c.tag, str)]
    if _local(first) == f"{method}Response" and (
        not children or (len(children) == 1 and _local(children[0]) == f"{method}Result")
    ):
        return
    where = f"<{_local(first)}>" + "".join(f"<{_local(c)}>" for c in children[:1])
    raise _Unexpected(where, " ".join(t.strip() for t in first.itertext() if t.strip()))


def _read_capped(response: requests.Response, cap: int) -> bytes:
    """The body, or ``_TooLarge`` as soon as it is known to exceed ``cap`` bytes (decoded)."""
    if response._content is not False:  # already read: a session that does not stream (tests' fakes)
        body = response.content or b""
        if len(body) > cap:
            raise _TooLarge(cap, read=len(body))
        return body
    announced = response.headers.get("Content-Length", "")
    if announced.strip().isdigit() and int(announced) > cap:
        raise _TooLarge(cap, announced=int(announced))
    body = bytearray()
    for chunk in response.iter_content(chunk_size=_READ_CHUNK):
        body += chunk
        if len(body) > cap:
            raise _TooLarge(cap, read=len(body))
    return bytes(body)


class _TooLarge(Exception):
    def __init__(self, cap: int, *, announced: int | None = None, read: int | None = None) -> None:
        super().__init__(cap)
        self.cap, self.announced, self.read = cap, announced, read


class _DoctypeAnswer(Exception):
    pass


class _Fault(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(code)
        self.code, self.text = code, text


class _Unexpected(Exception):
    def __init__(self, where: str, text: str) -> None:
        super().__init__(where)
        self.where, self.text = where, text


class _DeadlinePassed(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class _HTTPStatus(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


class _Envelopes:
    """A method's SOAP envelope as zeep writes it, rendered once with markers where its three
    strings go and filled in per call: zeep's serialisation of a ~240 KB argument (``_create``,
    its XSD rendering, then ``etree_to_string``) cost about a millisecond a call. Only for what
    ``seal`` made (Base64: nothing to escape) and operations with no per-message header
    (WS-Addressing, plugins, WS-Security); anything else goes through zeep."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._parts: dict[str, tuple[list[bytes], dict[str, str]] | None] = {}
        self._lock = threading.Lock()

    def _render(self, name: str, arity: int) -> tuple[list[bytes], dict[str, str]] | None:
        service = self.service
        client, binding = service._client, service._binding
        if binding.get(name).abstract.wsa_action or client.plugins or client.wsse:
            return None
        marks = [f"hurren{i}x{secrets.token_hex(8)}" for i in range(arity)]
        envelope, headers = binding._create(name, marks, {}, client=client, options=service._binding_options)
        rest = etree_to_string(envelope)
        parts = []
        for mark in marks:
            before, found, rest = rest.partition(mark.encode("ascii"))
            if not found:
                return None  # not written verbatim: leave the method to zeep
            parts.append(before)
        return [*parts, rest], dict(headers)

    def send(self, name: str, args: Sequence[str], *, base64: bool) -> Any:
        """zeep's ``binding.send`` for these arguments (``base64``: all three are, as ``seal`` made
        them): post the envelope, read the answer."""
        service = self.service
        with self._lock:
            if name not in self._parts:
                self._parts[name] = self._render(name, len(args))
            rendered = self._parts[name]
        if rendered is None or not base64:
            return getattr(service, name)(*args)
        parts, headers = rendered
        chunks = [parts[0]]
        for arg, part in zip(args, parts[1:], strict=True):
            chunks += (arg.encode("ascii"), part)
        message = b"".join(chunks)
        client, binding = service._client, service._binding
        response = client.transport.post(service._binding_options["address"], message, headers)
        return binding.process_reply(client, binding.get(name), response)


class PlatformClient:
    """A client of one region platform for one credential. Use it as a context manager, or ``close()``."""

    def __init__(
        self,
        *,
        endpoint: str,
        credential: Credential,
        public_key: str | bytes,
        wsdl: str | Path | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        wsdl_timeout: float = 30.0,
        pool_size: int = 8,
        crypto_options: crypto.CryptoOptions | None = None,
        spec_options: spec.SpecOptions,
        key_max_uses: int | None = 1000,
        key_max_age_s: float | None = 600.0,
        proxies: Mapping[str, str] | None = None,
        verify: bool | str = True,
        session: requests.Session | None = None,
        max_answer_bytes: int | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        """``max_answer_bytes``: the largest answer body read (None: ``$HURREN_PLATFORM_MAX_ANSWER_BYTES``,
        else :data:`DEFAULT_MAX_ANSWER_BYTES`); a bigger one raises ``AnswerError`` unread.
        ``deadline_s``: a call's (and the live WSDL's) total time; past it, ``TimeoutError``."""
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"endpoint must be an http(s) URL of the Myhealth service, got {endpoint!r}; "
                "e.g. http://127.0.0.1:58080/Myhealth"
            )
        if not timeout > 0 or not connect_timeout > 0 or not deadline_s > 0:
            raise ConfigurationError(
                "timeout, connect_timeout and deadline_s must be positive numbers of seconds"
            )
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, got {pool_size}")
        if max_answer_bytes is None:
            try:
                max_answer_bytes = max_answer_bytes_from_env()
            except SettingsError as exc:
                raise ConfigurationError(str(exc)) from None
        if (
            isinstance(max_answer_bytes, bool)
            or not isinstance(max_answer_bytes, int)
            or max_answer_bytes < 1
        ):
            raise ConfigurationError(
                f"max_answer_bytes must be a whole number of bytes >= 1, got {max_answer_bytes!r}"
            )
        self._max_answer_bytes = max_answer_bytes
        self._endpoint = endpoint.split("?", 1)[0]
        self._spec_options = spec_options
        self._envelope = Envelope(
            credential=credential,
            public_key=public_key,
            crypto_options=crypto_options,
            key_max_uses=key_max_uses,
            key_max_age_s=key_max_age_s,
            xml_declaration=self._spec_options.xml_declaration,
        )
        self._encoding = self._envelope.options.text_encoding
        self._aliases = xml.reverse_aliases(self._spec_options)
        if wsdl is None:
            self._wsdl = str(DEFAULT_WSDL)
        elif str(wsdl) == "live":
            self._wsdl = self._endpoint + "?wsdl"
        else:
            self._wsdl = str(wsdl)
        self._timeout = (connect_timeout, timeout)
        self._wsdl_timeout = wsdl_timeout
        self._deadline_s = float(deadline_s)
        self._own_session = session is None
        self._session = session or self._new_session(pool_size, proxies, verify)
        if not self._own_session and not isinstance(self._session.get_adapter("http://x"), PlatformAdapter):
            mount_adapter(self._session, pool_size)  # the deadline needs the watched pools
        self._service: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def _new_session(
        pool_size: int, proxies: Mapping[str, str] | None, verify: bool | str
    ) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxy or .netrc picked up from the environment by surprise
        if proxies:
            session.proxies.update(proxies)
        session.verify = verify
        mount_adapter(session, pool_size)
        return session

    # ---------------------------------------------------------------------------------------
    # life cycle
    # ---------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def wsdl(self) -> str:
        return self._wsdl

    @property
    def max_answer_bytes(self) -> int:
        return self._max_answer_bytes

    @property
    def deadline_s(self) -> float:
        return self._deadline_s

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PlatformClient(endpoint={self._endpoint!r}, org_code={self._envelope.org_code!r})"

    def __reduce_ex__(self, protocol: object) -> object:
        raise TypeError("a PlatformClient holds credentials and keys and must not be pickled or sent to XCom")

    def _service_proxy(self) -> _Envelopes:
        with self._lock:
            if self._service is None:
                self._service = _Envelopes(self._load_service())
            return self._service

    def _load_service(self) -> Any:
        transport = _QuietTransport(
            session=self._session,
            timeout=self._wsdl_timeout,
            operation_timeout=self._timeout,
            max_answer_bytes=self._max_answer_bytes,
            deadline_s=self._deadline_s,
        )
        settings = ZeepSettings(
            strict=True, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        try:
            client = ZeepClient(self._wsdl, transport=transport, settings=settings)
        except requests.RequestException as exc:
            raise _transport_error(exc, what=f"loading the WSDL {self._wsdl}") from None
        except _DeadlinePassed as exc:
            raise TimeoutError(
                f"loading the WSDL {self._wsdl}: not complete within the deadline of {exc.seconds:g} s; "
                "retry later, or use the WSDL we ship (wsdl=None / HURREN_PLATFORM_WSDL=shipped)",
                method="WSDL",
            ) from None
        except _TooLarge as exc:
            size = f"announces {exc.announced} bytes" if exc.announced is not None else "goes on"
            raise ConfigurationError(
                f"the WSDL {self._wsdl} {size}, more than the {exc.cap} bytes a WSDL may have; refused. "
                "Check the URL, or use the WSDL we ship (HURREN_PLATFORM_WSDL=shipped)"
            ) from None
        except (zeep_exceptions.Error, OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot use the WSDL {self._wsdl}: {type(exc).__name__}: {str(exc)[:200]}; "
                "check the path or URL (wsdl=None uses the one we ship)"
            ) from None
        candidates = [
            port.binding
            for service in client.wsdl.services.values()
            for port in service.ports.values()
            if all(name in port.binding.all() for name in METHODS)
        ]
        # SOAP 1.1 first: what the spec's platforms (and our simulator) speak
        candidates.sort(key=lambda b: not isinstance(b, Soap11Binding))
        binding = candidates[0] if candidates else None
        if binding is None:
            raise ConfigurationError(
                f"the WSDL {self._wsdl} has no SOAP binding offering all of {sorted(METHODS)}; "
                "is it the region platform's Myhealth service?"
            )
        return client.create_service(binding.name, self._endpoint)

    # ---------------------------------------------------------------------------------------
    # low level
    # ---------------------------------------------------------------------------------------

    def invoke(self, method_name: str, *, payload: str, credential: str, key: str) -> str:
        """One SOAP call with the three strings exactly as given; the raw answer text.

        For the command line and tests of malformed input; what ``seal`` made goes through
        ``invoke_sealed`` (or ``call``).
        """
        return self._invoke(method(method_name), (payload, credential, key), base64=False)

    def invoke_sealed(self, method_name: str, sealed: Sealed) -> str:
        """One SOAP call with the strings of ``seal``; the raw answer text."""
        return self._invoke(method(method_name), (sealed.payload, sealed.credential, sealed.key), base64=True)

    def _invoke(self, m: Method, args: tuple[str, str, str], *, base64: bool) -> str:
        service = self._service_proxy()
        started = time.perf_counter()
        _call.method = m.name
        try:
            answer = service.send(m.name, args, base64=base64)
        except requests.RequestException as exc:
            raise _transport_error(exc, what=m.name) from None
        except _DeadlinePassed as exc:
            raise TimeoutError(
                f"{m.name}: no complete answer within the deadline of {exc.seconds:g} s (it kept dripping in); "
                "retry later",
                method=m.name,
            ) from None
        except _Fault as exc:
            raise SoapFault(exc.code, exc.text, method=m.name) from None
        except zeep_exceptions.Fault as exc:  # one our inspection did not see: the same reading
            raise SoapFault(
                (exc.code or "").rsplit(":", 1)[-1], str(exc.message or ""), method=m.name
            ) from None
        except _Unexpected as exc:
            reason = refusal(exc.text)  # a refusal is a refusal wherever it is written ...
            if reason is not None:
                raise BusinessError(reason, method=m.name) from None
            raise AnswerError(  # ... but nothing else there is an answer, an "ok" least of all
                f"{m.name}: the platform answered {exc.where} instead of <{m.name}Result>: {exc.text[:300]!r}; "
                "not taken as an answer (if its WSDL names the result so, use HURREN_PLATFORM_WSDL=live)",
                method=m.name,
            ) from None
        except _TooLarge as exc:
            cap = f"the cap of {exc.cap} bytes (max_answer_bytes / HURREN_PLATFORM_MAX_ANSWER_BYTES)"
            if exc.announced is not None:
                what = f"announces {exc.announced} bytes, more than {cap}; refused without reading it"
            else:
                what = f"is bigger than {cap}; refused after {exc.read} bytes, the rest unread"
            raise AnswerError(f"{m.name}: the answer {what}", method=m.name) from None
        except _DoctypeAnswer:
            raise AnswerError(
                f"{m.name}: the SOAP answer contains a DOCTYPE; refused (XXE protection)", method=m.name
            ) from None
        except zeep_exceptions.TransportError as exc:
            if exc.status_code == 200:  # HTTP was fine, the SOAP envelope was not XML
                raise AnswerError(
                    f"{m.name}: the SOAP answer is not well-formed XML", method=m.name
                ) from None
            raise HTTPStatusError(
                f"{m.name}: the platform answered HTTP {exc.status_code} instead of a SOAP answer; "
                "retry later, and check the endpoint if it persists",
                method=m.name,
                status_code=exc.status_code or None,
            ) from None
        except _HTTPStatus as exc:
            raise HTTPStatusError(
                f"{m.name}: the platform answered HTTP {exc.status_code} instead of a SOAP answer; "
                "retry later, and check the endpoint if it persists",
                method=m.name,
                status_code=exc.status_code or None,
            ) from None
        except (zeep_exceptions.Error, ValueError) as exc:  # XML syntax, DTD, unexpected elements
            raise AnswerError(
                f"{m.name}: the SOAP answer cannot be read ({type(exc).__name__}: {str(exc)[:160]})",
                method=m.name,
            ) from None
        finally:
            _call.method = None
        elapsed = time.perf_counter() - started
        if answer is not None and not isinstance(answer, str):
            raise AnswerError(
                f"{m.name}: expected one string as the answer, got {type(answer).__name__}", method=m.name
            )
        log.debug("%s answered in %.1f ms (%d chars)", m.name, elapsed * 1000, len(answer or ""))
        return answer

    def seal(self, payload: bytes) -> Sealed:
        """Encrypt a payload for one call (exposed for the command line and the benchmark)."""
        return self._envelope.seal(payload)

    def call(self, method_name: str, payload: bytes) -> Ack | QueryResult:
        """Encrypt ``payload`` (XML bytes), send it, read the answer by the method's kind."""
        m = method(method_name)
        sealed = self._envelope.seal(payload)
        answer = self.invoke_sealed(m.name, sealed)
        return self._read(m, answer, sealed)

    def call_document(self, method_name: str, document: bytes) -> Ack | QueryResult:
        """Like ``call``, for an XML document written by hand (the command line's payload file):
        re-encoded in the platform's text encoding, with or without the declaration (D21), as the
        builders write it, so a file sends exactly as the pipeline would."""
        payload = xml.normalise_document(document, encoding=self._encoding, options=self._spec_options)
        return self.call(method_name, payload)

    def _read(self, m: Method, answer: str | None, sealed: Sealed) -> Ack | QueryResult:
        if m.kind != "query":
            return read_submit(answer, method=m.name)
        ack = read_status(answer, method=m.name)
        if ack is not None:
            assert answer is not None
            raise AnswerError(
                f"{m.name} answered {answer.strip()[:40]!r} where encrypted XML was expected; the query "
                "result is unknown",
                method=m.name,
            )
        assert answer is not None
        data = self._envelope.open_answer(answer, sealed.session, method=m.name)
        return read_query(data, method=m.name, aliases=self._aliases, encoding=self._encoding)

    def _submit(self, method_name: str, payload: bytes) -> Ack:
        result = self.call(method_name, payload)
        assert isinstance(result, Ack)
        return result

    def _query(self, method_name: str, payload: bytes) -> QueryResult:
        result = self.call(method_name, payload)
        assert isinstance(result, QueryResult)
        return result

    # ---------------------------------------------------------------------------------------
    # the ten methods
    # ---------------------------------------------------------------------------------------

    def archive_report(
        self, kind: xml.ReportKind, master: Mapping[str, Any], items: Iterable[Mapping[str, Any]]
    ) -> Ack:
        """ArchiveAutoReport with one lab (``kind="lab"``) or exam report and its sub-items."""
        payload = xml.build_report(kind, master, items, options=self._spec_options, encoding=self._encoding)
        return self._submit("ArchiveAutoReport", payload)

    def archive_lab_report(self, master: Mapping[str, Any], items: Iterable[Mapping[str, Any]]) -> Ack:
        """ArchiveAutoReport, §1.2.2.1: labmaster + lab_subitem."""
        return self.archive_report("lab", master, items)

    def archive_exam_report(self, master: Mapping[str, Any], items: Iterable[Mapping[str, Any]]) -> Ack:
        """ArchiveAutoReport, §1.2.2.3: exammaster + exam_subitem."""
        return self.archive_report("exam", master, items)

    def archive_daily_counts(self, rows: Iterable[Mapping[str, Any]]) -> Ack:
        """ArchiveAutoReport, §1.2.2.5: lab_exam_report rows (per org, day and ordering department)."""
        return self._submit(
            "ArchiveAutoReport",
            xml.build_daily_counts(rows, options=self._spec_options, encoding=self._encoding),
        )

    def delete_lab_report(self, report: Mapping[str, Any]) -> Ack:
        """DeleteLabInfo, §1.2.2.2. ``Ack.text`` names who quoted the report, if anybody did."""
        payload = xml.build_void_filter("lab", report, options=self._spec_options, encoding=self._encoding)
        return self._submit("DeleteLabInfo", payload)

    def delete_exam_report(self, report: Mapping[str, Any]) -> Ack:
        """DeleteExamInfo, §1.2.2.4. ``Ack.text`` names who quoted the report, if anybody did."""
        payload = xml.build_void_filter("exam", report, options=self._spec_options, encoding=self._encoding)
        return self._submit("DeleteExamInfo", payload)

    def submit_accept(self, records: Iterable[Mapping[str, Any]]) -> Ack:
        """SubmitAccept, §1.3.2.5 / §1.4.2.3: sehr_accept_record rows."""
        payload = xml.build_records(
            "sehr_accept_record", records, options=self._spec_options, encoding=self._encoding
        )
        return self._submit("SubmitAccept", payload)

    def submit_quote(self, records: Iterable[Mapping[str, Any]]) -> Ack:
        """SubmitQuote, §1.3.2.6 / §1.4.2.6: sehr_quote_record rows."""
        payload = xml.build_records(
            "sehr_quote_record", records, options=self._spec_options, encoding=self._encoding
        )
        return self._submit("SubmitQuote", payload)

    def query(
        self,
        method_name: str,
        *,
        id_no: str,
        id_type: str,
        event_no: str | None = None,
        **recure: Any,
    ) -> QueryResult:
        """Any query method by name, its filter built from these values (the command line's path;
        the typed methods below call it). ``recure``: ExistsReCureInfo's other filter attributes
        (``dept_code`` … ``doc_name``) and code lists (``check``, ``lab``)."""
        m = method(method_name)
        if m.kind != "query":
            raise PayloadError(f"{m.name} is not a query method")
        if m.name == "ExistsReCureInfo":
            payload = xml.build_recure_filter(
                id_no=id_no, id_type=id_type, event_no=event_no, **recure, options=self._spec_options,
                encoding=self._encoding,
            )  # fmt: skip
        elif recure:
            raise PayloadError(f"{m.name} filters by id_no, id_type and event_no only, not {sorted(recure)}")
        else:
            payload = xml.build_query_filter(
                m.name, id_no=id_no, id_type=id_type, event_no=event_no, options=self._spec_options,
                encoding=self._encoding,
            )  # fmt: skip
        return self._query(m.name, payload)

    def get_check_lab_list(self, *, id_no: str, id_type: str) -> QueryResult:
        """GetCheckLabList, §1.3.2.1 / §1.4.2.1: recent reports → ``result["item"]``."""
        return self.query("GetCheckLabList", id_no=id_no, id_type=id_type)

    def get_check_lab_info(self, *, id_no: str, id_type: str, event_no: str | None = None) -> QueryResult:
        """GetCheckLabInfo, §1.3.2.2: recognisable reports → labmaster/lab_subitem/exammaster/exam_subitem."""
        return self.query("GetCheckLabInfo", id_no=id_no, id_type=id_type, event_no=event_no)

    def exists_recure_info(
        self,
        *,
        id_no: str,
        id_type: str,
        event_no: str | None = None,
        dept_code: str | None = None,
        dept_name: str | None = None,
        dept_std_code: str | None = None,
        dept_std_name: str | None = None,
        doc_code: str | None = None,
        doc_name: str | None = None,
        check: Sequence[str] = (),
        lab: Sequence[str] = (),
    ) -> QueryResult:
        """ExistsReCureInfo, §1.4.2.2: which of these exam (``check``) / lab codes are recognisable."""
        return self.query(
            "ExistsReCureInfo", id_no=id_no, id_type=id_type, event_no=event_no, dept_code=dept_code,
            dept_name=dept_name, dept_std_code=dept_std_code, dept_std_name=dept_std_name, doc_code=doc_code,
            doc_name=doc_name, check=check, lab=lab,
        )  # fmt: skip

    def get_lab_info(self, *, id_no: str, id_type: str, event_no: str | None = None) -> QueryResult:
        """GetLabInfo, §1.4.2.4: lab reports to quote → ``result["labmaster"]`` with ``items``."""
        return self.query("GetLabInfo", id_no=id_no, id_type=id_type, event_no=event_no)

    def get_exam_info(self, *, id_no: str, id_type: str, event_no: str | None = None) -> QueryResult:
        """GetExamInfo, §1.4.2.5: exam reports to quote → ``result["exammaster"]`` (each with
        ``patient_local_id`` where the platform sends it, D22)."""
        return self.query("GetExamInfo", id_no=id_no, id_type=id_type, event_no=event_no)


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while exc.__context__ is not None or exc.__cause__ is not None:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        exc = nxt
    return exc


def _reasons(exc: BaseException) -> list[BaseException]:
    """The chain of causes, including urllib3's wrapped ``reason`` attributes."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or any(cur is seen for seen in out):
            continue
        out.append(cur)
        todo.extend([cur.__cause__, cur.__context__])
        for arg in getattr(cur, "args", ()):
            if isinstance(arg, BaseException):
                todo.append(arg)
        reason = getattr(cur, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return out


def _transport_error(exc: requests.RequestException, *, what: str) -> PlatformError:
    """requests/urllib3 failures → our TransportError subclasses, with what to do next."""
    causes = _reasons(exc)
    if isinstance(exc, requests.Timeout):
        phase = "connecting" if isinstance(exc, requests.ConnectTimeout) else "waiting for the answer"
        return TimeoutError(
            f"{what}: timed out {phase}; the platform is slow or unreachable, retry later", method=what
        )
    if any(isinstance(c, urllib3.exceptions.NewConnectionError | ConnectionRefusedError) for c in causes):
        return ConnectError(
            f"{what}: cannot connect to the platform (connection refused or unreachable); check the endpoint "
            "and that the service is up, then retry",
            method=what,
        )
    # before resets: RemoteDisconnected is a ConnectionResetError
    if any(isinstance(c, http.client.RemoteDisconnected | http.client.IncompleteRead) for c in causes):
        return RemoteProtocolError(
            f"{what}: the platform closed the connection without answering; it may have processed the "
            "call, retrying is safe (submissions are upserts by key)",
            method=what,
        )
    if any(isinstance(c, ConnectionResetError | BrokenPipeError) for c in causes):
        # unreachable, not a counted retry: during an outage a balancer resets what it cannot serve
        return ConnectError(
            f"{what}: the platform reset the connection; it may have processed the call, retrying is safe "
            "(submissions are upserts by key); retry later",
            method=what,
        )
    if isinstance(exc, requests.ConnectionError):
        return ConnectError(
            f"{what}: connection failed ({type(_root_cause(exc)).__name__}); retry later", method=what
        )
    return TransportError(f"{what}: HTTP request failed ({type(exc).__name__}); retry later", method=what)
