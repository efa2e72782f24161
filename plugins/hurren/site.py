"""The site's configuration: resolved once per process, then passed explicitly to every component.

A site is what one deployment decides: its store and S3 (:mod:`hurren.settings`), its hospitals
(:mod:`hurren.sources`), its readings of the spec's contradictions (``SpecOptions``,
docs/spec-decisions.md), its rule book (severities, :mod:`hurren.rules`), its external dictionaries
and the daily counts' schedule. Everything optional comes from one **site directory**
(``$HURREN_SITE_DIR``; ``/opt/airflow/site`` in the compose stack), each file with the shipped
default when it is missing::

    $HURREN_SITE_DIR/
      spec-options.json   {"length_semantics": "char", "xml_declaration": false, ...}   SpecOptions
      rules.json          {"overrides": [{"rule": ..., "severity": ..., "entity": ..., "field": ...}],
                           "params": {"pdf_max_bytes": ...}}    on top of include/spec/rules.json
      sources.json        the hospitals (hurren.sources; ``$HURREN_SOURCES_FILE`` wins)
      dictionaries/       STD_LOINC_CLASS.tsv, STD_EXAM_CODE.tsv (``$HURREN_SITE_DICTIONARIES`` wins)

The store's and S3's credentials come from the Airflow connections ``hurren_store`` and ``hurren_s3``
(ids: ``HURREN_STORE_CONN_ID`` / ``HURREN_S3_CONN_ID``) where they exist, as the hospitals' and
the platform's do, else from the environment as before (:meth:`Site.connected_settings`, at task
time: the connections are read when a task builds its clients, never while a DAG file is parsed).

Every file is checked when the site is resolved; an error (:class:`SiteError`) names the file and
the key to fix, and unknown keys are refused (a typo is an error, not a default). Where a setting
came from elsewhere before, that one name keeps working and is documented as such
(docs/configuration.md): ``HURREN_PLATFORM_SPEC_OPTIONS`` stands for ``spec-options.json`` (both
set: an error), ``HURREN_DAILY_COUNTS_CRON`` / ``_TIMEZONE`` give the daily counts' schedule. The
platform connection's ``extra.spec_options`` must agree with the site's profile
(``hurren.push.connection``): the store, the validation and the pushed XML follow one profile.

Components never fall back to ``spec.DEFAULT_OPTIONS``: DAG tasks call :func:`site` once and pass
``site.spec_options`` / ``site.rulebook`` down (pipeline, validation, load, push, daily counts).
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hurren import rules, spec
from hurren.settings import Settings
from hurren.source_engines import ConnectionLike
from hurren.sources import Sources, SourcesError, resolve_sources

__all__ = [
    "SITE_FILES",
    "Site",
    "SiteError",
    "airflow_connection",
    "site",
    "spec_options_from_document",
    "spec_options_from_env",
]

ENV_DIR = "HURREN_SITE_DIR"
SPEC_OPTIONS_FILE = "spec-options.json"
RULES_FILE = "rules.json"
SITE_FILES = (SPEC_OPTIONS_FILE, RULES_FILE, "sources.json", "dictionaries/")
"""What a site directory may hold (each optional); anything else in it is left alone (the compose
stack keeps ``airflow.env``, mappings and secrets there too)."""
DEFAULT_DAILY_COUNTS_CRON = "0 3 * * *"
DEFAULT_DAILY_COUNTS_TIMEZONE = "Asia/Shanghai"
DEFAULT_STORE_CONN_ID = "hurren_store"
DEFAULT_S3_CONN_ID = "hurren_s3"
_STORE_TYPES = ("postgres", "postgresql")

_RULES_KEYS = {"overrides", "params", "$comment"}
_OVERRIDE_KEYS = {"rule", "severity", "entity", "field", "why"}
_PARAM_KEYS = {"pdf_max_bytes"}
_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?LW#]+$")


class SiteError(ValueError):
    """The site's configuration cannot be used; the message names the file (or variable) and key."""


