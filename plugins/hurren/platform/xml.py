"""XML payloads of the region platform: builders for what we send, safe parsers for what we get.

Builders derive every element and attribute from :mod:`hurren.spec` (never a re-typed list) and
return bytes ready for SM4: ``<?xml version="1.0" encoding="..."?>`` then one line of XML (D21:
``SpecOptions.xml_declaration`` false leaves the declaration out, on every payload and filter).

Choices (see docs/spec-decisions.md for the D-numbers):

- Every field of an entity is written as an attribute, in the spec's order; ``None`` (and a
  missing key) becomes an empty attribute ``name=""``, as the spec's examples write absent
  values (``apply_form_no=""``). Keys of the input mapping that are not spec fields (the store's
  ``etl_*`` columns) are ignored.
- Values: ``datetime`` → ``YYYY-MM-DD HH:MM:SS`` (aware values converted to Beijing time first),
  ``date`` → ``YYYY-MM-DD``; a date field given a datetime (or its text) keeps the date (D1;
  ``SpecOptions.retrieve_date_format="datetime"`` sends ``retrieve_date`` with its time);
  ``int``/``Decimal`` as plain digits; ``bytes`` for a PDF are Base64-encoded; ``str`` as is.
- Attribute names are the field tables' (``id_type_code``, ``patient_condition_desc``, ``pdf``);
  ``SpecOptions.attribute_aliases`` renames them for a platform (D2), by ``field`` or
  ``entity.field``. Void filters write ``<id_type>`` (D13, ``void_filter_id_type_element``).
- Daily counts above ``daily_count_max`` are clamped or refused (D8, ``daily_count_overflow``);
  recording the overflow is the caller's business (compare with what was passed in).
- Text XML 1.0 cannot carry (C0 controls other than tab/LF/CR, lone surrogates, U+FFFE/U+FFFF)
  raises :class:`PayloadError` naming the entity, field and code point, never the value.

Parsers refuse any DOCTYPE (XXE, billion laughs) and never load DTDs or touch the network.
Attribute names of answers are read leniently (D2): lower-cased, and the spellings the spec's
own examples use (``outpatient_diag_name``, ``patient_condition_descr``, ``Id_Type_Code``,
``Pdf``) are mapped to ours. Values are kept as raw text (D3 ``is_abnormal="3"``, D5
``sex_code="F"``): interpreting them is the reader's decision, not the parser's.
"""

from __future__ import annotations

import base64
import codecs
import functools
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

from lxml import etree

from hurren import spec
from hurren.platform.exceptions import AnswerError, PayloadError

__all__ = [
    "ANSWER_ALIASES",
    "BEIJING",
    "RECURE_FILTER_ATTRIBUTES",
    "REPORTS",
    "ReportKind",
    "build_daily_counts",
    "build_exam_report",
    "build_lab_report",
    "build_query_filter",
    "build_records",
    "build_recure_filter",
    "build_report",
    "build_void_filter",
    "check_text",
    "declaration",
    "declared_encoding",
    "format_value",
    "normalise_document",
    "parse_filter",
    "parse_records",
    "parse_xml",
]

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")

ReportKind = Literal["lab", "exam"]
REPORTS: dict[str, tuple[str, str]] = {
    "lab": ("labmaster", "lab_subitem"),
    "exam": ("exammaster", "exam_subitem"),
}
RECORD_ENTITIES = ("sehr_accept_record", "sehr_quote_record")

# ExistsReCureInfo's filter (§1.4.2.2) is the one strFilter written as root attributes plus code
# lists; include/spec/filters.tsv does not describe it, so its attributes are listed here.
RECURE_FILTER_ATTRIBUTES = (
    "id_no",
    "id_type",
    "dept_code",
    "dept_name",
    "dept_std_code",
    "dept_std_name",
    "doc_code",
    "doc_name",
    "event_no",
)

# Spellings found in the spec's examples and answers → ours (D2). Keys are lower case.
ANSWER_ALIASES: dict[str, str] = {
    "outpatient_diag_name": "outpat_diag_name",
    "patient_condition_descr": "patient_condition_desc",
}

