"""The ten SOAP methods of the region platform (spec §1.2.2, §1.3.2, §1.4.2) as data.

Every method takes three strings, the payload (``strReportInfo`` or ``strFilter``),
``strCredential`` and ``strKey``, and returns one string. ``kind`` says what the answer is:
``submit`` → ``ok`` / ``error:``; ``void`` → ``ok`` / ``ok:<who quoted the report>`` / ``error:``;
``query`` → Base64 of SM4-encrypted XML, or ``error:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MethodKind = Literal["submit", "void", "query"]
MethodName = Literal[
    "ArchiveAutoReport",
    "DeleteLabInfo",
    "DeleteExamInfo",
    "SubmitAccept",
    "SubmitQuote",
    "GetCheckLabList",
    "GetCheckLabInfo",
    "ExistsReCureInfo",
    "GetLabInfo",
    "GetExamInfo",
]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    kind: MethodKind
    payload_param: Literal["strReportInfo", "strFilter"]
    section: str

    @property
    def params(self) -> tuple[str, str, str]:
        return (self.payload_param, "strCredential", "strKey")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ArchiveAutoReport", "submit", "strReportInfo", "1.2.2.1/1.2.2.3/1.2.2.5"),
        Method("DeleteLabInfo", "void", "strFilter", "1.2.2.2"),
        Method("DeleteExamInfo", "void", "strFilter", "1.2.2.4"),
        Method("SubmitAccept", "submit", "strReportInfo", "1.3.2.5/1.4.2.3"),
        Method("SubmitQuote", "submit", "strReportInfo", "1.3.2.6/1.4.2.6"),
        Method("GetCheckLabList", "query", "strFilter", "1.3.2.1/1.4.2.1"),
        Method("GetCheckLabInfo", "query", "strFilter", "1.3.2.2"),
        Method("ExistsReCureInfo", "query", "strFilter", "1.4.2.2"),
        Method("GetLabInfo", "query", "strFilter", "1.4.2.4"),
        Method("GetExamInfo", "query", "strFilter", "1.4.2.5"),
    )
}


def method(name: str) -> Method:
    """The method called ``name`` (exact spelling, as in the WSDL)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown platform method {name!r}; one of {sorted(METHODS)}") from None
