"""The interface specification as data: entities, their fields, the appendix dictionaries.

This is the single source of truth the rest of the library derives from (store schema,
validation rules, XML builders, the platform simulator's checks). The data lives in
``include/spec/*.tsv`` and ``include/dictionaries/*.tsv``; this module loads it once, checks it,
and turns it into typed, immutable objects. ``docs/spec-decisions.md`` explains every place where
our tables deliberately differ from the letter of the spec (column ``decision``), and
:class:`SpecOptions` holds the decisions a site may configure differently.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

INCLUDE = Path(__file__).resolve().parents[2] / "include"
SPEC_DIR = INCLUDE / "spec"
DICTIONARY_DIR = INCLUDE / "dictionaries"

FieldType = Literal["text", "number", "date", "datetime", "pdf", "uid"]
EntityKind = Literal["report", "item", "count", "record", "view"]
DictionaryKind = Literal["closed", "open"]

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the spec's YYYY-MM-DD hh24:mi:ss, Beijing time, naive
DATE_FORMAT = "%Y-%m-%d"


class SpecError(ValueError):
    """A spec data file is malformed, or a name asked for does not exist."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    zh_name: str
    type: FieldType
    length: int | None  # VARCHAR2(n) bytes (see SpecOptions.length_semantics), NUMBER(n) digits
    nullable: bool
    key: bool  # marked 主键 in the spec
    dictionary: str | None
    spec_type: str  # the type exactly as the spec writes it
    decision: str | None  # D-number in docs/spec-decisions.md where we depart from the letter
    note: str


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    section: str
    kind: EntityKind
    parent: str | None  # the master entity of a sub-item table
    key: tuple[str, ...]  # the key we upsert by (the spec's 主键, see D16 for records)
    title: str
    fields: tuple[Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise SpecError(f"{self.name} has no field {name!r}")


@dataclass(frozen=True, slots=True)
class Dictionary:
    name: str
    section: str
    kind: DictionaryKind  # open: an external list not shipped with the spec (3.7, 3.11)
    title: str
    codes: Mapping[str, str] = field(default_factory=dict)  # code -> name
    parents: Mapping[str, str] = field(default_factory=dict)  # STD_DEPT hierarchy: code -> parent

    def __contains__(self, code: object) -> bool:
        return self.kind == "open" or code in self.codes

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    method: str
    section: str
    elements: tuple[str, ...]
    title: str


@dataclass(frozen=True, kw_only=True)
class SpecOptions:
    """Decisions on the spec's contradictions that a site may set differently (docs/spec-decisions.md)."""

    retrieve_date_format: Literal["date", "datetime"] = "date"  # D1
    attribute_aliases: Mapping[str, str] = field(default_factory=dict)  # D2: our name -> the platform's
    exam_modality_field: Literal["class_code", "class_name"] = "class_code"  # D4
    effective_dtime_tolerance_s: int = 300  # D9: sub-item vs master authenticator_dtime
    daily_count_max: int = 9999  # D8: NUMBER(4)
    daily_count_overflow: Literal["clamp", "error"] = "clamp"  # D8
    void_filter_id_type_element: str = "id_type"  # D13
    length_semantics: Literal["byte", "char"] = "byte"  # D14: Oracle VARCHAR2 default
    length_encoding: str = "utf-8"  # D14: AL32UTF8; "gbk" for a ZHS16GBK platform
    void_data_status: tuple[str, ...] = ("0",)  # D15
    update_mode: Literal["replace", "void_then_register"] = "replace"  # D20: a changed report
    xml_declaration: bool = True  # D21: <?xml ...?> on every payload, credential and filter

    def __post_init__(self) -> None:
        if self.update_mode not in ("replace", "void_then_register"):
            raise SpecError(
                f"update_mode must be 'replace' or 'void_then_register', got {self.update_mode!r}"
            )
        if not isinstance(self.xml_declaration, bool):
            raise SpecError(f"xml_declaration must be true or false, got {self.xml_declaration!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SpecOptions:
        """Options from a site profile (JSON object); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(f"unknown spec option(s) {unknown}; known options: {sorted(known)}")
        merged = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return replace(DEFAULT_OPTIONS, **merged)

    def measured_length(self, value: str) -> int:
        """The length Oracle would count for ``value`` in a VARCHAR2 column (D14)."""
        if self.length_semantics == "char":
            return len(value)
        return len(value.encode(self.length_encoding, errors="replace"))


DEFAULT_OPTIONS = SpecOptions()
"""The spec's defaults, with no site decision: the site's profile is ``hurren.site.site().spec_options``.
Only tests, the simulator and CLIs that say so use this directly; the library takes options as a
required parameter, so no component falls back to it silently."""


def _read_tsv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise SpecError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            yield lineno, {k: (v or "").strip() for k, v in row.items() if k is not None}


def _flag(path: Path, lineno: int, value: str) -> bool:
    if value not in ("yes", "no"):
        raise SpecError(f"{path}:{lineno}: expected yes/no, got {value!r}")
    return value == "yes"


def _load_fields(path: Path) -> tuple[Field, ...]:
    cols = (
        "name",
        "zh_name",
        "type",
        "length",
        "nullable",
        "key",
        "dictionary",
        "spec_type",
        "decision",
        "note",
    )
    out: list[Field] = []
    for lineno, row in _read_tsv(path, cols):
        if row["type"] not in get_args(FieldType):
            raise SpecError(f"{path}:{lineno}: unknown type {row['type']!r}; one of {get_args(FieldType)}")
        if row["length"] and not row["length"].isdigit():
            raise SpecError(f"{path}:{lineno}: length must be a whole number, got {row['length']!r}")
        out.append(
            Field(
                name=row["name"],
                zh_name=row["zh_name"],
                type=row["type"],
                length=int(row["length"]) if row["length"] else None,
                nullable=_flag(path, lineno, row["nullable"]),
                key=_flag(path, lineno, row["key"]),
                dictionary=row["dictionary"] or None,
                spec_type=row["spec_type"],
                decision=row["decision"] or None,
                note=row["note"],
            )
        )
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: duplicate field names {sorted({n for n in names if names.count(n) > 1})}")
    return tuple(out)


def site_dictionary_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where a site keeps its external lists (3.7 LOINC, 3.11 exam codes): ``$HURREN_SITE_DICTIONARIES``,
    else ``dictionaries/`` of the site directory ``$HURREN_SITE_DIR`` (``hurren.site``), else none."""
    env = os.environ if environ is None else environ
    if env.get("HURREN_SITE_DICTIONARIES"):
        return Path(env["HURREN_SITE_DICTIONARIES"])
    if env.get("HURREN_SITE_DIR"):
        return Path(env["HURREN_SITE_DIR"]) / "dictionaries"
    return None


def _load_codes(path: Path, name: str) -> tuple[dict[str, str], dict[str, str]]:
    codes: dict[str, str] = {}
    parents: dict[str, str] = {}
    for lineno, row in _read_tsv(path, ("code", "name")):
        if not row["code"]:
            raise SpecError(f"{path}:{lineno}: empty code")
        if row["code"] in codes:
            raise SpecError(f"{path}:{lineno}: duplicate code {row['code']!r} in {name}")
        codes[row["code"]] = row["name"]
        if row.get("parent"):
            parents[row["code"]] = row["parent"]
    orphans = sorted(p for p in parents.values() if p not in codes)
    if orphans:
        raise SpecError(f"{path}: parent code(s) {orphans} are not codes of {name}")
    return codes, parents


@cache
def dictionaries() -> dict[str, Dictionary]:
    """Every dictionary, by name. An open set becomes closed when the site supplies its list."""
    out: dict[str, Dictionary] = {}
    site = site_dictionary_dir()
    for lineno, row in _read_tsv(DICTIONARY_DIR / "index.tsv", ("name", "section", "kind", "title")):
        name, kind = row["name"], row["kind"]
        if kind not in get_args(DictionaryKind):
            raise SpecError(f"index.tsv:{lineno}: kind must be closed or open, got {kind!r}")
        path = DICTIONARY_DIR / f"{name}.tsv"
        if kind == "open" and site is not None and (site / f"{name}.tsv").exists():
            path, kind = site / f"{name}.tsv", "closed"
        codes, parents = _load_codes(path, name) if kind == "closed" else ({}, {})
        out[name] = Dictionary(name, row["section"], kind, row["title"], codes, parents)
    return out


def dictionary(name: str) -> Dictionary:
    try:
        return dictionaries()[name]
    except KeyError:
        raise SpecError(f"no dictionary {name!r}; known: {sorted(dictionaries())}") from None


@cache
def entities() -> dict[str, Entity]:
    """Every entity of the spec, by name, with its fields in the spec's order."""
    out: dict[str, Entity] = {}
    cols = ("entity", "section", "kind", "parent", "key", "title")
    for lineno, row in _read_tsv(SPEC_DIR / "entities.tsv", cols):
        if row["kind"] not in get_args(EntityKind):
            raise SpecError(f"entities.tsv:{lineno}: unknown kind {row['kind']!r}")
        fields_ = _load_fields(SPEC_DIR / f"{row['entity']}.tsv")
        ent = Entity(
            name=row["entity"],
            section=row["section"],
            kind=row["kind"],
            parent=row["parent"] or None,
            key=tuple(row["key"].split(",")),
            title=row["title"],
            fields=fields_,
        )
        missing = [k for k in ent.key if k not in ent.names]
        if missing:
            raise SpecError(f"entities.tsv:{lineno}: key column(s) {missing} are not fields of {ent.name}")
        for f in ent.fields:
            if f.dictionary and f.dictionary not in dictionaries():
                raise SpecError(f"{ent.name}.{f.name}: unknown dictionary {f.dictionary!r}")
        out[ent.name] = ent
    for ent in out.values():
        if ent.parent and ent.parent not in out:
            raise SpecError(f"{ent.name}: parent {ent.parent!r} is not an entity")
    return out


def entity(name: str) -> Entity:
    try:
        return entities()[name]
    except KeyError:
        raise SpecError(f"no entity {name!r}; known: {sorted(entities())}") from None


@cache
def filters() -> dict[str, Filter]:
    """The strFilter payloads of the void and query methods."""
    out = {}
    for _, row in _read_tsv(SPEC_DIR / "filters.tsv", ("filter", "method", "section", "elements", "title")):
        out[row["filter"]] = Filter(
            row["filter"], row["method"], row["section"], tuple(row["elements"].split(",")), row["title"]
        )
    return out


PATIENT_IDENTIFIERS = frozenset({"name", "id_no", "card_no", "birth_date", "PATIENTNAME"})
"""Fields that never reach a log line or a report in clear."""
