"""The simulated platform's behaviour: the ten methods, as the spec describes them.

:meth:`Platform.handle` takes a method name and its three strings and returns the answer text;
it never raises. Every refusal is ``error:<reason>`` naming the parameter, entity, field and
problem, never a patient identifier in clear.

Readings of the spec where it is silent (ours, documented here and in the README):

- Voids (DeleteLabInfo/DeleteExamInfo) match the master's key (org_code, report_form_no,
  patient_id, event_type, event_no) and check id_no/id_type; an unknown report is
  ``error:``, an already void one ``ok`` (a retried void must not fail). When a quote record
  (SubmitQuote, matching hr_org_code, hr_report_form_no and type 1 exam / 2 lab) references the
  report, the answer is ``ok:<quoting org> <dept> <doctor>[; ...]``.
- "Recent" is authenticator_dtime within ``recent_days`` (90) of now (Beijing time); void reports
  are never answered. A recognised item (recognition=1) expires ``recognition_days`` (30) after
  its report's authenticator_dtime; ExistsReCureInfo skips expired items.
- GetCheckLabList: one ``item`` per lab report (class code/name; recognition=1 when a sub-item is)
  and one per exam sub-item. GetCheckLabInfo: recent reports with at least one recognised item,
  masters (no PDF, plus org_name/url/pdf_url) and all their sub-items.
- GetLabInfo/GetExamInfo with an event_no: the reports and items accepted (SubmitAccept,
  is_accept=1, new_event_no=event_no; type 2 lab, 1 exam) for that visit; without one: every
  recent report. GetExamInfo answers one ``exammaster`` per exam sub-item, merged with its master.
- Answers use the spellings of the spec's answer examples (``patient_condition_descr``,
  ``outpatient_diag_name``), so clients meet D2 in tests as they will in production. Exam
  answers (GetCheckLabInfo, GetExamInfo) carry ``patient_local_id``, as the spec's answer
  examples do: the value registered with the report, else its ``patient_id`` (D22). A
  registration may carry it (the spec's exam example does, its table does not).
- The profile (``SpecOptions``) is enforced where it describes the platform: D20
  ``update_mode="void_then_register"`` refuses a registration that changes a report the platform
  holds (not void) — an identical one, a retried call, is an upsert as ever; D21
  ``xml_declaration`` requires the declaration on every payload and credential (naming the text
  encoding) or refuses one, and answers are written the same way, in the text encoding.
- Fast-ack (``check_rate`` below 1, for benchmarks): only that share of submissions (the first, then
  one in every 1/rate) is checked field by field against the spec; every submission is still
  decrypted, parsed, held to its XML shape and D20, and stored (the report's key, attributes and the
  PDF's size and SHA-256), so what the platform holds can still be verified. ``received()`` counts
  the checked and unchecked payloads.
"""

from __future__ import annotations

import codecs
import json
import logging
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from lxml import etree

from hurren import spec
from hurren.platform import xml
from hurren.platform.envelope import Credential, UnsealError, open_request, seal_answer, unwrap
from hurren.platform.exceptions import AnswerError
from hurren.platform.methods import METHODS, Method
from hurren.reports import masking
from hurren_testkit.simulator import checks
from hurren_testkit.simulator.config import SimulatorConfig
from hurren_testkit.simulator.faults import FaultInjector
from hurren_testkit.simulator.store import Store, StoredReport

__all__ = ["Platform", "Refused"]

log = logging.getLogger("hurren_testkit.simulator")

_MAX_PROBLEMS = 8
_KEY_CACHE = 4096
_CHECK_SPELLINGS = {"patient_condition_desc": "patient_condition_descr"}  # as GetCheckLabInfo's example
_EXAM_SPELLINGS = {**_CHECK_SPELLINGS, "outpat_diag_name": "outpatient_diag_name"}  # as GetExamInfo's example


