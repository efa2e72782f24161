"""The platform's answers as typed results.

Every method answers one string (spec §1.2-1.4):

- ``ok`` → ``Ack(text=None)``; ``ok:<text>`` → ``Ack(text=...)`` (a void of a report somebody
  quoted: the text names the quoting org/dept/doctor, kept as the platform wrote it);
- ``error:<reason>`` → :class:`BusinessError` is raised, for every method alike. We raise rather
  than return a ``Rejected`` result so that a caller cannot mistake a refusal for an
  acknowledgement by forgetting a check; ``BusinessError.reason`` holds the platform's text;
- query methods: Base64 of SM4-encrypted XML → :class:`QueryResult` (decryption is the
  envelope's job, see ``Envelope.open_answer``).

Answers are read leniently: any case, spaces around, and the full-width colon the spec's Chinese
text uses (``error：原因``). Anything else raises :class:`AnswerError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hurren.platform.exceptions import AnswerError, BusinessError
from hurren.platform.xml import parse_records, parse_xml

__all__ = ["Ack", "QueryResult", "describe", "read_query", "read_status", "read_submit", "refusal"]

_OK = re.compile(r"\s*ok\s*(?:[:：](.*))?", re.I | re.S)
_ERROR = re.compile(r"\s*error\s*(?:[:：](.*))?", re.I | re.S)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The platform acknowledged the call (``ok`` or ``ok:<text>``)."""

    method: str
    text: str | None = None

    @property
    def quoted(self) -> bool:
        """A void answered ``ok:<who quoted the report>``."""
        return bool(self.text)


@dataclass(frozen=True, kw_only=True)
class QueryResult:
    """A decrypted query answer: ``records[tag]`` lists the records under ``<root>`` by element name.

    Shapes (see ``hurren.platform.xml.parse_records``): GetCheckLabList → ``records["item"]``;
    GetCheckLabInfo → ``labmaster``/``lab_subitem``/``exammaster``/``exam_subitem``;
    ExistsReCureInfo, GetLabInfo, GetExamInfo → ``labmaster``/``exammaster`` records, each with
    ``"items"`` when it has item children. Values are the platform's raw text.
    ``repr`` shows counts only: the records hold patient identifiers.
    """

    method: str
    xml: bytes = field(repr=False)
    records: Mapping[str, list[dict[str, Any]]] = field(repr=False)

    def __getitem__(self, tag: str) -> list[dict[str, Any]]:
        return self.records.get(tag, [])

    @property
    def empty(self) -> bool:
        """``<root />``: no record."""
        return not any(self.records.values())

    def counts(self) -> dict[str, int]:
        return {tag: len(rows) for tag, rows in self.records.items()}

    def __repr__(self) -> str:
        return f"QueryResult(method={self.method!r}, counts={self.counts()})"


def describe(answer: str) -> str:
    """A short, safe description of an unexpected answer for an error message."""
    head = answer[:24].replace("\n", " ")
    return f"{len(answer)} characters starting {head!r}"


def read_status(answer: str | None, *, method: str) -> Ack | None:
    """``Ack`` for ok, ``BusinessError`` for error, None for anything else (an encrypted answer)."""
    if answer is None or not answer.strip():
        raise AnswerError(
            f"{method} answered nothing (empty result); the outcome is unknown, retry", method=method
        )
    match = _OK.fullmatch(answer)
    if match:
        return Ack(method=method, text=(match.group(1) or "").strip() or None)
    reason = refusal(answer)
    if reason is not None:
        raise BusinessError(reason, method=method)
    return None


def refusal(answer: str) -> str | None:
    """The reason of an ``error:<reason>`` answer (read leniently), else None."""
    match = _ERROR.fullmatch(answer)
    return None if match is None else (match.group(1) or "").strip() or "(no reason given)"


def read_submit(answer: str | None, *, method: str) -> Ack:
    """The answer of a submit or void method: ok / ok:<text> / error:<reason>."""
    ack = read_status(answer, method=method)
    if ack is None:
        assert answer is not None
        raise AnswerError(
            f"{method} answered neither ok nor error: ({describe(answer)}); the outcome is unknown. "
            "Check that the endpoint is the region platform's Myhealth service",
            method=method,
        )
    return ack


def read_query(
    xml: bytes, *, method: str, aliases: Mapping[str, str] | None = None, encoding: str = "utf-8"
) -> QueryResult:
    """Parse a decrypted query answer into a :class:`QueryResult`."""
    root = parse_xml(xml, what=f"the decrypted {method} answer", encoding=encoding)
    return QueryResult(method=method, xml=xml, records=parse_records(root, aliases=aliases))