_PLAIN_TEXT = frozenset({"text", "uid", "number", "pdf"})  # text that goes out as it is (not dates)
_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_XML_NAME = re.compile(r"[^\W\d][\w.-]*")
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_DATETIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")
_DECLARED = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=", re.I)
_DECLARATION_TEXT = re.compile(r"^\s*<\?xml[^>]*\?>")
_DOCTYPE = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.I)
_DOCTYPE_TEXT = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.I)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def check_text(text: str, *, entity: str, field: str) -> str:
    """``text`` if XML 1.0 can carry it; otherwise a PayloadError naming the code point, not the text."""
    if text.isprintable():  # no printable character is illegal in XML: the common case without a regex
        return text
    bad = _ILLEGAL.search(text)
    if bad:
        raise PayloadError(
            f"{entity}.{field}: character U+{ord(bad.group()):04X} at position {bad.start()} cannot be "
            "carried in XML 1.0; clean the value at the source (or map it in extraction)",
            entity=entity,
            field=field,
        )
    return text


def _naive_beijing(value: datetime) -> datetime:
    return value.astimezone(BEIJING).replace(tzinfo=None) if value.tzinfo is not None else value


def _fmt_date(value: date) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"  # strftime drops zeros before 1000


def _fmt_datetime(value: datetime) -> str:
    return f"{_fmt_date(value)} {value.hour:02d}:{value.minute:02d}:{value.second:02d}"


def _fmt_number(value: int | Decimal | float, *, entity: str, field: str) -> str:
    if isinstance(value, int):
        return str(value)
    if (
        isinstance(value, float)
        and not value.is_integer()
        or isinstance(value, Decimal)
        and not value.is_finite()
    ):
        raise PayloadError(
            f"{entity}.{field}: NUMBER field got the non-integral value {value!r}; round it at the source",
            entity=entity,
            field=field,
        )
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else format(value, "f")
    return str(int(value))


def format_value(value: object, fld: spec.Field, *, entity: str, options: spec.SpecOptions) -> str:
    """One field's value as the spec writes it (see the module docstring); checked for XML."""
    name = fld.name
    if value is None:
        return ""
    if value.__class__ is str and fld.type in _PLAIN_TEXT:  # the common case, first
        return check_text(value, entity=entity, field=name)
    if isinstance(value, bool):  # bool is an int: True would go out as "True"
        raise PayloadError(
            f"{entity}.{name}: got a bool; pass the spec's code ('1'/'0') instead", entity=entity, field=name
        )
    kind = fld.type
    if kind == "date" and name == "retrieve_date" and options.retrieve_date_format == "datetime":
        kind = "datetime"  # D1, platform profile
    if isinstance(value, datetime):
        value = _naive_beijing(value)
        return _fmt_date(value) if kind == "date" else _fmt_datetime(value)
    if isinstance(value, date):
        return _fmt_date(value) + (" 00:00:00" if kind == "datetime" else "")
    if isinstance(value, bytes | bytearray | memoryview):
        if kind != "pdf":
            raise PayloadError(
                f"{entity}.{name}: got bytes for a {kind} field; decode it to text first",
                entity=entity,
                field=name,
            )
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, int | Decimal | float):
        return _fmt_number(value, entity=entity, field=name)
    if isinstance(value, str):
        if kind == "date" and _DATETIME_TEXT.fullmatch(value):
            return value[:10]  # D1: a source datetime keeps its date
        if kind == "datetime" and _DATE_TEXT.fullmatch(value) and name == "retrieve_date":
            return value + " 00:00:00"
        return check_text(value, entity=entity, field=name)
    raise PayloadError(
        f"{entity}.{name}: cannot send a {type(value).__name__}; pass str, int, Decimal, date, datetime "
        "(or bytes for a PDF)",
        entity=entity,
        field=name,
    )


def _alias(options: spec.SpecOptions, entity: str, name: str) -> str:
    return _aliased(options.attribute_aliases, entity, name)


def _aliased(aliases: Mapping[str, str], entity: str, name: str) -> str:
    return aliases.get(f"{entity}.{name}") or aliases.get(name) or name


@functools.lru_cache(maxsize=64)
def _layout(entity_name: str, aliases: tuple[tuple[str, str], ...]) -> tuple[tuple[str, spec.Field], ...]:
    """An entity's (attribute name, field) pairs in the spec's order under these aliases (D2),
    worked out once: a report has ~500 attributes."""
    entity, names = spec.entity(entity_name), dict(aliases)
    out = tuple((_aliased(names, entity.name, f.name), f) for f in entity.fields)
    for name, f in out:
        if not _XML_NAME.fullmatch(name):
            raise PayloadError(
                f"{entity.name}.{f.name}: the attribute alias {name!r} is not an XML name (attribute_aliases, D2)",
                entity=entity.name,
                field=f.name,
            )
    return out


