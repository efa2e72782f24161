"""Connection settings: the one place they come from.

Each setting is read from an environment variable, with a default that points at the local
loopback services started by ``scripts/services`` (those defaults are dev/test values, not
secrets; production passes its own through the environment or Airflow connections).

=========================  =====================================================================
variable                   default
=========================  =====================================================================
HURREN_STORE_URL           built from the five below:
                           ``postgresql+psycopg://hurren:hurren@127.0.0.1:55432/hurren_store``
HURREN_PG_HOST             ``127.0.0.1``
HURREN_PG_PORT             ``55432``
HURREN_PG_USER             ``hurren``
HURREN_PG_PASSWORD         ``hurren``
HURREN_STORE_DB            ``hurren_store``
HURREN_S3_ENDPOINT         ``127.0.0.1:$HURREN_S3_PORT`` (port default ``58333``)
HURREN_S3_ACCESS_KEY       ``hurren``
HURREN_S3_SECRET_KEY       ``hurren-secret-local``
HURREN_S3_SECURE           ``false`` (``1/true/yes/on`` for TLS)
HURREN_S3_REGION           ``us-east-1`` (saves the client a bucket-location round trip)
HURREN_S3_BUCKET_REPORTS   ``hurren-reports``
HURREN_S3_BUCKET_DOCS      ``hurren-docs``
HURREN_SIMULATOR_URL       ``http://127.0.0.1:$HURREN_SIM_PORT/Myhealth`` (port default ``58080``)
=========================  =====================================================================

The region platform (the push; the same names ``python -m hurren.platform`` reads). The push DAG
prefers the Airflow connection ``hurren_platform`` and falls back to these (docs/push.md):

==================================  ==============================================================
variable                            default
==================================  ==============================================================
HURREN_PLATFORM_URL                 ``$HURREN_SIMULATOR_URL``: the SOAP endpoint
HURREN_PLATFORM_PUBLIC_KEY          none (required): the platform's SM2 public key (hex, Base64
                                    SPKI or PEM); ``simulator`` asks the simulator's /_admin
HURREN_PLATFORM_ORG_CODE            none (required): credential 医疗机构编码
HURREN_PLATFORM_ORG_NAME            empty: credential 医疗机构名称
HURREN_PLATFORM_VISITOR_CODE        none (required): credential 用户名
HURREN_PLATFORM_VISITOR_KEY         none (required): credential 密码 (a secret: env or connection)
HURREN_PLATFORM_WSDL                ``shipped`` (or ``live``, or a path/URL)
HURREN_PLATFORM_TIMEOUT             ``30`` seconds to wait for an answer
HURREN_PLATFORM_SM2_MODE            ``C1C3C2`` (or ``C1C2C3``)
HURREN_PLATFORM_SM2_04              ``true``: SM2 ciphertext with the 04 prefix
HURREN_PLATFORM_KEY_FORM            ``raw`` (or ``hex``)
HURREN_PLATFORM_TEXT_ENCODING       ``utf-8`` (or ``gbk``, ``gb18030``)
HURREN_PLATFORM_KEY_MAX_USES        ``1000`` calls per SM4 session key (and its wrapped strKey)
HURREN_PLATFORM_KEY_MAX_AGE_S       ``600`` seconds before the session key is rotated
HURREN_PLATFORM_MAX_ANSWER_BYTES    ``33554432`` (32 MiB): the largest answer body read; a bigger
                                    one is refused (``AnswerError``) without reading the rest
HURREN_PLATFORM_DEADLINE_S          ``300``: a call (or the live WSDL's download) ends after this
                                    long in total, however slowly the answer drips in
==================================  ==============================================================

The site's profile (``SpecOptions``: what validation, the store and the pushed XML follow) is not a
setting of this module: ``hurren.site`` reads it (``spec-options.json`` in ``$HURREN_SITE_DIR``,
or ``HURREN_PLATFORM_SPEC_OPTIONS``).

The push outbox: ``HURREN_OUTBOX_KEY_SECRET`` keys the hash that stands for a patient's ID
number in the outbox's record keys of accept/quote records (default: a local-only value; a
deployment sets its own, and keeps it: a new one makes the outbox re-queue those records).

``scripts/services`` reads the same HURREN_PG_*, HURREN_S3_* and HURREN_SIM_PORT variables, so a
changed port or credential reaches the services and the code alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "PlatformSettings",
    "Settings",
    "SettingsError",
    "max_answer_bytes_from_env",
    "settings",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DB_NAME = re.compile(r"^[a-z0-9_]{1,50}$")

DEFAULT_DEADLINE_S = 300.0
"""A platform call's total time limit: well inside the push's lease (600 s), so a call that is
still dripping is over before another run may take its entry back."""
LOCAL_OUTBOX_KEY_SECRET = "hurren-outbox-local"  # noqa: S105 - local-only, as HURREN_PG_PASSWORD's default
"""The outbox key hash's secret where none is set (local services, tests, the demo only)."""

