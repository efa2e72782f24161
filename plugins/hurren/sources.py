"""Hospital sources as configuration: adding a hospital is a JSON entry, not code.

The configuration is one JSON document (``include/sources.json`` by default)::

    {
      "defaults": {"schedule": "*/30 * * * *", "overlap_minutes": 10, ...},
      "hospitals": [
        {"id": "korla_mch", "org_code": "270258069", "org_name": "库尔勒市妇幼保健院",
         "conn_id": "hurren_src_korla_mch", "dialect": "oracle",
         "views": {"labmaster": "V_LIS_REPORT", "v_web_jcjg": "V_WEB_JCJG"}}
      ]
    }

Every key of ``defaults`` may be set per hospital, which wins. Where the text comes from, first
match wins: the Airflow Variable ``hurren_sources`` (the DAG reads it and passes the text to
:func:`resolve_sources`; this module imports nothing from Airflow), the file named by
``$HURREN_SOURCES_FILE``, ``sources.json`` in the site directory ``$HURREN_SITE_DIR``
(``hurren.site``), ``include/sources.json``. The text is checked once, on load: every
problem is reported together, each naming the hospital and key to fix (:class:`SourcesError`).

Names substituted into extraction SQL (view and table names, the PACS study-UID column) must be
plain identifiers (:data:`IDENTIFIER`, optionally ``schema.name``): they are the only text that
reaches the SQL besides the spec's own names (``hurren.sql`` builds the queries); values always travel
as bind parameters.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hurren import spec

__all__ = [
    "DIALECTS",
    "IDENTIFIER",
    "SOURCE_ENTITIES",
    "STREAMS",
    "Dialect",
    "Pool",
    "Source",
    "Sources",
    "SourcesError",
    "Stream",
    "StreamDef",
    "default_sources_path",
    "load_sources",
    "parse_sources",
    "resolve_sources",
]

INCLUDE = spec.INCLUDE
DEFAULT_SOURCES_FILE = INCLUDE / "sources.json"
MAPPINGS_DIR = INCLUDE / "mappings"
VARIABLE_NAME = "hurren_sources"
ENV_FILE = "HURREN_SOURCES_FILE"

Dialect = Literal["oracle", "mssql", "postgresql", "mysql", "sqlite"]
DIALECTS: tuple[str, ...] = get_args(Dialect)

Stream = Literal["lab", "exam", "pacs_instance", "pacs_study", "accept", "quote"]


@dataclass(frozen=True, slots=True)
class StreamDef:
    """One incremental stream of a source: which entities it reads and its cursor column."""

    name: Stream
    master: str  # the spec entity the cursor runs over
    item: str | None  # the sub-item entity read with each master (reports only)
    cursor: str  # the spec field that is the watermark

    @property
    def entities(self) -> tuple[str, ...]:
        return (self.master,) if self.item is None else (self.master, self.item)


STREAMS: Mapping[str, StreamDef] = MappingProxyType(
    {
        "lab": StreamDef("lab", "labmaster", "lab_subitem", "last_update_dtime"),
        "exam": StreamDef("exam", "exammaster", "exam_subitem", "last_update_dtime"),
        "pacs_instance": StreamDef("pacs_instance", "v_web_jcjg", None, "CREATEDTIME"),
        "pacs_study": StreamDef("pacs_study", "v_web_jctj", None, "MODIFYTIME"),
        # accept/quote records carry no last-update time: record_time (记录时间) is their cursor
        "accept": StreamDef("accept", "sehr_accept_record", None, "record_time"),
        "quote": StreamDef("quote", "sehr_quote_record", None, "record_time"),
    }
)

SOURCE_ENTITIES: tuple[str, ...] = tuple(e for s in STREAMS.values() for e in s.entities)
"""The spec entities read from a hospital (the daily counts are computed from the store)."""

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
"""A name that may be substituted into SQL text: letters, digits, underscore; no quoting needed."""

_SOURCE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_POOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?LW#]+$")
_CRON_PRESETS = frozenset({"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"})
_ORG_CODE = re.compile(r"^[0-9A-Za-z]{1,128}$")


class SourcesError(ValueError):
    """The sources configuration cannot be used; the message lists every place to fix."""

    def __init__(self, problems: list[str], origin: str = "sources configuration") -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{origin}: {len(problems)} problem(s) to fix:\n{lines}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Pool:
    """The Airflow pool that caps concurrent queries against one hospital's database."""

    name: str
    slots: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Source:
    """One hospital database the pipeline extracts from."""

    id: str  # our name for it: DAG ids, watermarks and run records use it (a-z, 0-9, _)
    org_code: str  # the hospital's 机构编码
    org_name: str
    conn_id: str  # the Airflow connection to its database
    dialect: Dialect
    views: Mapping[str, str]  # spec entity -> view/table name at the source (every source entity)
    pacs_study_uid_column: str = "STUDIUIID"  # D11: some PACS views spell it STUDYIUID
    streams: tuple[Stream, ...] = tuple(STREAMS)
    schedule: str | None = "*/30 * * * *"  # cron or an Airflow preset; None: triggered only
    timezone: str = "Asia/Shanghai"  # the zone of the source's naive timestamps
    initial_value: datetime = datetime(2024, 1, 1)  # noqa: DTZ001 - naive source time, by design
    overlap_minutes: int = 10  # re-read this much before the watermark: late commits
    future_tolerance_minutes: int = 60  # a change time beyond the source's now + this is a clock problem
    chunk_size: int = 500  # masters (with their sub-items) per batch
    # The pandas engine decides every batch (hurren.validation). "gx": GX results for the analysts
    # (Data Docs), once per run over the run's staged batches (hurren.validation.GxDay).
    validator: Literal["pandas", "gx"] = "pandas"
    mapping_file: Path | None = None  # per-hospital code mapping (hurren.mapping), when configured
    enabled: bool = True
    pool: Pool = field(default_factory=lambda: Pool(name="hurren_src", slots=2))  # default: hurren_src_<id>

    def view(self, entity: str) -> str:
        try:
            return self.views[entity]
        except KeyError:
            raise SourcesError([f"{self.id}: no view for entity {entity!r}"]) from None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Sources:
    """The checked configuration: hospitals in file order, found by id or org code."""

    hospitals: tuple[Source, ...]
    origin: str = "sources configuration"

    def __iter__(self) -> Iterator[Source]:
        return iter(self.hospitals)

    def __len__(self) -> int:
        return len(self.hospitals)

    @property
    def enabled(self) -> tuple[Source, ...]:
        return tuple(s for s in self.hospitals if s.enabled)

    def get(self, source_id: str) -> Source:
        for s in self.hospitals:
            if s.id == source_id:
                return s
        known = ", ".join(s.id for s in self.hospitals)
        raise SourcesError([f"no hospital with id {source_id!r}; configured: {known}"], self.origin)

    def by_org_code(self, org_code: str) -> Source:
        for s in self.hospitals:
            if s.org_code == org_code:
                return s
        raise SourcesError([f"no hospital with org_code {org_code!r}"], self.origin)


