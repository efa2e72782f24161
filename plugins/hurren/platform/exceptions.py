"""What can go wrong when talking to the region platform, as one hierarchy.

    PlatformError                 base class; ``retryable`` says whether the same call may succeed later
    ├── ConfigurationError        the client is set up wrongly (endpoint, WSDL, credential, public key)
    ├── PayloadError              XML we refuse to build (text XML cannot carry, a sub-item of another report)
    ├── TransportError            no usable answer came back; the platform may or may not have acted
    │   ├── ConnectError          could not connect, or the connection was refused or reset: most likely not processed
    │   ├── RemoteProtocolError   the connection closed after the request was sent, without an answer
    │   ├── TimeoutError          no answer within the timeout, or not all of it within the deadline
    │   │                         (also a builtin ``TimeoutError``)
    │   └── HTTPStatusError       HTTP 4xx/5xx without a SOAP answer (an error page)
    ├── BusinessError             the platform answered ``error:<reason>``: it refused this payload
    ├── SoapFault                 the platform answered a SOAP fault; ``code`` Client/Sender: it refused
    │                             the call (not retryable), any other code: it failed (retryable)
    └── AnswerError               the answer is malformed: not ok/error, bad Base64, undecryptable, bad XML,
                                  DOCTYPE, another element than the method's result (its text quoted)

Every method of the client either returns a typed result (``Ack``, ``QueryResult``) or raises one
of these, so a caller can tell per report: acknowledged (a result), rejected (``BusinessError``,
or a Client ``SoapFault``: not retryable, fix the data), or not known (``TransportError`` /
``AnswerError`` / a Server ``SoapFault``, retryable: a resubmission with the same key is an upsert
on the platform, so retrying is safe). What the platform wrote (an ``error:`` reason, a fault's
text, the text of an unexpected answer element) is kept as it wrote it: the push masks patient
identifiers in what it logs (``hurren.reports.masking.mask_text``).

``TimeoutError`` also derives from the builtin ``TimeoutError`` (so ``except TimeoutError``
catches it without an import), which makes it an ``OSError``: catch ``PlatformError`` before
``OSError`` where both are handled. ``ConnectError`` vs ``RemoteProtocolError`` is a hint, not a
promise: a reset or close seen while the request was still being sent can surface as either.

Messages say what to do next. They never contain credentials, keys or patient identifiers; a
platform's ``error:`` reason is kept as the platform wrote it (``BusinessError.reason``).
"""

from __future__ import annotations

import builtins

__all__ = [
    "AnswerError",
    "BusinessError",
    "ConfigurationError",
    "ConnectError",
    "HTTPStatusError",
    "PayloadError",
    "PlatformError",
    "RemoteProtocolError",
    "SoapFault",
    "TimeoutError",
    "TransportError",
]


class PlatformError(Exception):
    """Base class of every error of the platform client."""

    retryable: bool = False


class ConfigurationError(PlatformError, ValueError):
    """The client cannot be used as configured; fix the settings, retrying will not help."""


class PayloadError(PlatformError, ValueError):
    """We refuse to build this XML; ``entity`` and ``field`` name the culprit (never its value)."""

    def __init__(self, message: str, *, entity: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.entity = entity
        self.field = field


class TransportError(PlatformError):
    """No usable answer: the call may be retried (the platform upserts by key)."""

    retryable = True

    def __init__(self, message: str, *, method: str | None = None) -> None:
        super().__init__(message)
        self.method = method


class ConnectError(TransportError):
    """The connection could not be made, or was refused or reset before the request went out."""


class RemoteProtocolError(TransportError):
    """The platform closed the connection without answering; it may have processed the request."""


class TimeoutError(TransportError, builtins.TimeoutError):  # noqa: A001 - httpx-style name, still a builtin TimeoutError
    """No answer within the configured timeout."""

    def __init__(self, message: str, *, method: str | None = None) -> None:
        TransportError.__init__(self, message, method=method)

    def __str__(self) -> str:  # OSError's own __str__ would print an errno tuple
        return str(self.args[0]) if self.args else ""


class HTTPStatusError(TransportError):
    """HTTP status other than 200, or a SOAP fault; 4xx is not retryable, 5xx is."""

    def __init__(self, message: str, *, method: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, method=method)
        self.status_code = status_code
        self.retryable = status_code is None or status_code >= 500


class BusinessError(PlatformError):
    """The platform answered ``error:<reason>``: it refused this call. Fix the data, do not retry as is."""

    def __init__(self, reason: str, *, method: str | None = None) -> None:
        shown = reason if len(reason) <= 500 else reason[:500] + "..."
        super().__init__(f"{method or 'the platform'} answered error: {shown}")
        self.reason = reason
        self.method = method


class SoapFault(PlatformError):
    """The platform answered a SOAP fault. ``code`` is the fault code's local name (``Client``,
    ``Server``, SOAP 1.2's ``Sender`` / ``Receiver``), ``text`` the fault string as written.

    A Client (Sender) fault says this request is at fault: sent again unchanged it fails again,
    like an ``error:`` answer, so it is not retryable. Any other fault is the platform failing
    (an unhandled exception behind an ASMX service is a Server fault): retryable."""

    def __init__(self, code: str, text: str, *, method: str | None = None) -> None:
        shown = text if len(text) <= 500 else text[:500] + "..."
        super().__init__(f"{method or 'the platform'} answered a SOAP fault ({code or 'no code'}): {shown}")
        self.code = code
        self.text = text
        self.method = method
        self.retryable = code.lower() not in ("client", "sender")


class AnswerError(PlatformError):
    """The platform's answer cannot be understood; the outcome of the call is unknown."""

    retryable = True

    def __init__(self, message: str, *, method: str | None = None) -> None:
        super().__init__(message)
        self.method = method