def airflow_connection(conn_id: str) -> ConnectionLike | None:
    """The Airflow connection ``conn_id`` (secrets backend, ``AIRFLOW_CONN_…``, metadata database),
    or None when there is none or Airflow is not installed (a CLI on a bare machine)."""
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


@dataclass(frozen=True, kw_only=True)
class Site:
    """One site's configuration, checked. Build it with :func:`site` (cached) or :meth:`from_env`."""

    directory: Path | None
    """``$HURREN_SITE_DIR``; None: nothing but the shipped defaults and the environment."""
    settings: Settings = field(repr=False)
    sources: Sources = field(repr=False)
    spec_options: spec.SpecOptions
    """The site's profile (D1-D24): what validation, the store and the pushed XML follow."""
    spec_options_origin: str
    """Where the profile came from (a file, a variable, or "the spec's defaults"), for messages."""
    rulebook: rules.RuleBook = field(repr=False)
    dictionaries_dir: Path | None
    """The site's external lists (read by ``hurren.spec.dictionaries``, the same resolution)."""
    daily_counts_cron: str = DEFAULT_DAILY_COUNTS_CRON
    daily_counts_timezone: str = DEFAULT_DAILY_COUNTS_TIMEZONE
    store_conn_id: str = DEFAULT_STORE_CONN_ID
    """The Airflow connection of the store (``HURREN_STORE_CONN_ID``); none such: ``HURREN_STORE_URL``."""
    s3_conn_id: str = DEFAULT_S3_CONN_ID
    """The Airflow connection of S3 (``HURREN_S3_CONN_ID``); none such: ``HURREN_S3_*``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Site:
        env = os.environ if environ is None else environ
        directory = Path(env[ENV_DIR]) if env.get(ENV_DIR) else None
        if directory is not None and not directory.is_dir():
            raise SiteError(
                f"{ENV_DIR}={directory} is not a directory (the site directory: {', '.join(SITE_FILES)})"
            )
        options, origin = spec_options_from_env(env)
        try:
            sources = resolve_sources(environ=env)
        except SourcesError as exc:
            raise SiteError(str(exc)) from None
        return cls(
            directory=directory,
            settings=Settings.from_env(env),
            sources=sources,
            spec_options=options,
            spec_options_origin=origin,
            rulebook=_rulebook(directory),
            dictionaries_dir=spec.site_dictionary_dir(env),
            daily_counts_cron=_cron(env),
            daily_counts_timezone=_timezone(env),
            store_conn_id=(env.get("HURREN_STORE_CONN_ID") or "").strip() or DEFAULT_STORE_CONN_ID,
            s3_conn_id=(env.get("HURREN_S3_CONN_ID") or "").strip() or DEFAULT_S3_CONN_ID,
        )

    def connected_settings(
        self, get_connection: typing.Callable[[str], ConnectionLike | None] = airflow_connection
    ) -> Settings:
        """The settings a task builds its store engine and S3 client from: the store's URL and S3's
        endpoint and keys from the Airflow connections :attr:`store_conn_id` / :attr:`s3_conn_id`
        where they exist (a value the connection leaves empty: the environment's), else
        :attr:`settings` as the environment gives them."""
        out = self.settings
        if (conn := get_connection(self.store_conn_id)) is not None:
            out = replace(out, store_url=_store_url(conn, out.store_url))
        if (conn := get_connection(self.s3_conn_id)) is not None:
            out = replace(out, **_s3_values(conn, out))
        return out


def site() -> Site:
    """The process's site, resolved once from the environment (again only when a ``HURREN_*`` variable
    changed: tests; a deployment restarts its processes to read changed site files)."""
    return _resolved(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("HURREN_"))))


@lru_cache(maxsize=4)
def _resolved(environ: tuple[tuple[str, str], ...]) -> Site:
    return Site.from_env(dict(environ))


# --------------------------------------------------------------------------------------------
# spec-options.json


def spec_options_from_env(environ: Mapping[str, str] | None = None) -> tuple[spec.SpecOptions, str]:
    """The site's profile and where it came from: ``spec-options.json`` of ``$HURREN_SITE_DIR``, else
    ``HURREN_PLATFORM_SPEC_OPTIONS``, else the spec's defaults (both set: an error). For the CLIs;
    tasks use ``site().spec_options``."""
    env = os.environ if environ is None else environ
    path = Path(env[ENV_DIR]) / SPEC_OPTIONS_FILE if env.get(ENV_DIR) else None
    text = (env.get("HURREN_PLATFORM_SPEC_OPTIONS") or "").strip()
    if path is not None and path.is_file():
        if text:
            raise SiteError(
                f"the site's spec options are set twice: {path} and HURREN_PLATFORM_SPEC_OPTIONS; keep one "
                f"(the file; unset the variable)"
            )
        return spec_options_from_document(_read_json(path), origin=str(path)), str(path)
    if text:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SiteError(
                f"HURREN_PLATFORM_SPEC_OPTIONS is not JSON: {exc.msg} at position {exc.pos}"
            ) from None
        origin = "HURREN_PLATFORM_SPEC_OPTIONS"
        return spec_options_from_document(doc, origin=origin), origin
    return spec.DEFAULT_OPTIONS, "the spec's defaults"


def spec_options_from_document(doc: Any, *, origin: str) -> spec.SpecOptions:
    """A ``SpecOptions`` profile from a JSON object, every key and value checked against the field's
    type; errors name ``origin`` and the key. ``{}`` is the spec's defaults."""
    if not isinstance(doc, Mapping):
        raise SiteError(f"{origin}: must be a JSON object of spec options, got {type(doc).__name__}")
    values = {k: v for k, v in doc.items() if k != "$comment"}
    hints = typing.get_type_hints(spec.SpecOptions)
    known = {f.name for f in fields(spec.SpecOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SiteError(f"{origin}: unknown key(s) {unknown}; known: {sorted(known)}")
    for key, value in values.items():
        problem = _type_problem(hints[key], value)
        if problem:
            raise SiteError(f"{origin}: key {key!r}: {problem}, got {value!r}")
    try:
        return spec.SpecOptions.from_mapping(values)
    except (spec.SpecError, TypeError) as exc:
        raise SiteError(f"{origin}: {exc}") from None


def _type_problem(hint: Any, value: Any) -> str | None:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        return (
            None
            if value in allowed and type(value) is type(allowed[0])
            else f"must be one of {list(allowed)}"
        )
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return (
            None
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else ("must be a whole number >= 0")
        )
    if hint is str:
        return None if isinstance(value, str) and value else "must be a non-empty string"
    if origin is tuple:
        return (
            None
            if isinstance(value, list) and all(isinstance(v, str) for v in value)
            else ("must be a list of strings")
        )
    if origin in (Mapping, dict, types.MappingProxyType) or hint is Mapping:
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
        return None if ok else "must be an object of strings"
    raise SiteError(f"SpecOptions field type {hint!r} has no check in hurren.site")  # a new option: add one


# --------------------------------------------------------------------------------------------
# rules.json


def _rulebook(directory: Path | None) -> rules.RuleBook:
    """The shipped rule book with the site's ``rules.json`` on top (overrides appended: the more
    specific, then the later, wins; params replaced key by key)."""
    path = directory / RULES_FILE if directory is not None else None
    if path is None or not path.is_file():
        return rules.load_rulebook()
    doc = _read_json(path)
    if not isinstance(doc, Mapping):
        raise SiteError(f'{path}: must be a JSON object {{"overrides": [...], "params": {{...}}}}')
    unknown = sorted(set(doc) - _RULES_KEYS)
    if unknown:
        raise SiteError(
            f"{path}: unknown key(s) {unknown}; a site's rules.json holds {sorted(_RULES_KEYS - {'$comment'})} "
            "(the rules and their messages are the shipped include/spec/rules.json)"
        )
    overrides = doc.get("overrides", [])
    params = doc.get("params", {})
    if not isinstance(overrides, list) or not all(isinstance(o, Mapping) for o in overrides):
        raise SiteError(f"{path}: key 'overrides' must be a list of objects")
    for i, o in enumerate(overrides):
        if bad := sorted(set(o) - _OVERRIDE_KEYS):
            raise SiteError(f"{path}: overrides[{i}]: unknown key(s) {bad}; known: {sorted(_OVERRIDE_KEYS)}")
    if not isinstance(params, Mapping) or (bad := sorted(set(params) - _PARAM_KEYS)):
        raise SiteError(f"{path}: key 'params' must be an object with some of {sorted(_PARAM_KEYS)}")
    shipped = json.loads(rules.RULES_FILE.read_text(encoding="utf-8"))
    shipped["overrides"] = [*shipped.get("overrides", []), *overrides]
    shipped["params"] = {**shipped.get("params", {}), **params}
    try:
        return rules.parse_rulebook(shipped, source=f"{path} (on top of include/spec/rules.json)")
    except rules.RulesError as exc:
        raise SiteError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# the store's and S3's connections


def _store_url(conn: ConnectionLike, env_url: str) -> str:
    """The store's SQLAlchemy URL from its connection: ``extra.sqlalchemy_url`` as given, else a
    postgres connection's host, port, login, password and schema (the database) over the
    environment's URL (psycopg 3: the load's COPY needs it)."""
    extra = conn.extra_dejson or {}
    where = f"Airflow connection {conn.conn_id!r}"
    if extra.get("sqlalchemy_url"):
        try:
            return make_url(extra["sqlalchemy_url"]).render_as_string(hide_password=False)
        except ArgumentError:
            raise SiteError(f"{where}: extra.sqlalchemy_url is not a SQLAlchemy URL") from None
    if (conn.conn_type or "").lower() not in _STORE_TYPES:
        raise SiteError(
            f"{where}: the store's connection must be of type postgres (or give extra.sqlalchemy_url), "
            f"got {conn.conn_type!r}"
        )
    given = {"host": conn.host, "port": conn.port, "username": conn.login, "password": conn.password,
             "database": conn.schema}  # fmt: skip
    url = make_url(env_url).set(drivername="postgresql+psycopg", **{k: v for k, v in given.items() if v})
    return url.render_as_string(hide_password=False)


def _s3_values(conn: ConnectionLike, env: Settings) -> dict[str, Any]:
    """S3's endpoint, keys and region from its connection (the amazon provider's ``aws`` form:
    login = access key, password = secret key, ``extra.endpoint_url`` ``http(s)://host:port``,
    ``extra.region_name``; or host and port), each empty value the environment's."""
    extra = conn.extra_dejson or {}
    out: dict[str, Any] = {}
    endpoint = extra.get("endpoint_url") or (conn.host or "")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        if not parts.hostname or parts.path.strip("/"):
            raise SiteError(
                f"Airflow connection {conn.conn_id!r}: the S3 endpoint must be http(s)://host[:port] "
                f"(extra.endpoint_url, or host and port), got {endpoint!r}"
            )
        port = parts.port or conn.port
        out["s3_endpoint"] = f"{parts.hostname}:{port}" if port else parts.hostname
        if parts.scheme:
            out["s3_secure"] = parts.scheme == "https"
    if conn.login:
        out["s3_access_key"] = conn.login
    if conn.password:
        out["s3_secret_key"] = conn.password
    if extra.get("region_name"):
        out["s3_region"] = extra["region_name"]
    return out


# --------------------------------------------------------------------------------------------
# helpers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SiteError(f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _cron(env: Mapping[str, str]) -> str:
    cron = (env.get("HURREN_DAILY_COUNTS_CRON") or "").strip() or DEFAULT_DAILY_COUNTS_CRON
    if len(parts := cron.split()) != 5 or not all(_CRON_FIELD.match(p) for p in parts):
        raise SiteError(f"HURREN_DAILY_COUNTS_CRON must be a 5-field cron expression, got {cron!r}")
    return cron


def _timezone(env: Mapping[str, str]) -> str:
    tz = (env.get("HURREN_DAILY_COUNTS_TIMEZONE") or "").strip() or DEFAULT_DAILY_COUNTS_TIMEZONE
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SiteError(
            f"HURREN_DAILY_COUNTS_TIMEZONE {tz!r} is not an IANA zone name such as 'Asia/Shanghai'"
        ) from None
    return tz