class Refused(Exception):
    """Internal: the answer is ``error:<reason>``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _now_beijing() -> datetime:
    return datetime.now(xml.BEIJING).replace(tzinfo=None, microsecond=0)


def _fmt(at: datetime) -> str:
    return at.strftime(spec.DATETIME_FORMAT)


def _parse_dt(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, spec.DATETIME_FORMAT)
    except (TypeError, ValueError):
        return None


class Stats:
    """What the simulator received: counts only, and error reasons (which never hold identifiers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.calls: Counter[str] = Counter()
            self.answers: Counter[str] = Counter()
            self.refused_by_part: Counter[str] = Counter()
            self.decrypted_payloads = 0
            self.payload_bytes = 0
            self.effective_dtime_drift = 0  # D9 warnings
            self.checked_payloads = 0
            self.unchecked_payloads = 0  # fast-ack: stored without the field-by-field checks
            self.connections = 0  # TCP connections accepted
            self.session_keys = 0  # strKeys (SM2-wrapped session keys) seen: one per key window
            self.last_errors: deque[str] = deque(maxlen=20)

    def add(self, **values: Any) -> None:
        with self._lock:
            for name, value in values.items():
                if name == "call":
                    self.calls[value] += 1
                elif name == "answer":
                    self.answers[value] += 1
                elif name == "refused":
                    self.refused_by_part[value] += 1
                elif name == "error":
                    self.last_errors.append(value)
                else:
                    setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "answers": dict(self.answers),
                "refused_by_part": dict(self.refused_by_part),
                "decrypted_payloads": self.decrypted_payloads,
                "payload_bytes": self.payload_bytes,
                "effective_dtime_drift_warnings": self.effective_dtime_drift,
                "checked_payloads": self.checked_payloads,
                "unchecked_payloads": self.unchecked_payloads,
                "connections": self.connections,
                "session_keys": self.session_keys,
                "last_errors": list(self.last_errors),
            }