def _attributes(
    entity: spec.Entity, row: Mapping[str, Any], options: spec.SpecOptions
) -> dict[str, str | bytes]:
    """A record's attribute values as written inside ``name="..."``: formatted and escaped. A PDF
    given as bytes stays bytes, its Base64 (nothing to escape): 136 KB spliced into the document
    once, never widened, copied and encoded as text."""
    layout = _layout(entity.name, tuple(sorted(options.attribute_aliases.items())))
    out: dict[str, str | bytes] = {}
    for name, f in layout:
        value = row.get(f.name)
        if f.type == "pdf" and isinstance(value, bytes | bytearray | memoryview):
            out[name] = base64.b64encode(value)
        else:
            out[name] = _escape(format_value(value, f, entity=entity.name, options=options))
    return out


def _escape(value: str) -> str:
    if (
        "&" in value
        or "<" in value
        or ">" in value
        or '"' in value
        or "\t" in value
        or "\n" in value
        or "\r" in value
    ):
        return value.translate(_ESCAPES)
    return value


def _item(attributes: Mapping[str, str | bytes], encoding: str) -> bytes:
    """``<item a="v" .../>`` in ``encoding`` as lxml writes it (characters the encoding lacks as
    character references), the values as :func:`_attributes` made them, in the order given."""
    pieces: list[bytes] = []
    text = ["<item"]
    for k, v in attributes.items():
        if isinstance(v, bytes):
            text.append(f' {k}="')
            pieces += (
                "".join(text).encode(encoding, "xmlcharrefreplace"),
                v.decode("ascii").encode(encoding),
            )
            text = ['"']
        else:
            text.append(f' {k}="{v}"')
    text.append("/>")
    pieces.append("".join(text).encode(encoding, "xmlcharrefreplace"))
    return b"".join(pieces)


def _document(boxes: Iterable[tuple[str, list[bytes]]], encoding: str, options: spec.SpecOptions) -> bytes:
    """``<root>`` with a box per entity holding its ``<item>``s, serialised as :func:`_serialise`
    would, without building a tree: a report's XML is written once, as bytes
    (``tests/unit/test_platform_xml.py`` compares it with lxml's)."""
    out = [declaration(encoding, with_declaration=options.xml_declaration), b"<root>"]
    for name, items in boxes:
        out += (
            (f"<{name}>".encode(encoding), *items, f"</{name}>".encode(encoding))
            if items
            else (f"<{name}/>".encode(encoding),)
        )
    out.append(b"</root>")
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def declaration(encoding: str, *, with_declaration: bool) -> bytes:
    """What goes before the root element (D21): our own declaration, in the spec's double quotes
    and the encoding's upper-case name, or nothing."""
    if not with_declaration:
        return b""
    return f'<?xml version="1.0" encoding="{encoding.upper()}"?>\n'.encode("ascii")


def _serialise(root: etree._Element, encoding: str, options: spec.SpecOptions) -> bytes:
    # lxml writes unencodable characters as character references: any text survives any encoding
    head = declaration(encoding, with_declaration=options.xml_declaration)
    return head + etree.tostring(root, encoding=encoding, xml_declaration=False)


def normalise_document(data: bytes, *, encoding: str, options: spec.SpecOptions) -> bytes:
    """An XML document written by hand (the command line's payload file, in whatever encoding it
    declares) as the builders would send it: in ``encoding``, with or without the declaration (D21).
    Comments and processing instructions are dropped; a DOCTYPE or malformed XML is refused."""
    try:
        root = parse_xml(data, what="the payload")
    except AnswerError as exc:
        raise PayloadError(str(exc)) from None
    return _serialise(root, encoding, options)


_DECLARATION_HEAD = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml\s[^>]*?\?>")
_ENCODING_ATTR = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


def declared_encoding(data: bytes) -> str | None:
    """The encoding an XML document's declaration names (``utf-8`` when it names none; Python's
    codec name, so ``UTF8`` and ``utf-8`` compare equal), or None when it has no declaration."""
    head = _DECLARATION_HEAD.match(data)
    if head is None:
        return None
    named = _ENCODING_ATTR.search(head.group())
    name = named.group(1).decode("ascii") if named else "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name.lower()


def _container(
    entity: spec.Entity, rows: Iterable[Mapping[str, Any]], options: spec.SpecOptions, encoding: str
) -> tuple[str, list[bytes]]:
    return entity.name, [_item(_attributes(entity, row, options), encoding) for row in rows]


