"""The validation rule catalogue, derived from the spec as data.

Which rule applies to which field is derived from ``include/spec/*.tsv`` (types, lengths,
nullability, keys, dictionaries, decisions) by :func:`plan`; nothing here lists a field of the
spec by hand, except the handful of cross-field rules the spec states in prose (named below).
Whether a rule is an error or a warning, and what an analyst reads when it breaks, is data too:
``include/spec/rules.json`` (:func:`load_rulebook`), with optional per-entity/per-field
overrides.

A :class:`Check` is one rule on one field of one entity, with a :data:`Test` saying how it is
evaluated. Tests are declarative so that the two engines in :mod:`hurren.validation` (Great
Expectations and plain pandas masks) evaluate exactly the same thing. Where a rule cannot be
expressed on the raw column (byte lengths, check digits, Base64 PDFs, real calendar dates,
cross-table links), the check reads a :class:`Derived` column computed once in pandas.

Rule ids (a fixed vocabulary, shared with the synthetic-data generator):

    not_null        a required field is empty ('' counts as empty: Oracle stores '' as NULL);
                    also sehr_accept_record.reason when is_accept = 2
    length          VARCHAR2(n) overflow, in bytes of SpecOptions.length_encoding (D14) or chars
    dictionary      code not in its closed dictionary (open lists 3.7/3.11 accept anything);
                    exam class_code in Modality per D4 / SpecOptions.exam_modality_field
    datetime        'YYYY-MM-DD HH:MM:SS' (date fields 'YYYY-MM-DD') and a real calendar value;
                    a D1 field (labmaster.retrieve_date) accepts either form
    number          NUMBER(n): digits 0-9 only, at most n of them (a non-integer code such as
                    event_type 'A' also breaks dictionary: both are reported)
    id_card         id_type_code 01: 18 characters with a valid GB 11643 check character and
                    birth date, or the 15-digit first-generation form with a valid birth date
    id_card_legacy  (warning) the 15-digit first-generation form
    id_sex          (warning) sex_code 1/2 disagrees with the ID number's sex digit
    id_birth_date   (warning) birth_date disagrees with the ID number's birth date
    pq_numeric      result_type PQ needs a numeric result_value
    limits_order    norm_lower_limit > norm_upper_limit, both numeric
    unique_key      duplicate key within the batch (masters: the columns their items link by)
    orphan_item     a sub-item whose master is not in the batch
    no_items        a master without sub-items in the batch
    pdf             missing/empty, not Base64, over the size limit, no %PDF- header, no %%EOF
    xml_chars       characters XML 1.0 cannot carry (C0 controls but tab/LF/CR, U+FFFE/FFFF,
                    lone surrogates), in every text field
    uid             DICOM UID: digits and dots, no empty or zero-led component, <= 64 chars;
                    PACS uid fields and exammaster.study_instance_uid (D11, warning there)
    placeholder     a required (not nullable) or key text field holds a placeholder for "no value"
                    (:data:`PLACEHOLDER_RE`: NULL, None, NaN, N/A, (null), undefined, ...; any case,
                    surrounding spaces): loaded, it would be the literal text
    invisible_chars a key or code (a field with a dictionary, open lists included) holds an
                    invisible or bidi-control character (:data:`INVISIBLE_CHARS`: BOM, zero-width,
                    bidi marks/embeddings/isolates, word joiner, soft hyphen): '\\ufeff1878' and
                    '1878' must not become two reports. Free text may carry them (Uyghur text
                    needs the joiners and bidi marks): no rule there
    future_dtime    (load) the stream's change time lies after the source's now plus its
                    ``future_tolerance_minutes``: a clock problem at the source; never stored, never
                    moves the watermark (hurren.load, hurren.pipeline)
    effective_dtime (warning, D9) sub-item effective_dtime too far from the master's
                    authenticator_dtime (SpecOptions.effective_dtime_tolerance_s)
    dtime_order     (warning) authenticator_dtime earlier than participant_dtime
    accept_reason   (warning) a reject reason given although is_accept = 1

Patterns are written for both Python ``re`` and RE2 (pyarrow), which pandas picks between:
``\\A``/``\\Z`` anchors (``$`` would accept a trailing newline) and ASCII classes (``\\d`` is
Unicode-aware in Python and would accept full-width digits).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

from hurren import spec
from hurren.sources import STREAMS

RULES_FILE = spec.SPEC_DIR / "rules.json"

Severity = Literal["error", "warning"]
RuleId = Literal[
    "not_null",
    "length",
    "dictionary",
    "datetime",
    "number",
    "id_card",
    "id_card_legacy",
    "id_sex",
    "id_birth_date",
    "pq_numeric",
    "limits_order",
    "unique_key",
    "orphan_item",
    "no_items",
    "pdf",
    "xml_chars",
    "uid",
    "effective_dtime",
    "dtime_order",
    "accept_reason",
    "placeholder",
    "invisible_chars",
    "future_dtime",
]
RULE_IDS: tuple[str, ...] = get_args(RuleId)

OK = "ok"
"""The value of a derived outcome column for a row that passes; anything else names the failure."""

DATETIME_RE = r"\A[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z"
DATE_RE = r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z"
DATE_OR_DATETIME_RE = r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}:[0-9]{2})?\Z"
INTEGER_RE = r"\A[0-9]+\Z"
DECIMAL_RE = r"\A[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z"
UID_RE = r"\A(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\Z"
UID_MAX_CHARS = 64
ID18_RE = r"\A[0-9]{17}[0-9X]\Z"
ID15_RE = r"\A[0-9]{15}\Z"
_SPACES = " \t\r\n\u00a0\u3000"  # literal characters: RE2's \s is ASCII only, Python's is not
PLACEHOLDERS = ("null", "none", "nan", "n/a", "#n/a", "(null)", "<null>", "[null]", "undefined")
"""What a source writes for "no value" when a NULL went through a string conversion (Python's
None and NaN, SQL's NULL, JavaScript's undefined, C's (null), Excel's #N/A). Not "NA", "-" or
"nil": those are real codes or results (Na for sodium, '-' for a negative qualitative result)."""
PLACEHOLDER_RE = (
    rf"(?i)\A[{_SPACES}]*(?:null|none|nan|n/a|#n/a|\(null\)|<null>|\[null\]|undefined)[{_SPACES}]*\Z"
)
INVISIBLE_CHARS = "\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
"""Soft hyphen, Mongolian vowel separator, zero-width space/non-joiner/joiner, LRM/RLM, bidi
embeddings and overrides, word joiner and invisible operators, bidi isolates, BOM (literal
characters in a class: the same in re and RE2)."""
INVISIBLE_RE = f"[{INVISIBLE_CHARS}]"

FORMATS = {
    DATETIME_RE: "YYYY-MM-DD HH:MM:SS",
    DATE_RE: "YYYY-MM-DD",
    DATE_OR_DATETIME_RE: "YYYY-MM-DD[ HH:MM:SS]",
}

# Rules the spec states in prose rather than in its field tables. Each names the spec's words.
RESIDENT_ID_TYPE = "01"  # STD_ID_TYPE 01 居民身份证: the only type with a checkable number
ID_FIELDS = ("id_no", "id_type_code")
SEX_FIELD = "sex_code"  # STD_SEX 1 男性 / 2 女性
BIRTH_FIELD = "birth_date"
PQ_FIELDS = ("result_type", "result_value", "PQ")  # STD_OBSERVATION_TYPE PQ 数值型
LIMIT_FIELDS = ("norm_lower_limit", "norm_upper_limit")
ORDER_FIELDS = (("authenticator_dtime", "participant_dtime"),)  # (later, earlier)
MASTER_TIME_FIELD = "authenticator_dtime"  # D9: sub-item effective_dtime "与审核时间一致"
ACCEPT_REASON = ("sehr_accept_record", "reason", "is_accept", "2", "1")  # "Is_Accept 为 2 的时候该项必填"
EXTRA_UID_FIELDS = frozenset({("exammaster", "study_instance_uid")})  # D11: "与 PACS 视图 STUDYIUID 对应"
LENIENT_DATE_DECISIONS = frozenset({"D1"})  # retrieve_date: a datetime is accepted and truncated
DRIFT_DECISIONS = frozenset({"D9"})
MODALITY_DECISIONS = frozenset({"D4"})
MODALITY_DICTIONARY = "Modality"


class RulesError(ValueError):
    """The rules file is malformed, or a rule/severity asked for does not exist."""


# --- tests: how a check is evaluated (the same meaning in both engines) ---------------------


@dataclass(frozen=True)
class When:
    """Evaluate only the rows where ``column`` equals ``value``."""

    column: str
    value: str


@dataclass(frozen=True)
class NotNull:
    column: str
    when: When | None = None


@dataclass(frozen=True)
class IsNull:
    column: str
    when: When | None = None


@dataclass(frozen=True)
class InSet:
    column: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Matches:
    column: str
    pattern: str
    when: When | None = None


@dataclass(frozen=True)
class NotMatches:
    column: str
    pattern: str


@dataclass(frozen=True)
class MaxChars:
    column: str
    limit: int


@dataclass(frozen=True)
class AtMost:
    """A numeric (derived) column, missing where the check does not apply."""

    column: str
    limit: float


@dataclass(frozen=True)
class Outcome:
    """A derived outcome column: missing where the check does not apply, :data:`OK` where it
    passes, otherwise the name of the failure (a message key of the rule)."""

    column: str


@dataclass(frozen=True)
class UniqueTogether:
    """Rows with a missing key part are left to not_null."""

    columns: tuple[str, ...]


@dataclass(frozen=True)
class NotLess:
    """``a >= b`` where both are present (numeric derived columns)."""

    a: str
    b: str


Test = (
    NotNull | IsNull | InSet | Matches | NotMatches | MaxChars | AtMost | Outcome | UniqueTogether | NotLess
)

DerivedKind = Literal[
    "bytes", "digits", "calendar", "epoch", "decimal", "id_card", "id_legacy", "id_sex", "id_birth", "pdf",
    "xml", "has_items", "has_master", "drift",
]  # fmt: skip


OUTCOME_CODES: Mapping[str, tuple[str, ...]] = {
    "calendar": ("calendar",),
    "xml": ("bad_char",),
    "pdf": ("missing", "not_base64", "too_large", "not_pdf", "no_eof"),
    "id_card": ("format", "birth_date", "check_digit"),
    "id_legacy": ("legacy15",),
    "id_sex": ("mismatch",),
    "id_birth": ("mismatch",),
    "has_items": ("no_items",),
    "has_master": ("orphan",),
}
"""The failure names each kind of derived outcome column can hold (each a message key of its rule)."""


@dataclass(frozen=True)
class Derived:
    """A column computed in pandas before validation (see hurren.validation.derived.derive)."""

    name: str
    kind: DerivedKind
    source: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str) -> Any:
        return dict(self.params)[name]


@dataclass(frozen=True)
class Check:
    """One rule on one field of one entity."""

    rule: str
    check: str | None  # the message key; None: the derived outcome names it per row
    entity: str
    field: str  # the spec field the failure is reported against (key checks: "a,b,c")
    test: Test
    derived: tuple[Derived, ...] = ()
    context: tuple[tuple[str, Any], ...] = ()  # message placeholders fixed for the check
    other_field: str | None = None  # the second field of a pair check

    @property
    def id(self) -> str:
        return f"{self.entity}.{self.field}.{self.rule}" + (f".{self.check}" if self.check else "")


@dataclass(frozen=True)
class Plan:
    """Every check of one entity, and the derived columns they read, in a stable order."""

    entity: str
    checks: tuple[Check, ...]
    derived: tuple[Derived, ...]
    fingerprint: str

    @property
    def columns(self) -> tuple[str, ...]:
        """Raw spec columns the tests read (the rest are only read through derived columns)."""
        out: dict[str, None] = {}
        for c in self.checks:
            for name in _test_columns(c.test):
                if not name.startswith("__"):
                    out[name] = None
        return tuple(out)


def _test_columns(test: Test) -> tuple[str, ...]:
    match test:
        case UniqueTogether(columns=cols):
            return cols
        case NotLess(a=a, b=b):
            return (a, b)
        case NotNull(column=c, when=w) | IsNull(column=c, when=w) | Matches(column=c, when=w):
            return (c,) if w is None else (c, w.column)
        case _:
            return (test.column,)


# --- the rule book: severities and messages, as data -----------------------------------------


@dataclass(frozen=True)
class RuleText:
    rule: str
    severity: Severity
    title_zh: str
    title_en: str
    messages: Mapping[str, tuple[str, str]]  # check -> (zh, en)


@dataclass(frozen=True)
class Override:
    rule: str
    severity: Severity
    entity: str | None = None
    field: str | None = None
    why: str = ""


@dataclass(frozen=True)
class RuleBook:
    """Severities and message templates per rule id, from ``include/spec/rules.json``."""

    rules: Mapping[str, RuleText]
    overrides: tuple[Override, ...] = ()
    pdf_max_bytes: int = 20 * 1024 * 1024

    def severity(self, rule: str, entity: str, field: str) -> Severity:
        """The most specific override wins (entity+field, then field, then entity); among equals,
        the later one."""
        if rule not in self.rules:
            raise RulesError(f"unknown rule {rule!r}; known: {sorted(self.rules)}")
        best: tuple[int, Severity] | None = None
        for o in self.overrides:
            if o.rule != rule or (o.entity not in (None, entity)) or (o.field not in (None, field)):
                continue
            rank = (2 if o.field else 0) + (1 if o.entity else 0)
            if best is None or rank >= best[0]:
                best = (rank, o.severity)
        return best[1] if best else self.rules[rule].severity

    def message(self, rule: str, check: str) -> tuple[str, str]:
        """The (zh, en) template of one check of a rule."""
        try:
            return self.rules[rule].messages[check]
        except KeyError:
            raise RulesError(f"rules.json has no message {check!r} for rule {rule!r}") from None

    def with_severity(
        self, rule: str, severity: Severity, *, entity: str | None = None, field: str | None = None
    ) -> RuleBook:
        """A copy with one more override (e.g. a site that downgrades a rule to a warning)."""
        _check_severity(severity, f"with_severity({rule!r})")
        if rule not in self.rules:
            raise RulesError(f"unknown rule {rule!r}; known: {sorted(self.rules)}")
        extra = Override(rule=rule, severity=severity, entity=entity, field=field, why="set in code")
        return RuleBook(
            rules=self.rules, overrides=(*self.overrides, extra), pdf_max_bytes=self.pdf_max_bytes
        )

    @property
    def fingerprint(self) -> str:
        data = {
            "rules": {k: [v.severity, v.title_en] for k, v in sorted(self.rules.items())},
            "overrides": [asdict(o) for o in self.overrides],
            "pdf_max_bytes": self.pdf_max_bytes,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _check_severity(value: object, where: str) -> Severity:
    if value not in get_args(Severity):
        raise RulesError(f"{where}: severity must be one of {get_args(Severity)}, got {value!r}")
    return value


def _text(obj: Mapping[str, Any], where: str) -> tuple[str, str]:
    if not isinstance(obj, Mapping) or not obj.get("zh") or not obj.get("en"):
        raise RulesError(f"{where}: expected an object with non-empty 'zh' and 'en'")
    return str(obj["zh"]), str(obj["en"])


def parse_rulebook(data: Mapping[str, Any], *, source: str = "rules.json") -> RuleBook:
    """Check and type a rules document (the JSON object of ``rules.json``)."""
    rules_data = data.get("rules")
    if not isinstance(rules_data, Mapping):
        raise RulesError(f"{source}: missing object 'rules'")
    unknown = sorted(set(rules_data) - set(RULE_IDS))
    missing = sorted(set(RULE_IDS) - set(rules_data))
    if unknown or missing:
        raise RulesError(f"{source}: unknown rule id(s) {unknown}, missing rule id(s) {missing}")
    rules: dict[str, RuleText] = {}
    for rid, spec_ in rules_data.items():
        where = f"{source}: rules.{rid}"
        messages = spec_.get("messages") or {}
        if not messages:
            raise RulesError(f"{where}: no messages")
        zh, en = _text(spec_.get("title"), f"{where}.title")
        rules[rid] = RuleText(
            rule=rid,
            severity=_check_severity(spec_.get("severity"), where),
            title_zh=zh,
            title_en=en,
            messages={k: _text(v, f"{where}.messages.{k}") for k, v in messages.items()},
        )
    overrides = []
    for i, o in enumerate(data.get("overrides") or ()):
        where = f"{source}: overrides[{i}]"
        if o.get("rule") not in rules:
            raise RulesError(f"{where}: unknown rule {o.get('rule')!r}")
        if o.get("entity") and o["entity"] not in spec.entities():
            raise RulesError(f"{where}: unknown entity {o['entity']!r}")
        if o.get("entity") and o.get("field") and o["field"] not in spec.entity(o["entity"]).names:
            raise RulesError(f"{where}: {o['entity']} has no field {o['field']!r}")
        overrides.append(
            Override(
                rule=o["rule"],
                severity=_check_severity(o.get("severity"), where),
                entity=o.get("entity") or None,
                field=o.get("field") or None,
                why=o.get("why", ""),
            )
        )
    params = data.get("params") or {}
    pdf_max = params.get("pdf_max_bytes", 20 * 1024 * 1024)
    if not isinstance(pdf_max, int) or pdf_max <= 0:
        raise RulesError(f"{source}: params.pdf_max_bytes must be a positive whole number, got {pdf_max!r}")
    return RuleBook(rules=rules, overrides=tuple(overrides), pdf_max_bytes=pdf_max)


@cache
def _load_default() -> RuleBook:
    return load_rulebook(RULES_FILE)


def load_rulebook(path: Path | None = None) -> RuleBook:
    """The rule book from ``path`` (default ``include/spec/rules.json``, loaded once)."""
    if path is None:
        return _load_default()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RulesError(f"cannot read rules file {path}: {exc}") from exc
    return parse_rulebook(data, source=str(path))


def rulebook_from_mapping(data: Mapping[str, Any]) -> RuleBook:
    """A rule book from an in-memory document (tests, site profiles); a deep copy is parsed."""
    return parse_rulebook(copy.deepcopy(dict(data)), source="<mapping>")


# --- the plan: which checks apply, derived from the spec -------------------------------------


def item_entity_of(master: str) -> str:
    """The sub-item entity whose parent is ``master``."""
    found = [e.name for e in spec.entities().values() if e.parent == master]
    if len(found) != 1:
        raise RulesError(f"{master} has {len(found)} sub-item entities ({found}); expected one")
    return found[0]


def link_columns(item: spec.Entity) -> tuple[str, ...]:
    """The columns a sub-item references its master by: its key columns the master's key shares."""
    if not item.parent:
        raise RulesError(f"{item.name} is not a sub-item entity")
    parent = spec.entity(item.parent)
    return tuple(k for k in item.key if k in parent.key)


def dictionary_of(ent: spec.Entity, f: spec.Field, options: spec.SpecOptions) -> spec.Dictionary | None:
    """The dictionary a field is checked against; D4 moves Modality to ``exam_modality_field``."""
    modality_fields = [x.name for x in ent.fields if x.decision in MODALITY_DECISIONS]
    if f.name in modality_fields and any(
        spec.entity(ent.name).field(n).dictionary == MODALITY_DICTIONARY for n in modality_fields
    ):
        if options.exam_modality_field not in modality_fields:
            raise RulesError(
                f"exam_modality_field {options.exam_modality_field!r} is not one of {modality_fields} of {ent.name}"
            )
        name = MODALITY_DICTIONARY if f.name == options.exam_modality_field else None
    else:
        name = f.dictionary
    return spec.dictionary(name) if name else None


def _options_fingerprint(options: spec.SpecOptions) -> str:
    data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(options).items()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=list).encode()).hexdigest()[:16]