# --------------------------------------------------------------------------------------------
# loading

_SETTABLE = {
    "pacs_study_uid_column",
    "streams",
    "schedule",
    "timezone",
    "initial_value",
    "overlap_minutes",
    "future_tolerance_minutes",
    "chunk_size",
    "validator",
    "enabled",
    "pool",
    "views",
}
_HOSPITAL_ONLY = {"id", "org_code", "org_name", "conn_id", "dialect", "mapping_file"}
_REQUIRED = ("id", "org_code", "org_name", "conn_id", "dialect")


def default_sources_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$HURREN_SOURCES_FILE``, else ``sources.json`` of the site directory ``$HURREN_SITE_DIR`` when it
    has one, else ``include/sources.json``."""
    env = os.environ if environ is None else environ
    if env.get(ENV_FILE):
        return Path(env[ENV_FILE])
    if env.get("HURREN_SITE_DIR") and (site_file := Path(env["HURREN_SITE_DIR"]) / "sources.json").is_file():
        return site_file
    return DEFAULT_SOURCES_FILE


def resolve_sources(variable_text: str | None = None, *, environ: Mapping[str, str] | None = None) -> Sources:
    """The configuration in force: the Airflow Variable's text if given, else the file.

    DAG code: ``resolve_sources(Variable.get("hurren_sources", default=None))``.
    """
    if variable_text is not None and variable_text.strip():
        return parse_sources(variable_text, origin=f"Airflow Variable {VARIABLE_NAME!r}")
    return load_sources(default_sources_path(environ))


def load_sources(path: Path | str) -> Sources:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourcesError(
            [f"cannot read {path}: {exc.strerror}; set ${ENV_FILE} to a readable file"]
        ) from exc
    return parse_sources(text, origin=str(path), base_dir=path.parent)


def parse_sources(
    text: str, *, origin: str = "sources configuration", base_dir: Path | None = None
) -> Sources:
    """Check and type a sources JSON text. Cached by text: the same text is parsed once."""
    return _parse_cached(text, origin, str(base_dir) if base_dir else None)


@lru_cache(maxsize=8)
def _parse_cached(text: str, origin: str, base_dir: str | None) -> Sources:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourcesError(
            [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"], origin
        ) from None
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise SourcesError(
            ['the top level must be an object {"defaults": {...}, "hospitals": [...]}'], origin
        )
    unknown = sorted(set(doc) - {"defaults", "hospitals", "$comment"})
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; allowed: defaults, hospitals")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append("defaults must be an object")
        defaults = {}
    bad = sorted(set(defaults) - _SETTABLE - {"$comment"})
    if bad:
        problems.append(f"defaults: key(s) {bad} cannot be defaulted; allowed: {sorted(_SETTABLE)}")
    hospitals = doc.get("hospitals")
    if not isinstance(hospitals, list) or not hospitals:
        problems.append('"hospitals" must be a non-empty list of hospital objects')
        hospitals = []
    out: list[Source] = []
    for i, raw in enumerate(hospitals):
        where = f"hospitals[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where} must be an object")
            continue
        if isinstance(raw.get("id"), str):
            where += f" ({raw['id']})"
        merged = {k: v for k, v in defaults.items() if k != "$comment"}
        merged.update({k: v for k, v in raw.items() if k != "$comment"})
        if isinstance(defaults.get("views"), dict) and isinstance(raw.get("views"), dict):
            merged["views"] = {**defaults["views"], **raw["views"]}
        source = _source(merged, where, problems, Path(base_dir) if base_dir else DEFAULT_SOURCES_FILE.parent)
        if source is not None:
            out.append(source)
    for attr in ("id", "org_code", "conn_id"):
        seen: dict[str, int] = {}
        for s in out:
            seen[getattr(s, attr)] = seen.get(getattr(s, attr), 0) + 1
        dup = sorted(k for k, n in seen.items() if n > 1)
        if dup:
            problems.append(f"{attr} must be unique across hospitals; repeated: {dup}")
    if problems:
        raise SourcesError(problems, origin)
    return Sources(tuple(out), origin)


def _source(raw: dict[str, Any], where: str, problems: list[str], base_dir: Path) -> Source | None:
    start = len(problems)

    def err(msg: str) -> None:
        problems.append(f"{where}: {msg}")

    unknown = sorted(set(raw) - _SETTABLE - _HOSPITAL_ONLY)
    if unknown:
        err(f"unknown key(s) {unknown}; allowed: {sorted(_SETTABLE | _HOSPITAL_ONLY)}")
    for key in _REQUIRED:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            err(f"{key!r} is required (a non-empty string)")
    if problems[start:]:
        return None

    if not _SOURCE_ID.match(raw["id"]):
        err(f"id {raw['id']!r} must be 1-64 characters of a-z, 0-9 and _, starting with a letter")
    if not _ORG_CODE.match(raw["org_code"]):
        err(f"org_code {raw['org_code']!r} must be letters and digits only (the 机构编码)")
    if not _CONN_ID.match(raw["conn_id"]):
        err(f"conn_id {raw['conn_id']!r} must be an Airflow connection id (letters, digits, _ . -)")
    if raw["dialect"] not in DIALECTS:
        hint = (
            " (KingbaseES and openGauss are postgresql)"
            if raw["dialect"] in ("kingbase", "opengauss")
            else " (MariaDB is mysql)"
            if raw["dialect"] == "mariadb"
            else ""
        )
        err(f"dialect {raw['dialect']!r} is not supported; use one of {', '.join(DIALECTS)}{hint}")

    views = {entity: entity for entity in SOURCE_ENTITIES}  # default: the spec's names
    given = raw.get("views", {})
    if not isinstance(given, dict):
        err('views must be an object {"<spec entity>": "<view or table name>"}')
        given = {}
    for entity, name in given.items():
        if entity not in SOURCE_ENTITIES:
            err(f"views: {entity!r} is not a source entity; one of {', '.join(SOURCE_ENTITIES)}")
        elif not isinstance(name, str) or not _is_relation_name(name):
            err(
                f"views.{entity}: {name!r} is not a plain identifier; use letters, digits and _ "
                "(optionally schema.name), at most 128 characters each, starting with a letter"
            )
        else:
            views[entity] = name

    uid_col = raw.get("pacs_study_uid_column", "STUDIUIID")
    if not isinstance(uid_col, str) or not IDENTIFIER.match(uid_col):
        err(f"pacs_study_uid_column {uid_col!r} must be a plain identifier such as STUDIUIID")

    streams = raw.get("streams", list(STREAMS))
    if not isinstance(streams, list) or not streams or any(s not in STREAMS for s in streams):
        err(f"streams must be a non-empty list drawn from {list(STREAMS)}, got {streams!r}")
        streams = list(STREAMS)
    elif len(set(streams)) != len(streams):
        err(f"streams lists a stream twice: {streams!r}")

    schedule = raw.get("schedule", "*/30 * * * *")
    if schedule is not None and not _is_schedule(schedule):
        err(
            f"schedule {schedule!r} must be a 5-field cron expression, an Airflow preset "
            f"({', '.join(sorted(_CRON_PRESETS))}) or null"
        )

    tz = raw.get("timezone", "Asia/Shanghai")
    try:
        if not isinstance(tz, str):
            raise ZoneInfoNotFoundError(tz)
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        err(f"timezone {tz!r} is not an IANA zone name such as 'Asia/Shanghai'")

    initial = raw.get("initial_value", "2024-01-01 00:00:00")
    initial_value = _parse_time(initial)
    if initial_value is None:
        err(f"initial_value {initial!r} must be 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' (source local time)")

    overlap = raw.get("overlap_minutes", 10)
    if not _is_int(overlap) or not 0 <= overlap <= 7 * 24 * 60:
        err(f"overlap_minutes must be a whole number from 0 to 10080 (a week), got {overlap!r}")
    tolerance = raw.get("future_tolerance_minutes", 60)
    if not _is_int(tolerance) or not 0 <= tolerance <= 7 * 24 * 60:
        err(f"future_tolerance_minutes must be a whole number from 0 to 10080 (a week), got {tolerance!r}")
    chunk = raw.get("chunk_size", 500)
    if not _is_int(chunk) or not 1 <= chunk <= 100_000:
        err(f"chunk_size must be a whole number from 1 to 100000, got {chunk!r}")

    validator = raw.get("validator", "pandas")
    if validator not in ("pandas", "gx"):
        err(f'validator must be "pandas" or "gx", got {validator!r}')

    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        err(f"enabled must be true or false, got {enabled!r}")

    pool_raw = raw.get("pool", {})
    pool = None
    if isinstance(pool_raw, dict):
        pool_raw = {"name": f"hurren_src_{raw['id']}", "slots": 2, **pool_raw}
    if (
        not isinstance(pool_raw, dict)
        or set(pool_raw) - {"name", "slots"}
        or not isinstance(pool_raw.get("name"), str)
        or not _POOL_NAME.match(pool_raw["name"])
        or not _is_int(pool_raw.get("slots"))
        or pool_raw["slots"] < 1
    ):
        err(f'pool must be {{"name": "<pool name>", "slots": <1 or more>}} (both optional), got {pool_raw!r}')
    else:
        pool = Pool(name=pool_raw["name"], slots=pool_raw["slots"])

    mapping_file = None
    if raw.get("mapping_file") is not None:
        mf = raw["mapping_file"]
        if not isinstance(mf, str) or not mf:
            err(f"mapping_file must be a file name (under include/mappings) or null, got {mf!r}")
        else:
            candidate = Path(mf)
            if not candidate.is_absolute():
                in_mappings = MAPPINGS_DIR / candidate
                candidate = in_mappings if in_mappings.exists() else base_dir / candidate
            if not candidate.is_file():
                err(f"mapping_file {mf!r} not found (looked in {MAPPINGS_DIR} and {base_dir})")
            else:
                mapping_file = candidate

    if problems[start:]:
        return None
    return Source(
        id=raw["id"],
        org_code=raw["org_code"],
        org_name=raw["org_name"],
        conn_id=raw["conn_id"],
        dialect=raw["dialect"],
        views=MappingProxyType(views),
        pacs_study_uid_column=uid_col,
        streams=tuple(streams),
        schedule=schedule,
        timezone=tz,
        initial_value=initial_value,
        overlap_minutes=overlap,
        future_tolerance_minutes=tolerance,
        chunk_size=chunk,
        validator=validator,
        mapping_file=mapping_file,
        enabled=enabled,
        pool=pool,
    )


def _is_relation_name(name: str) -> bool:
    parts = name.split(".")
    return 1 <= len(parts) <= 2 and all(IDENTIFIER.match(p) for p in parts)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_schedule(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value in _CRON_PRESETS:
        return True
    parts = value.split()
    return len(parts) == 5 and all(_CRON_FIELD.match(p) for p in parts)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    for fmt in (spec.DATETIME_FORMAT, spec.DATE_FORMAT):
        try:
            return datetime.strptime(value, fmt)  # noqa: DTZ007 - naive source local time
        except ValueError:
            continue
    return None