def build_report(
    kind: ReportKind,
    master: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]],
    *,
    options: spec.SpecOptions,
    encoding: str = "UTF-8",
) -> bytes:
    """strReportInfo of ArchiveAutoReport for one lab or exam report (§1.2.2.1 / §1.2.2.3).

    Sub-items reference their master by the key columns they share with it (org_code, event_no,
    report_form_no); a missing one is taken from the master, a different one is refused.
    """
    if kind not in REPORTS:
        raise PayloadError(f"report kind must be 'lab' or 'exam', got {kind!r}")
    master_entity, item_entity = (spec.entity(n) for n in REPORTS[kind])
    master_attrs = _attributes(master_entity, master, options)
    shared = [k for k in item_entity.key if k in master_entity.key]
    box: list[bytes] = []
    for index, item in enumerate(items):
        attrs = _attributes(item_entity, item, options)
        for k in shared:
            name = _alias(options, item_entity.name, k)
            want = master_attrs[_alias(options, master_entity.name, k)]
            if attrs[name] == "":
                attrs[name] = want
            elif attrs[name] != want:
                raise PayloadError(
                    f"{item_entity.name}[{index}].{k} differs from the master's {k}: a sub-item "
                    "must belong to the report it is sent with",
                    entity=item_entity.name,
                    field=k,
                )
        box.append(_item(attrs, encoding))
    return _document(
        [(master_entity.name, [_item(master_attrs, encoding)]), (item_entity.name, box)], encoding, options
    )


def build_lab_report(master: Mapping[str, Any], items: Iterable[Mapping[str, Any]], **kwargs: Any) -> bytes:
    """``build_report("lab", ...)``: labmaster + lab_subitem."""
    return build_report("lab", master, items, **kwargs)


def build_exam_report(master: Mapping[str, Any], items: Iterable[Mapping[str, Any]], **kwargs: Any) -> bytes:
    """``build_report("exam", ...)``: exammaster + exam_subitem."""
    return build_report("exam", master, items, **kwargs)


def build_daily_counts(
    rows: Iterable[Mapping[str, Any]], *, options: spec.SpecOptions, encoding: str = "UTF-8"
) -> bytes:
    """strReportInfo of ArchiveAutoReport with ``lab_exam_report`` (§1.2.2.5), counts per D8."""
    entity = spec.entity("lab_exam_report")
    limit = options.daily_count_max

    def bounded(row: Mapping[str, Any]) -> Mapping[str, Any]:
        out = dict(row)
        for name in ("lab_num", "exam_num"):
            value = out.get(name)
            if isinstance(value, int | Decimal) and not isinstance(value, bool) and value > limit:
                if options.daily_count_overflow == "error":
                    raise PayloadError(
                        f"lab_exam_report.{name}: {value} exceeds NUMBER(4) (max {limit}) (D8); "
                        "set daily_count_overflow='clamp' to send the maximum",
                        entity="lab_exam_report",
                        field=name,
                    )
                out[name] = limit
        return out

    return _document([_container(entity, (bounded(r) for r in rows), options, encoding)], encoding, options)


def build_records(
    entity_name: Literal["sehr_accept_record", "sehr_quote_record"],
    rows: Iterable[Mapping[str, Any]],
    *,
    options: spec.SpecOptions,
    encoding: str = "UTF-8",
) -> bytes:
    """strReportInfo of SubmitAccept (``sehr_accept_record``) or SubmitQuote (``sehr_quote_record``)."""
    if entity_name not in RECORD_ENTITIES:
        raise PayloadError(f"records must be one of {RECORD_ENTITIES}, got {entity_name!r}")
    return _document([_container(spec.entity(entity_name), rows, options, encoding)], encoding, options)


def _element_text(parent: etree._Element, tag: str, value: object, *, entity: str, field: str) -> None:
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if isinstance(value, bool):
        raise PayloadError(
            f"{entity}.{field}: got a bool; pass the spec's code instead", entity=entity, field=field
        )
    etree.SubElement(parent, tag).text = check_text(text, entity=entity, field=field)