_PLANS: dict[tuple[str, str, int], Plan] = {}


def plan(entity: str, options: spec.SpecOptions, *, pdf_max_bytes: int = 20 * 1024 * 1024) -> Plan:
    """Every check of ``entity`` under ``options`` (the site's profile; cached)."""
    key = (entity, _options_fingerprint(options), pdf_max_bytes)
    if key not in _PLANS:
        _PLANS[key] = _build_plan(spec.entity(entity), options, pdf_max_bytes)
    return _PLANS[key]


def _build_plan(ent: spec.Entity, options: spec.SpecOptions, pdf_max_bytes: int) -> Plan:
    checks: list[Check] = []
    names = set(ent.names)

    def add(
        rule: str,
        check: str | None,
        fld: str,
        test: Test,
        *derived: Derived,
        other: str | None = None,
        **ctx: Any,
    ) -> None:
        checks.append(
            Check(rule, check, ent.name, fld, test, tuple(derived), tuple(sorted(ctx.items())), other)
        )

    accept = ACCEPT_REASON if ACCEPT_REASON[0] == ent.name and ACCEPT_REASON[1] in names else None
    for f in ent.fields:
        n = f.name
        if f.type != "pdf":  # a missing PDF is a pdf failure, not not_null
            if not f.nullable:
                add("not_null", "required", n, NotNull(n))
            elif accept and n == accept[1]:
                cond = When(accept[2], accept[3])
                add("not_null", "conditional", n, NotNull(n, cond), condition=f"{cond.column} = {cond.value}")
        if f.type in ("text", "uid"):
            add("xml_chars", None, n, Outcome(f"__xml__{n}"), Derived(f"__xml__{n}", "xml", (n,)))
        if f.type == "text" and f.length:
            if options.length_semantics == "byte":
                d = Derived(f"__bytes__{n}", "bytes", (n,))
                add(
                    "length",
                    "bytes",
                    n,
                    AtMost(d.name, f.length),
                    d,
                    limit=f.length,
                    encoding=options.length_encoding,
                )
            else:
                add("length", "chars", n, MaxChars(n, f.length), limit=f.length)
        if (dic := dictionary_of(ent, f, options)) is not None and dic.kind == "closed":
            add(
                "dictionary",
                "not_in",
                n,
                InSet(n, tuple(sorted(dic.codes))),
                dictionary=dic.name,
                dictionary_title=dic.title,
            )
        if f.type in ("date", "datetime"):
            pattern = DATETIME_RE if f.type == "datetime" else DATE_RE
            if f.decision in LENIENT_DATE_DECISIONS:
                pattern = DATE_OR_DATETIME_RE
            add("datetime", "format", n, Matches(n, pattern), format=FORMATS[pattern])
            d = Derived(f"__calendar__{n}", "calendar", (n,), (("pattern", pattern),))
            add("datetime", None, n, Outcome(d.name), d)
        if f.type == "number":
            add("number", "format", n, Matches(n, INTEGER_RE))
            if f.length:
                d = Derived(f"__digits__{n}", "digits", (n,))
                add("number", "digits", n, AtMost(d.name, f.length), d, limit=f.length)
        if f.type == "uid" or (ent.name, n) in EXTRA_UID_FIELDS:
            add("uid", "format", n, Matches(n, UID_RE))
            add("uid", "too_long", n, MaxChars(n, UID_MAX_CHARS), limit=UID_MAX_CHARS)
        if f.type == "pdf":
            d = Derived(f"__pdf__{n}", "pdf", (n,), (("max_bytes", pdf_max_bytes),))
            add("pdf", None, n, Outcome(d.name), d, limit=pdf_max_bytes)
        is_key = n in ent.key or f.key
        if f.type == "text" and (is_key or not f.nullable):  # dates, numbers, UIDs refuse it by format
            add("placeholder", "placeholder", n, NotMatches(n, PLACEHOLDER_RE))
        if f.type == "text" and (is_key or dictionary_of(ent, f, options) is not None):
            add("invisible_chars", "invisible", n, NotMatches(n, INVISIBLE_RE))

    if set(ID_FIELDS) <= names:
        id_no, id_type = ID_FIELDS
        d = Derived("__id_card", "id_card", (id_no, id_type))
        add("id_card", None, id_no, Outcome(d.name), d)
        d = Derived("__id_legacy", "id_legacy", (id_no, id_type))
        add("id_card_legacy", None, id_no, Outcome(d.name), d)
        if SEX_FIELD in names:
            d = Derived("__id_sex", "id_sex", (id_no, id_type, SEX_FIELD))
            add("id_sex", None, SEX_FIELD, Outcome(d.name), d)
        if BIRTH_FIELD in names:
            d = Derived("__id_birth", "id_birth", (id_no, id_type, BIRTH_FIELD))
            add("id_birth_date", None, BIRTH_FIELD, Outcome(d.name), d)
    if {PQ_FIELDS[0], PQ_FIELDS[1]} <= names:
        rtype, rvalue, pq = PQ_FIELDS
        add("pq_numeric", "not_numeric", rvalue, Matches(rvalue, DECIMAL_RE, When(rtype, pq)))
    if set(LIMIT_FIELDS) <= names:
        lower, upper = LIMIT_FIELDS
        dl = Derived(f"__decimal__{lower}", "decimal", (lower,))
        du = Derived(f"__decimal__{upper}", "decimal", (upper,))
        add("limits_order", "inverted", lower, NotLess(du.name, dl.name), dl, du, other=upper)
    for later, earlier in ORDER_FIELDS:
        if {later, earlier} <= names:
            da = Derived(f"__epoch__{later}", "epoch", (later,), (("pattern", DATETIME_RE),))
            db = Derived(f"__epoch__{earlier}", "epoch", (earlier,), (("pattern", DATETIME_RE),))
            add("dtime_order", "inverted", later, NotLess(da.name, db.name), da, db, other=earlier)
    if accept:
        cond = When(accept[2], accept[4])
        add(
            "accept_reason",
            "reason_given",
            accept[1],
            IsNull(accept[1], cond),
            condition=f"{cond.column} = {cond.value}",
        )

    if ent.kind == "report":
        item = spec.entity(item_entity_of(ent.name))
        link = link_columns(item)
        add("unique_key", "duplicate", ",".join(link), UniqueTogether(link), columns=", ".join(link))
        d = Derived("__has_items", "has_items", link)
        add("no_items", None, item.name, Outcome(d.name), d, item_entity=item.name)
    else:
        add("unique_key", "duplicate", ",".join(ent.key), UniqueTogether(ent.key), columns=", ".join(ent.key))
    if ent.kind == "item" and ent.parent:
        link = link_columns(ent)
        d = Derived("__has_master", "has_master", link)
        add(
            "orphan_item",
            None,
            ",".join(link),
            Outcome(d.name),
            d,
            master_entity=ent.parent,
            columns=", ".join(link),
        )
        for f in ent.fields:
            if f.decision in DRIFT_DECISIONS and f.type == "datetime":
                tol = options.effective_dtime_tolerance_s
                d = Derived(
                    f"__drift__{f.name}", "drift", (f.name, *link), (("master_field", MASTER_TIME_FIELD),)
                )
                add("effective_dtime", "drift", f.name, AtMost(d.name, tol), d, limit=tol)

    derived: dict[str, Derived] = {}
    for c in checks:
        for d in c.derived:
            if derived.setdefault(d.name, d) != d:
                raise RulesError(f"{ent.name}: derived column {d.name} defined twice, differently")
    fp = hashlib.sha256(repr((checks, options.length_encoding)).encode()).hexdigest()[:16]
    return Plan(entity=ent.name, checks=tuple(checks), derived=tuple(derived.values()), fingerprint=fp)


