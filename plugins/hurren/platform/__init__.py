"""The region platform's side of the pipeline: XML payloads, the SM4/SM2 envelope, the SOAP client.

    from hurren.platform import Credential, PlatformClient
    with PlatformClient(endpoint=url, credential=Credential(...), public_key=key) as client:
        client.archive_lab_report(master, subitems)      # → Ack, or raises a PlatformError

Modules: ``methods`` (the ten methods as data), ``xml`` (builders and safe parsers), ``answers``
(typed results), ``envelope`` (credential, encryption), ``client`` (zeep), ``exceptions``
(the hierarchy, drawn in its docstring), ``__main__`` (the command line: ``python -m hurren.platform --help``).
"""

from __future__ import annotations

from hurren.platform.answers import Ack, QueryResult
from hurren.platform.client import DEFAULT_WSDL, PlatformClient
from hurren.platform.envelope import Credential, Envelope
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
from hurren.platform.methods import METHODS, Method

__all__ = [
    "DEFAULT_WSDL",
    "METHODS",
    "Ack",
    "AnswerError",
    "BusinessError",
    "ConfigurationError",
    "ConnectError",
    "Credential",
    "Envelope",
    "HTTPStatusError",
    "Method",
    "PayloadError",
    "PlatformClient",
    "PlatformError",
    "QueryResult",
    "RemoteProtocolError",
    "SoapFault",
    "TimeoutError",
    "TransportError",
]