def build_void_filter(
    kind: ReportKind,
    report: Mapping[str, Any],
    *,
    options: spec.SpecOptions,
    encoding: str = "UTF-8",
) -> bytes:
    """strFilter of DeleteLabInfo / DeleteExamInfo (§1.2.2.2 / §1.2.2.4) from a report's fields.

    ``id_type`` is read from the report's ``id_type_code`` (or ``id_type``) and written under the
    element name ``options.void_filter_id_type_element`` (D13).
    """
    if kind not in REPORTS:
        raise PayloadError(f"report kind must be 'lab' or 'exam', got {kind!r}")
    name = f"{kind}_void_filter"
    flt = spec.filters()[name]
    root = etree.Element("root")
    for element in flt.elements:
        if element == "id_type":
            value = report.get("id_type_code", report.get("id_type"))
            _element_text(root, options.void_filter_id_type_element, value, entity=name, field=element)
        else:
            fld = spec.entity(REPORTS[kind][0]).field(element)
            _element_text(
                root,
                element,
                format_value(report.get(element), fld, entity=name, options=options),
                entity=name,
                field=element,
            )
    return _serialise(root, encoding, options)


def _query_filters() -> dict[str, spec.Filter]:
    return {f.method: f for f in spec.filters().values() if not f.name.endswith("_void_filter")}


def build_query_filter(
    method_name: str,
    *,
    id_no: str,
    id_type: str,
    event_no: str | None = None,
    options: spec.SpecOptions,
    encoding: str = "UTF-8",
) -> bytes:
    """strFilter of GetCheckLabList, GetCheckLabInfo, GetLabInfo or GetExamInfo.

    ``event_no`` is written as an empty element when None ("无此流水号可放空"); GetCheckLabList
    has no event_no element at all.
    """
    filters = _query_filters()
    flt = filters.get(method_name)
    if flt is None:
        raise PayloadError(
            f"{method_name!r} takes no element filter; element filters exist for {sorted(filters)} "
            "(ExistsReCureInfo: use build_recure_filter)"
        )
    values = {"id_no": id_no, "id_type": id_type, "event_no": event_no}
    root = etree.Element("root")
    for element in flt.elements:
        _element_text(root, element, values.get(element), entity=flt.name, field=element)
    return _serialise(root, encoding, options)


def build_recure_filter(
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
    options: spec.SpecOptions,
    encoding: str = "UTF-8",
) -> bytes:
    """strFilter of ExistsReCureInfo (§1.4.2.2): root attributes plus the exam/lab codes asked about.

    ``check``: exam item codes (exam_subitem.exam_item_code); ``lab``: lab sub-item codes
    (lab_subitem.class_code). Empty lists are written as empty ``<check/>`` / ``<lab/>``.
    """
    entity = "recure_filter"
    values = {
        "id_no": id_no,
        "id_type": id_type,
        "dept_code": dept_code,
        "dept_name": dept_name,
        "dept_std_code": dept_std_code,
        "dept_std_name": dept_std_name,
        "doc_code": doc_code,
        "doc_name": doc_name,
        "event_no": event_no,
    }
    root = etree.Element("root")
    for name in RECURE_FILTER_ATTRIBUTES:
        value = values[name]
        root.set(name, check_text("" if value is None else str(value), entity=entity, field=name))
    for tag, codes in (("check", check), ("lab", lab)):
        if isinstance(codes, str):
            raise PayloadError(
                f"{entity}.{tag}: pass a list of codes, not one string", entity=entity, field=tag
            )
        box = etree.SubElement(root, tag)
        for code in codes:
            _element_text(box, "item", code, entity=entity, field=tag)
    return _serialise(root, encoding, options)


# --------------------------------------------------------------------------------------------
# Safe parsing
# --------------------------------------------------------------------------------------------

_local = threading.local()  # lxml parsers must not be shared between threads


def _parser(encoding: str | None = None) -> etree.XMLParser:
    cache: dict[str | None, etree.XMLParser] = getattr(_local, "parsers", None) or {}
    _local.parsers = cache
    parser = cache.get(encoding)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            dtd_validation=False,
            remove_comments=True,
            remove_pis=True,
            encoding=encoding,
        )
        cache[encoding] = parser
    return parser