@dataclass(frozen=True)
class RuleRow:
    """One line of the rule table (docs, tests): rule, default severity, what it checks."""

    rule: str
    severity: Severity
    title_zh: str
    title_en: str
    fields: tuple[str, ...] = field(default=())


LOAD_RULES: Mapping[str, tuple[str, ...]] = {
    # the change time of every stream's rows, and of the sub-items read with them (orphans)
    "future_dtime": tuple(
        dict.fromkeys(
            f"{e}.{d.cursor}"
            for d in STREAMS.values()
            for e in d.entities
            if d.cursor in spec.entity(e).names
        )
    ),
}
"""Rules that :mod:`hurren.load` applies (they need the run's context, not just the row), and the
entity.field pairs they apply to."""


def rule_table(rulebook: RuleBook, options: spec.SpecOptions) -> list[RuleRow]:
    """The catalogue: every rule with its default severity and the entity.field pairs it applies to."""
    rb = rulebook
    where: dict[str, list[str]] = {r: list(LOAD_RULES.get(r, ())) for r in RULE_IDS}
    for name in spec.entities():
        for c in plan(name, options, pdf_max_bytes=rb.pdf_max_bytes).checks:
            label = f"{c.entity}.{c.field}"
            if label not in where[c.rule]:
                where[c.rule].append(label)
    return [
        RuleRow(r, rb.rules[r].severity, rb.rules[r].title_zh, rb.rules[r].title_en, tuple(where[r]))
        for r in RULE_IDS
    ]