class Platform:
    """The region platform as we simulate it. Thread-safe."""

    def __init__(
        self,
        *,
        config: SimulatorConfig,
        store: Store | None = None,
        clock: Callable[[], datetime] = _now_beijing,
    ) -> None:
        self.config = config
        self.public_key = config.public_key
        self.store = store or Store(path=config.db)
        self.faults = FaultInjector(faults=config.faults)
        self.stats = Stats()
        self._clock = clock
        self._keys: OrderedDict[str, bytes] = OrderedDict()
        self._keys_lock = threading.Lock()
        self._submissions = 0  # counts submissions, to sample the checked ones (check_rate)
        self._visitors = {v.org_code: v for v in config.visitors}
        self._handlers: dict[str, Callable[[Method, etree._Element, Credential, bytes], str]] = {
            "ArchiveAutoReport": self._archive,
            "DeleteLabInfo": self._void,
            "DeleteExamInfo": self._void,
            "SubmitAccept": self._submit_records,
            "SubmitQuote": self._submit_records,
            "GetCheckLabList": self._check_lab_list,
            "GetCheckLabInfo": self._check_lab_info,
            "ExistsReCureInfo": self._recure_info,
            "GetLabInfo": self._lab_info,
            "GetExamInfo": self._exam_info,
        }
        self.base_url = config.base_url()

    def reset(self, *, data: bool = True, faults: bool = True, counters: bool = True) -> None:
        if data:
            self.store.clear()
        if faults:
            self.faults.reset()
        if counters:
            self.stats.reset()

    # -- the envelope ---------------------------------------------------------------------------

    def _session_key(self, str_key: str) -> bytes:
        # The same strKey always unwraps to the same key: caching it spares an SM2 decryption
        # per call (clients reuse a key for a window of calls).
        with self._keys_lock:
            key = self._keys.get(str_key)
            if key is not None:
                self._keys.move_to_end(str_key)
                return key
        key = unwrap(str_key, self.config.private_key, options=self.config.crypto_options)
        with self._keys_lock:
            new = str_key not in self._keys  # calls arriving together may each unwrap a new key once
            self._keys[str_key] = key
            if len(self._keys) > _KEY_CACHE:
                self._keys.popitem(last=False)
        if new:
            self.stats.add(session_keys=1)
        return key

    def _check_credential(self, credential: Credential) -> Credential:
        """The caller's credential if it is a configured visitor's (with the configured org name)."""
        if not self._visitors:
            return credential
        visitor = self._visitors.get(credential.org_code)
        expected = (
            Credential(
                org_code=visitor.org_code, org_name="", visitor_code=visitor.code, visitor_key=visitor.key
            )
            if visitor
            else None
        )
        if expected is None or not expected.matches(credential):
            raise UnsealError(
                "strCredential",
                f"unknown visitor or wrong key for org {credential.org_code!r}; check the visitor code and key",
            )
        assert visitor is not None
        return replace(credential, org_name=visitor.org_name or credential.org_name)

    def handle(self, method_name: str, params: Mapping[str, str | None]) -> str:
        """The answer to one call; never raises."""
        m = METHODS.get(method_name)
        if m is None:
            return self._refuse(f"unknown method {method_name!r}", part="method")
        self.stats.add(call=m.name)
        try:
            key = self._session_key(params.get("strKey") or "")
            opened = open_request(
                payload=params.get(m.payload_param) or "",
                credential=params.get("strCredential") or "",
                key=key,
                payload_param=m.payload_param,
                options=self.config.crypto_options,
            )
            credential = self._check_credential(opened.credential)
            self._check_declaration("strCredential", opened.credential_xml)
            self.stats.add(decrypted_payloads=1, payload_bytes=len(opened.payload))
            try:
                root = xml.parse_xml(
                    opened.payload, what=m.payload_param, encoding=self.config.crypto_options.text_encoding
                )
            except AnswerError as exc:
                raise UnsealError(m.payload_param, str(exc)) from None
            self._check_declaration(m.payload_param, opened.payload)
            answer = self._handlers[m.name](m, root, credential, key)
        except UnsealError as exc:
            return self._refuse(str(exc), part=exc.part)
        except Refused as exc:
            return self._refuse(exc.reason, part="content")
        except (
            Exception
        ) as exc:  # a simulator bug must not kill the server nor leak a traceback to the client
            log.error(
                "%s: internal error %s (run with --log-level DEBUG for the traceback)",
                m.name,
                type(exc).__name__,
            )
            log.debug("%s: internal error", m.name, exc_info=True)
            return self._refuse(f"internal simulator error ({type(exc).__name__})", part="internal")
        self.stats.add(
            answer="query" if m.kind == "query" else "ok:text" if answer.startswith("ok:") else "ok"
        )
        return answer

    def _check_declaration(self, part: str, data: bytes) -> None:
        """D21, as the profile says: a declaration naming our text encoding on every payload and
        credential, or none at all."""
        declared = xml.declared_encoding(data)
        ours = codecs.lookup(self.config.crypto_options.text_encoding).name
        if not self.config.spec_options.xml_declaration:
            if declared is not None:
                raise UnsealError(part, "starts with an XML declaration; this platform takes none (D21)")
            return
        if declared is None:
            raise UnsealError(
                part,
                f'has no XML declaration; this platform expects <?xml version="1.0" encoding="{ours.upper()}"?> '
                "first (D21)",
            )
        if declared != ours:
            raise UnsealError(part, f"declares the encoding {declared}; this platform reads {ours}")

    def injected_refusal(self, method_name: str, params: Mapping[str, str | None]) -> str:
        """The ``error`` fault's answer (nothing stored). With ``quote_identifiers`` it names the
        first record's patient, name and ID number in clear, as a careless platform may; what the
        simulator itself keeps or logs of it is masked."""
        reason = "simulated failure (fault injection); retry later"
        person = self._first_person(method_name, params) if self.faults.faults.quote_identifiers else None
        if person:
            who = " ".join(
                f"{label} {person[k]}"
                for k, label in (("name", "患者"), ("id_no", "身份证号"))
                if person.get(k)
            )
            reason = f"simulated failure (fault injection) for {who}; retry later"
        self.stats.add(
            call=method_name, answer="error", refused="fault", error=masking.mask_text(reason, [person])
        )
        return f"error:{reason}"

    def _first_person(self, method_name: str, params: Mapping[str, str | None]) -> dict[str, Any] | None:
        """The first record of a call's payload that names a patient; None when it cannot be read."""
        m = METHODS.get(method_name)
        if m is None or m.kind == "query":
            return None
        try:
            key = self._session_key(params.get("strKey") or "")
            opened = open_request(payload=params.get(m.payload_param) or "", credential=params.get("strCredential") or "",
                                  key=key, payload_param=m.payload_param, options=self.config.crypto_options)  # fmt: skip
            root = xml.parse_xml(opened.payload, encoding=self.config.crypto_options.text_encoding)
        except (UnsealError, AnswerError):
            return None
        if m.kind == "void":
            return xml.parse_filter(root)
        return next((r for rows in self._records(root).values() for r in rows if r.get("id_no")), None)

    def _refuse(self, reason: str, *, part: str) -> str:
        self.stats.add(answer="error", refused=part, error=reason[:300])
        log.info("refused: %s", reason[:300])
        return f"error:{reason}"

    # -- submissions ----------------------------------------------------------------------------

    def _records(self, root: etree._Element) -> dict[str, list[dict[str, Any]]]:
        return xml.parse_records(root, aliases=xml.reverse_aliases(self.config.spec_options))

    def _checked(self) -> bool:
        """Is this submission checked field by field? The first one is, then one in every
        1/check_rate (all at 1, none at 0)."""
        rate = self.config.check_rate
        with self._keys_lock:
            n = self._submissions
            self._submissions += 1
        checked = rate > 0 if n == 0 else int(n * rate) != int((n - 1) * rate)
        self.stats.add(**{"checked_payloads" if checked else "unchecked_payloads": 1})
        return checked

    def _problems(self, problems: list[checks.Problem]) -> None:
        if problems:
            shown = "; ".join(str(p) for p in problems[:_MAX_PROBLEMS])
            more = f" (and {len(problems) - _MAX_PROBLEMS} more)" if len(problems) > _MAX_PROBLEMS else ""
            raise Refused(shown + more)

    def _archive(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        records = self._records(root)
        names = set(records)
        options = self.config.spec_options
        strict = self.config.strict_attributes
        now = self._clock()
        checked = self._checked()
        for kind, (master_name, item_name) in xml.REPORTS.items():
            if master_name in names and names <= {master_name, item_name}:
                masters, items = records[master_name], records.get(item_name, [])
                if not masters and not checked:
                    raise Refused(f"{master_name}: no report in the payload (an <item> is required)")
                if checked:
                    self._problems(
                        checks.check_report(
                            spec.entity(master_name),
                            masters,
                            spec.entity(item_name),
                            items,
                            options=options,
                            strict=strict,
                        )
                    )
                    drift = checks.effective_drift(masters, items, options.effective_dtime_tolerance_s)
                    if drift:
                        self.stats.add(effective_dtime_drift=drift)
                shared = [k for k in spec.entity(item_name).key if k in spec.entity(master_name).key]
                reports = [
                    (master, [i for i in items if all(i.get(k) == master.get(k) for k in shared)])
                    for master in masters
                ]
                if options.update_mode == "void_then_register":
                    self._problems(
                        [p for master, own in reports for p in self._update_problems(kind, master, own)]
                    )
                for master, own in reports:
                    self.store.put_report(
                        kind,
                        master,
                        own,
                        submitter_org=credential.org_code,
                        submitter_org_name=credential.org_name,
                        now=now,
                    )
                return "ok"
        if names == {"lab_exam_report"}:
            rows = records["lab_exam_report"]
            problems = (
                checks.check_records(spec.entity("lab_exam_report"), rows, options=options, strict=strict)
                if checked
                else []
            )
            if not rows:
                problems.append(checks.Problem("lab_exam_report", None, None, "no <item> in the payload"))
            self._problems(problems)
            self.store.put_records(
                "lab_exam_report",
                rows,
                submitter_org=credential.org_code,
                submitter_org_name=credential.org_name,
                now=now,
            )
            return "ok"
        raise Refused(
            f"strReportInfo: <root> holds {sorted(names) or 'nothing'}; ArchiveAutoReport takes labmaster + "
            "lab_subitem, exammaster + exam_subitem, or lab_exam_report"
        )

    def _update_problems(
        self, kind: str, master: Mapping[str, Any], items: list[dict[str, Any]]
    ) -> list[checks.Problem]:
        """D20 under ``void_then_register``: a report held (not void) may be registered again only
        unchanged (a retried call); a changed one must be voided first."""
        master_name = xml.REPORTS[kind][0]
        key = [master.get(k, "") for k in spec.entity(master_name).key]
        held = self.store.report(kind, key)
        if held is None or held.voided_at is not None or self.store.same_report(kind, master, items):
            return []
        void = "DeleteLabInfo" if kind == "lab" else "DeleteExamInfo"
        return [
            checks.Problem(
                master_name,
                None,
                None,
                f"report {master.get('report_form_no', '')} is registered with other content; this platform "
                f"takes an update as a void ({void}) then a new registration (D20)",
            )
        ]

    def _submit_records(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        entity_name = "sehr_accept_record" if m.name == "SubmitAccept" else "sehr_quote_record"
        records = self._records(root)
        if set(records) != {entity_name}:
            raise Refused(
                f"strReportInfo: {m.name} takes <root><{entity_name}><item .../></{entity_name}></root>"
            )
        rows = records[entity_name]
        problems = (
            checks.check_records(
                spec.entity(entity_name),
                rows,
                options=self.config.spec_options,
                strict=self.config.strict_attributes,
            )
            if self._checked()
            else []
        )
        if not rows:
            problems.append(checks.Problem(entity_name, None, None, "no <item> in the payload"))
        self._problems(problems)
        self.store.put_records(
            entity_name,
            rows,
            submitter_org=credential.org_code,
            submitter_org_name=credential.org_name,
            now=self._clock(),
        )
        return "ok"

    def _void(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        kind = "lab" if m.name == "DeleteLabInfo" else "exam"
        flt = xml.parse_filter(root)
        id_element = self.config.spec_options.void_filter_id_type_element.lower()
        if id_element != "id_type" and id_element in flt:
            flt["id_type"] = flt.pop(id_element)
        elements = spec.filters()[f"{kind}_void_filter"].elements
        missing = [e for e in elements if not flt.get(e)]
        if missing:
            raise Refused(
                f"strFilter: {', '.join(missing)} missing or empty (all of {', '.join(elements)} are required)"
            )
        master = spec.entity(xml.REPORTS[kind][0])
        found = self.store.void(kind, [flt[k] for k in master.key], now=self._clock())
        if found is None:
            raise Refused(f"strFilter: no {kind} report registered with this key ({', '.join(master.key)})")
        if found.master.get("id_no") != flt["id_no"] or found.master.get("id_type_code") != flt["id_type"]:
            raise Refused("strFilter: id_no/id_type do not match the registered report")
        quotes = self.store.records(
            "sehr_quote_record",
            hr_org_code=flt["org_code"],
            hr_report_form_no=flt["report_form_no"],
            type="2" if kind == "lab" else "1",
        )
        if not quotes:
            return "ok"
        who = dict.fromkeys(
            f"{org_name or org} {q.get('dept_name', '')} {q.get('doc_name', '')}".strip()
            for q, org, org_name in quotes
        )
        return "ok:" + "; ".join(who)

    # -- queries --------------------------------------------------------------------------------

    def _person(self, root: etree._Element) -> dict[str, Any]:
        flt = xml.parse_filter(root)
        if not flt.get("id_no"):
            raise Refused("strFilter: id_no is missing or empty")
        if not flt.get("id_type"):
            raise Refused("strFilter: id_type is missing or empty")
        if flt["id_type"] not in spec.dictionary("STD_ID_TYPE"):
            raise Refused(f"strFilter: id_type {flt['id_type']!r} is not in STD_ID_TYPE")
        return flt

    def _recent(self, flt: Mapping[str, Any], kind: str | None = None) -> list[StoredReport]:
        since = _fmt(self._clock() - timedelta(days=self.config.recent_days))
        return self.store.reports_for(id_no=flt["id_no"], id_type=flt["id_type"], since=since, kind=kind)

    def _expiry(self, report: StoredReport) -> str:
        at = _parse_dt(report.master.get("authenticator_dtime", ""))
        return _fmt(at + timedelta(days=self.config.recognition_days)) if at else ""

    def _urls(self, report: StoredReport) -> dict[str, str]:
        ref = f"{report.kind}/{report.master.get('org_code', '')}/{report.master.get('report_form_no', '')}"
        return {"url": f"{self.base_url}/report/{ref}", "pdf_url": f"{self.base_url}/pdf/{ref}"}

    def _org_name(self, report: StoredReport) -> str:
        return report.submitter_org_name or report.submitter_org

    def _answer(self, root: etree._Element, key: bytes) -> str:
        encoding = self.config.crypto_options.text_encoding
        head = xml.declaration(encoding, with_declaration=self.config.spec_options.xml_declaration)
        return seal_answer(head + etree.tostring(root, encoding=encoding, xml_declaration=False), key)

    @staticmethod
    def _local_id(report: StoredReport) -> dict[str, str]:
        """D22: exam answers carry patient_local_id (the registered one, else patient_id)."""
        if report.kind != "exam":
            return {}
        return {
            "patient_local_id": report.master.get("patient_local_id") or report.master.get("patient_id", "")
        }

    @staticmethod
    def _attrs(values: Mapping[str, Any], spellings: Mapping[str, str] | None = None) -> dict[str, str]:
        spellings = spellings or {}
        return {
            spellings.get(k, k): "" if v is None else str(v)
            for k, v in values.items()
            if k not in ("pdf", "items")
        }

    def _check_lab_list(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        flt = self._person(root)
        out = etree.Element("root")
        for report in self._recent(flt):
            recognised = [i for i in report.items if i.get("recognition") == "1"]
            common = {
                "org_name": self._org_name(report),
                "dtime": report.master.get("authenticator_dtime", ""),
            }
            urls = self._urls(report)
            if report.kind == "lab":
                etree.SubElement(
                    out,
                    "item",
                    self._attrs(
                        {
                            "type": "lab",
                            **common,
                            "item_code": report.master.get("class_code", ""),
                            "item_name": report.master.get("class_name", ""),
                            "expired_time": self._expiry(report) if recognised else "",
                            "recognition": "1" if recognised else "0",
                            "url": urls["url"],
                            "pacs_url": "",
                        }
                    ),
                )
            else:
                for item in report.items:
                    rec = item.get("recognition") == "1"
                    etree.SubElement(
                        out,
                        "item",
                        self._attrs(
                            {
                                "type": "check",
                                **common,
                                "item_code": item.get("exam_item_code", ""),
                                "item_name": item.get("exam_item_name", ""),
                                "expired_time": self._expiry(report) if rec else "",
                                "recognition": "1" if rec else "0",
                                "url": urls["url"],
                                "pacs_url": report.master.get("pacs_url", ""),
                            }
                        ),
                    )
        return self._answer(out, key)

    def _check_lab_info(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        flt = self._person(root)
        out = etree.Element("root")
        boxes = {
            name: etree.SubElement(out, name)
            for name in ("exammaster", "exam_subitem", "labmaster", "lab_subitem")
        }
        for report in self._recent(flt):
            if not any(i.get("recognition") == "1" for i in report.items):
                continue
            master_name, item_name = xml.REPORTS[report.kind]
            etree.SubElement(
                boxes[master_name],
                "item",
                self._attrs(
                    {
                        "org_name": self._org_name(report),
                        **report.master,
                        **self._local_id(report),
                        **self._urls(report),
                    },
                    _CHECK_SPELLINGS,
                ),
            )
            expiry = self._expiry(report)
            for item in report.items:
                expired = expiry if item.get("recognition") == "1" else ""
                etree.SubElement(boxes[item_name], "item", self._attrs({**item, "expired_time": expired}))
        for box in boxes.values():
            if len(box) == 0:
                out.remove(box)
        return self._answer(out, key)

    def _recure_info(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        flt = self._person(root)
        lab_codes, exam_codes = set(flt.get("lab") or ()), set(flt.get("check") or ())
        now = _fmt(self._clock())
        out = etree.Element("root")
        for report in self._recent(flt):
            expiry = self._expiry(report)
            if expiry and expiry < now:
                continue
            head = {
                "org_code": report.master.get("org_code", ""),
                "org_name": self._org_name(report),
                "report_form_no": report.master.get("report_form_no", ""),
                "event_no": report.master.get("event_no", ""),
                "id_no": report.master.get("id_no", ""),
                "id_type_code": report.master.get("id_type_code", ""),
                "event_type": report.master.get("event_type", ""),
                "report_title": report.master.get("report_title", ""),
            }
            urls = self._urls(report)
            if report.kind == "lab":
                hits = [
                    i
                    for i in report.items
                    if i.get("recognition") == "1" and i.get("class_code") in lab_codes
                ]
                if not hits:
                    continue
                master = etree.SubElement(
                    out,
                    "labmaster",
                    self._attrs(
                        {
                            **head,
                            "class_name": report.master.get("class_name", ""),
                            "dtime": report.master.get("authenticator_dtime", ""),
                            "url": urls["url"],
                        }
                    ),
                )
                for item in hits:
                    etree.SubElement(
                        master,
                        "item",
                        self._attrs(
                            {
                                "item_code": item.get("class_code"),
                                "item_name": item.get("class_name"),
                                "result_value": item.get("result_value"),
                                "lower_value": item.get("norm_lower_limit"),
                                "upper_value": item.get("norm_upper_limit"),
                                "result_unit": item.get("result_unit"),
                                "expired_time": expiry,
                            }
                        ),
                    )
            else:
                for item in report.items:
                    if item.get("recognition") == "1" and item.get("exam_item_code") in exam_codes:
                        etree.SubElement(
                            out,
                            "exammaster",
                            self._attrs(
                                {
                                    **head,
                                    "item_code": item.get("exam_item_code"),
                                    "item_name": item.get("exam_item_name"),
                                    "dtime": report.master.get("authenticator_dtime", ""),
                                    "pacs_url": report.master.get("pacs_url", ""),
                                    "url": urls["url"],
                                }
                            ),
                        )
        return self._answer(out, key)

    def _accepted(self, flt: Mapping[str, Any], type_: str) -> dict[tuple[str, str], set[str]] | None:
        """(org, report_form_no) → accepted codes for the visit ``event_no``; None when no event_no."""
        if not flt.get("event_no"):
            return None
        out: dict[tuple[str, str], set[str]] = {}
        for record, _, _ in self.store.records(
            "sehr_accept_record", new_event_no=flt["event_no"], id_no=flt["id_no"], type=type_, is_accept="1"
        ):
            out.setdefault((record.get("hr_org_code", ""), record.get("hr_report_form_no", "")), set()).add(
                record.get("code", "")
            )
        return out

    def _lab_info(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        flt = self._person(root)
        accepted = self._accepted(flt, "2")
        out = etree.Element("root")
        for report in self._recent(flt, kind="lab"):
            ref = (report.master.get("org_code", ""), report.master.get("report_form_no", ""))
            items = report.items
            if accepted is not None:
                if ref not in accepted:
                    continue
                items = [i for i in items if i.get("class_code") in accepted[ref]]
            master = etree.SubElement(
                out,
                "labmaster",
                self._attrs(
                    {
                        **report.master,
                        "org_name": self._org_name(report),
                        "area_code": self.config.area_code,
                        "create_at": report.received_at,
                        "pdf_url": self._urls(report)["pdf_url"],
                    }
                ),
            )
            for item in items:
                etree.SubElement(master, "item", self._attrs({**item, "create_at": report.received_at}))
        return self._answer(out, key)

    def _exam_info(self, m: Method, root: etree._Element, credential: Credential, key: bytes) -> str:
        flt = self._person(root)
        accepted = self._accepted(flt, "1")
        out = etree.Element("root")
        for report in self._recent(flt, kind="exam"):
            ref = (report.master.get("org_code", ""), report.master.get("report_form_no", ""))
            if accepted is not None and ref not in accepted:
                continue
            for item in report.items:
                if accepted is not None and item.get("exam_item_code") not in accepted[ref]:
                    continue
                merged = {
                    **report.master,
                    **self._local_id(report),
                    **{
                        k: item.get(k, "")
                        for k in (
                            "exam_site_code",
                            "body_part_name",
                            "exam_item_code",
                            "exam_item_name",
                            "recognition",
                        )
                    },
                    "org_name": self._org_name(report),
                    "area_code": self.config.area_code,
                    "create_at": report.received_at,
                    "pacs_url": report.master.get("pacs_url", ""),
                    "pdf_url": self._urls(report)["pdf_url"],
                }
                etree.SubElement(out, "exammaster", self._attrs(merged, _EXAM_SPELLINGS))
        return self._answer(out, key)

    # -- inspection -----------------------------------------------------------------------------

    def received(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "stored": self.store.counts(), "faults": self.faults.status()}

    def describe(self) -> str:
        return json.dumps({"public_key": self.public_key, "visitors": len(self._visitors)})