def parse_xml(data: bytes | str, *, what: str = "the answer", encoding: str = "utf-8") -> etree._Element:
    """Parse untrusted XML; any DOCTYPE / ENTITY declaration is refused (XXE, billion laughs).

    ``encoding`` is used only when bytes carry no declaration (a GBK platform that omits it).
    Raises :class:`AnswerError` with what is wrong and never the content.
    """
    if isinstance(data, str):
        if _DOCTYPE_TEXT.search(data):
            raise AnswerError(f"{what} contains a DOCTYPE/ENTITY declaration; refused (XXE protection)")
        text = _DECLARATION_TEXT.sub("", data, count=1)  # lxml refuses str with an encoding declaration
        source: bytes | str = text
        parser = _parser()
    else:
        raw = bytes(data)
        if _DOCTYPE.search(raw):
            raise AnswerError(f"{what} contains a DOCTYPE/ENTITY declaration; refused (XXE protection)")
        source = raw
        parser = _parser(None if _DECLARED.match(raw) or encoding.lower() in ("utf-8", "utf8") else encoding)
    if not source.strip():
        raise AnswerError(f"{what} is empty where XML was expected")
    try:
        root = etree.fromstring(source, parser)
    except etree.XMLSyntaxError as exc:
        raise AnswerError(f"{what} is not well-formed XML ({_syntax_reason(exc)})") from None
    except (ValueError, LookupError) as exc:  # unknown declared encoding, undecodable bytes
        raise AnswerError(
            f"{what} cannot be decoded as XML ({type(exc).__name__}); check the text encoding"
        ) from None
    if root is None:
        raise AnswerError(f"{what} holds no XML element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise AnswerError(f"{what} contains a DOCTYPE; refused (XXE protection)")
    return root


def _syntax_reason(exc: etree.XMLSyntaxError) -> str:
    # libxml2 messages name tags and positions; cut them short in case one quotes content
    msg = str(exc.msg or exc).strip().splitlines()[0]
    return (msg[:160] + "...") if len(msg) > 160 else msg


def _name(tag: object) -> str | None:
    if not isinstance(tag, str):
        return None  # comment, PI, entity
    return etree.QName(tag).localname.lower()


def normalise_name(name: str, *, aliases: Mapping[str, str] | None = None) -> str:
    """An attribute name as we spell it (D2): lower case, alternative spellings mapped."""
    low = etree.QName(name).localname.lower() if name.startswith("{") else name.lower()
    if aliases and low in aliases:
        return aliases[low]
    return ANSWER_ALIASES.get(low, low)


def reverse_aliases(options: spec.SpecOptions | None) -> dict[str, str]:
    """The platform's spellings (from ``attribute_aliases``) → ours, for reading answers."""
    if options is None:
        return {}
    return {theirs.lower(): ours.rsplit(".", 1)[-1] for ours, theirs in options.attribute_aliases.items()}


def _attrs(
    element: etree._Element, aliases: Mapping[str, str] | None, names: dict[str, str]
) -> dict[str, str]:
    """An element's attributes by our names; ``names`` remembers each spelling's (a document's
    items share their ~25 names)."""
    out: dict[str, str] = {}
    for key, value in element.attrib.items():
        name = names.get(key)
        if name is None:
            name = names[key] = normalise_name(key, aliases=aliases)
        out.setdefault(name, value)  # both spellings present: the first wins
    return out


def parse_records(
    root: etree._Element, *, aliases: Mapping[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The records under ``<root>``, by element name, as dicts of attribute text.

    Handles every shape the spec uses:
    ``<root><item/>...`` (GetCheckLabList) → ``{"item": [...]}``;
    ``<root><labmaster><item/>...</labmaster>...`` (payloads, GetCheckLabInfo) → ``{"labmaster": [...]}``;
    ``<root><labmaster attr=...><item/>...</labmaster>`` (ExistsReCureInfo, GetLabInfo, GetExamInfo)
    → ``{"labmaster": [{...attrs, "items": [...]}]}`` ("items" only when there are item children).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    names: dict[str, str] = {}
    for child in root:
        tag = _name(child.tag)
        if tag is None:
            continue
        bucket = out.setdefault(tag, [])
        items = [_attrs(i, aliases, names) for i in child if _name(i.tag) == "item"]
        if tag == "item":
            bucket.append(_attrs(child, aliases, names))
        elif child.attrib:
            record: dict[str, Any] = _attrs(child, aliases, names)
            if items:
                record["items"] = items
            bucket.append(record)
        else:
            bucket.extend(items)
    return out


def parse_filter(root: etree._Element) -> dict[str, Any]:
    """A strFilter as a dict: root attributes and child element texts; ``check``/``lab`` as code lists.

    ``id_type_code`` is read as ``id_type`` (D13, read leniently).
    """
    out: dict[str, Any] = {}
    for key, value in root.attrib.items():
        out[normalise_name(key)] = value.strip()
    for child in root:
        tag = _name(child.tag)
        if tag is None:
            continue
        if tag in ("check", "lab"):
            out[tag] = [(i.text or "").strip() for i in child if _name(i.tag) == "item"]
        else:
            out[tag] = (child.text or "").strip()
    if "id_type" not in out and "id_type_code" in out:
        out["id_type"] = out.pop("id_type_code")
    return out