DEFAULT_MAX_ANSWER_BYTES = 32 * 1024 * 1024
"""The largest platform answer body read. The biggest legitimate answers are the queries' (one
patient's recent reports with their sub-items, no PDFs): a few MB even for a long inpatient stay."""


class SettingsError(ValueError):
    """A setting from the environment cannot be used; the message names the variable to fix."""


@dataclass(frozen=True, kw_only=True)
class PlatformSettings:
    """The region platform's endpoint, key, credential and envelope options (HURREN_PLATFORM_*).

    Secrets (``visitor_key``) never show in ``repr``; empty strings mean "not set"."""

    url: str
    public_key: str | None = None
    org_code: str | None = None
    org_name: str = ""
    visitor_code: str | None = None
    visitor_key: str | None = field(default=None, repr=False)
    wsdl: str = "shipped"
    timeout_s: float = 30.0
    sm2_mode: str = "C1C3C2"
    sm2_04: bool = True
    key_form: str = "raw"
    text_encoding: str = "utf-8"
    key_max_uses: int | None = 1000
    key_max_age_s: float | None = 600.0
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    deadline_s: float = DEFAULT_DEADLINE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, default_url: str) -> PlatformSettings:
        return cls(
            url=env.get("HURREN_PLATFORM_URL") or default_url,
            public_key=env.get("HURREN_PLATFORM_PUBLIC_KEY") or None,
            org_code=env.get("HURREN_PLATFORM_ORG_CODE") or None,
            org_name=env.get("HURREN_PLATFORM_ORG_NAME", ""),
            visitor_code=env.get("HURREN_PLATFORM_VISITOR_CODE") or None,
            visitor_key=env.get("HURREN_PLATFORM_VISITOR_KEY") or None,
            wsdl=env.get("HURREN_PLATFORM_WSDL") or "shipped",
            timeout_s=_positive(env, "HURREN_PLATFORM_TIMEOUT", 30.0),
            sm2_mode=env.get("HURREN_PLATFORM_SM2_MODE") or "C1C3C2",
            sm2_04=_bool(env, "HURREN_PLATFORM_SM2_04", True),
            key_form=env.get("HURREN_PLATFORM_KEY_FORM") or "raw",
            text_encoding=env.get("HURREN_PLATFORM_TEXT_ENCODING") or "utf-8",
            key_max_uses=int(_positive(env, "HURREN_PLATFORM_KEY_MAX_USES", 1000)),
            key_max_age_s=_positive(env, "HURREN_PLATFORM_KEY_MAX_AGE_S", 600.0),
            max_answer_bytes=max_answer_bytes_from_env(env),
            deadline_s=_positive(env, "HURREN_PLATFORM_DEADLINE_S", DEFAULT_DEADLINE_S),
        )


@dataclass(frozen=True, kw_only=True)
class Settings:
    store_url: str = field(repr=False)
    """SQLAlchemy URL of the municipal store (psycopg 3 driver for PostgreSQL)."""
    s3_endpoint: str
    """``host:port``, no scheme (the minio client's form)."""
    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    s3_secure: bool = False
    s3_region: str | None = "us-east-1"
    s3_bucket_reports: str = "hurren-reports"
    s3_bucket_docs: str = "hurren-docs"
    simulator_url: str
    """The simulator's SOAP endpoint (the demo's and tests' region platform)."""
    platform: PlatformSettings | None = None
    """The region platform for the push (HURREN_PLATFORM_*); None: the simulator's URL, no credential."""
    outbox_key_secret: str = field(default=LOCAL_OUTBOX_KEY_SECRET, repr=False)
    """Keys the hash of patient identifiers in the outbox's record keys (HURREN_OUTBOX_KEY_SECRET)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(name) or default

        store_url = env.get("HURREN_STORE_URL") or URL.create(
            "postgresql+psycopg",
            username=get("HURREN_PG_USER", "hurren"),
            password=get("HURREN_PG_PASSWORD", "hurren"),
            host=get("HURREN_PG_HOST", "127.0.0.1"),
            port=_port(env, "HURREN_PG_PORT", 55432),
            database=get("HURREN_STORE_DB", "hurren_store"),
        ).render_as_string(hide_password=False)
        try:
            make_url(store_url)
        except ArgumentError as exc:
            raise SettingsError(f"HURREN_STORE_URL is not a SQLAlchemy URL: {exc}") from None

        endpoint = get("HURREN_S3_ENDPOINT", f"127.0.0.1:{_port(env, 'HURREN_S3_PORT', 58333)}")
        if "://" in endpoint:
            raise SettingsError(
                f"HURREN_S3_ENDPOINT must be host:port without a scheme (got {endpoint!r}); "
                "set HURREN_S3_SECURE=true for https"
            )
        simulator_url = get(
            "HURREN_SIMULATOR_URL", f"http://127.0.0.1:{_port(env, 'HURREN_SIM_PORT', 58080)}/Myhealth"
        )
        return cls(
            store_url=store_url,
            s3_endpoint=endpoint,
            s3_access_key=get("HURREN_S3_ACCESS_KEY", "hurren"),
            s3_secret_key=get("HURREN_S3_SECRET_KEY", "hurren-secret-local"),
            s3_secure=_bool(env, "HURREN_S3_SECURE", False),
            s3_region=env.get("HURREN_S3_REGION", "us-east-1") or None,
            s3_bucket_reports=get("HURREN_S3_BUCKET_REPORTS", "hurren-reports"),
            s3_bucket_docs=get("HURREN_S3_BUCKET_DOCS", "hurren-docs"),
            simulator_url=simulator_url,
            platform=PlatformSettings.from_env(env, default_url=simulator_url),
            outbox_key_secret=env.get("HURREN_OUTBOX_KEY_SECRET") or LOCAL_OUTBOX_KEY_SECRET,
        )

    def database_url(self, database: str) -> str:
        """The store's URL (same server, user and driver) with another database name."""
        return make_url(self.store_url).set(database=database).render_as_string(hide_password=False)

    def hospital_url(self, name: str) -> str:
        """URL of the synthetic hospital database ``hospital_<name>`` on the store's server."""
        if not _DB_NAME.match(name):
            raise SettingsError(
                f"hospital name {name!r} must be 1-50 characters of a-z, 0-9 and _ "
                "(it becomes the database name hospital_<name>)"
            )
        return self.database_url(f"hospital_{name}")


def max_answer_bytes_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``HURREN_PLATFORM_MAX_ANSWER_BYTES`` (a whole number of bytes >= 1), else the default: what
    ``PlatformClient`` uses when it is not given ``max_answer_bytes``."""
    env = os.environ if environ is None else environ
    raw = (env.get("HURREN_PLATFORM_MAX_ANSWER_BYTES") or "").strip()
    if not raw:
        return DEFAULT_MAX_ANSWER_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(
            f"HURREN_PLATFORM_MAX_ANSWER_BYTES must be a whole number of bytes >= 1, got {raw!r}"
        )
    return int(raw)


@cache
def settings() -> Settings:
    """The process's settings, read from the environment once (``settings.cache_clear()`` rereads)."""
    return Settings.from_env()


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise SettingsError(f"{name} must be a TCP port number (1-65535), got {raw!r}")
    return port


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be one of true/false/1/0/yes/no/on/off, got {raw!r}")


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SettingsError(f"{name} must be a positive number, got {raw!r}")
    return value
