"""The region platform's endpoint, key and credential: from the Airflow connection, else the environment.

The Airflow connection ``hurren_platform`` (UI, CLI, ``AIRFLOW_CONN_HURREN_PLATFORM`` or a secrets
backend)::

    host      the SOAP endpoint URL, http(s)://…/Myhealth (or host + port + schema as the path)
    login     visitor code (用户名)
    password  visitor key (密码)
    extra     {"org_code": "…", "org_name": "…",                credential (医疗机构编码/名称)
               "public_key": "04…" | "simulator",                the platform's SM2 public key
               "timeout": 30, "deadline_s": 300, "wsdl": "shipped" | "live" | path,
               "sm2_mode": "C1C3C2", "sm2_04": true, "key_form": "raw", "text_encoding": "utf-8",
               "key_max_uses": 1000, "key_max_age_s": 600,        the session key window
               "spec_options": {…}}                              optional: must equal the site's
                                                                 profile (below)

A value missing from the connection falls back to ``HURREN_PLATFORM_*`` (``hurren.settings``);
without the connection everything comes from there. The profile (``SpecOptions``: D2, D13, D20,
D21 …) is the site's (``hurren.site``: ``spec-options.json``), passed in by the caller, so the
store, the validation and the pushed XML follow one profile; a connection whose
``extra.spec_options`` says otherwise is refused, naming both, rather than pushing under another. ``public_key`` ``simulator`` asks our
simulator for its key (``/_admin/public-key``): for the demo and tests only.

The session key (SM4) and its SM2-wrapped ``strKey`` are reused for ``key_max_uses`` calls or
``key_max_age_s`` seconds, whichever comes first, then rotated (``hurren.crypto.KeyRing`` inside
the client). Nothing here logs a secret; ``repr`` shows the endpoint and org code only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from hurren import crypto, spec
from hurren.platform import ConfigurationError, Credential, PlatformClient
from hurren.platform.client import mount_adapter
from hurren.push.exceptions import PushConfigError
from hurren.settings import DEFAULT_DEADLINE_S, PlatformSettings, SettingsError

__all__ = ["CONN_ID", "PlatformConfig", "TimedSession", "platform_config"]

CONN_ID = "hurren_platform"


class TimedSession(requests.Session):
    """A ``requests`` session that adds the time spent in HTTP (sending, the platform's work,
    receiving) to a per-thread counter: the "waiting" share of the push's timings."""

    def __init__(self, pool_size: int) -> None:
        super().__init__()
        self.trust_env = False  # no proxy or .netrc from the environment by surprise
        mount_adapter(self, pool_size)  # the client's pools: its deadline watchdog sees them
        self._local = threading.local()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        started = time.perf_counter()
        try:
            return super().send(request, **kwargs)
        finally:
            self._local.waited = getattr(self._local, "waited", 0.0) + time.perf_counter() - started

    def take_waited(self) -> float:
        """Seconds this thread spent in HTTP since the last call."""
        waited = getattr(self._local, "waited", 0.0)
        self._local.waited = 0.0
        return waited


@dataclass(frozen=True, kw_only=True, repr=False)
class PlatformConfig:
    endpoint: str
    public_key: str = field(repr=False)
    credential: Credential = field(repr=False)
    wsdl: str | None = None  # None: the shipped WSDL
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    crypto_options: crypto.CryptoOptions = field(default_factory=crypto.CryptoOptions)
    key_max_uses: int | None = 1000
    key_max_age_s: float | None = 600.0
    deadline_s: float = DEFAULT_DEADLINE_S
    spec_options: spec.SpecOptions
    """The site's profile: what the push puts on the wire and how it updates (D20, D21 …)."""

    def __repr__(self) -> str:
        return f"PlatformConfig(endpoint={self.endpoint!r}, org_code={self.credential.org_code!r})"

    @classmethod
    def from_settings(cls, s: PlatformSettings, *, spec_options: spec.SpecOptions,
                      extra: Mapping[str, Any] | None = None, endpoint: str | None = None,
                      visitor_code: str | None = None, visitor_key: str | None = None) -> PlatformConfig:  # fmt: skip
        """From ``HURREN_PLATFORM_*``, each value overridden by the connection's where given; the
        site's profile ``spec_options``."""
        x = dict(extra or {})

        def pick(name: str, default: Any) -> Any:
            value = x.get(name)
            return default if value is None or value == "" else value

        endpoint = endpoint or s.url
        public_key = pick("public_key", s.public_key)
        missing = [
            f"{name} (connection {where}, or {env})"
            for name, value, where, env in (
                ("public key", public_key, "extra.public_key", "HURREN_PLATFORM_PUBLIC_KEY"),
                ("org code", pick("org_code", s.org_code), "extra.org_code", "HURREN_PLATFORM_ORG_CODE"),
                ("visitor code", visitor_code or s.visitor_code, "login", "HURREN_PLATFORM_VISITOR_CODE"),
                ("visitor key", visitor_key or s.visitor_key, "password", "HURREN_PLATFORM_VISITOR_KEY"),
            )
            if not value
        ]
        if missing:
            raise PushConfigError(
                f"the region platform is not configured: set {', '.join(missing)}; see docs/push.md"
            )
        try:
            credential = Credential(
                org_code=str(pick("org_code", s.org_code)),
                org_name=str(pick("org_name", s.org_name)),
                visitor_code=str(visitor_code or s.visitor_code),
                visitor_key=str(visitor_key or s.visitor_key),
            )
            options = crypto.CryptoOptions(
                mode=pick("sm2_mode", s.sm2_mode),
                with_04_prefix=_flag(pick("sm2_04", s.sm2_04)),
                key_form=pick("key_form", s.key_form),
                text_encoding=pick("text_encoding", s.text_encoding),
            )
            _check_profile(x.get("spec_options"), spec_options)
        except (ConfigurationError, SettingsError, ValueError) as exc:
            raise PushConfigError(f"the region platform's settings are unusable: {exc}") from None
        if str(public_key).strip().lower() == "simulator":
            public_key = simulator_public_key(endpoint)
        wsdl = str(pick("wsdl", s.wsdl))
        return cls(
            endpoint=endpoint,
            public_key=str(public_key),
            credential=credential,
            wsdl=None if wsdl == "shipped" else wsdl,
            timeout_s=float(pick("timeout", s.timeout_s)),
            crypto_options=options,
            key_max_uses=_optional_int(pick("key_max_uses", s.key_max_uses)),
            key_max_age_s=_optional_float(pick("key_max_age_s", s.key_max_age_s)),
            deadline_s=float(pick("deadline_s", s.deadline_s)),
            spec_options=spec_options,
        )

    @classmethod
    def from_connection(
        cls, conn: Any, *, fallback: PlatformSettings, spec_options: spec.SpecOptions
    ) -> PlatformConfig:
        """From an Airflow connection (anything with host/port/schema/login/password/extra_dejson)."""
        extra = dict(conn.extra_dejson or {})
        host = (conn.host or "").strip()
        if host and "://" not in host:
            scheme = extra.pop("scheme", "http")
            port = f":{conn.port}" if conn.port else ""
            path = (conn.schema or "Myhealth").lstrip("/")
            host = f"{scheme}://{host}{port}/{path}"
        return cls.from_settings(
            fallback, spec_options=spec_options, extra=extra, endpoint=host or None, visitor_code=conn.login or None,
            visitor_key=conn.password or None,
        )  # fmt: skip

    def client(self, *, pool_size: int, session: requests.Session | None = None) -> PlatformClient:
        """A client with a keep-alive pool of ``pool_size`` and this platform's profile; the caller
        closes it (and ``session``)."""
        try:
            return PlatformClient(
                endpoint=self.endpoint, credential=self.credential, public_key=self.public_key, wsdl=self.wsdl,
                timeout=self.timeout_s, connect_timeout=min(self.connect_timeout_s, self.timeout_s),
                pool_size=pool_size, crypto_options=self.crypto_options, spec_options=self.spec_options,
                key_max_uses=self.key_max_uses, key_max_age_s=self.key_max_age_s, session=session,
                deadline_s=self.deadline_s,
            )  # fmt: skip
        except ValueError as exc:  # ConfigurationError, CryptoError, KeyRing's window, all ValueErrors
            raise PushConfigError(f"the region platform's settings are unusable: {exc}") from None


def _check_profile(given: Any, site_profile: spec.SpecOptions) -> None:
    """The connection's ``extra.spec_options``, when given, must say what the site's profile says."""
    if given in (None, "", {}):
        return
    from hurren.site import spec_options_from_document

    if isinstance(given, str):
        import json

        given = json.loads(given)
    if spec_options_from_document(given, origin="connection extra.spec_options") != site_profile:
        raise PushConfigError(
            "the platform connection's extra.spec_options differs from the site's profile (hurren.site: "
            "spec-options.json in HURREN_SITE_DIR, or HURREN_PLATFORM_SPEC_OPTIONS); the store and the validation "
            "follow the site's, so set the profile there and remove it from the connection"
        )


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("0", "false", "no", "off")


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "", 0, "0") else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value in (None, "", 0, "0") else float(value)


def simulator_public_key(endpoint: str, *, timeout_s: float = 10.0) -> str:
    """Our simulator's SM2 public key, from its admin endpoint (demo and tests only)."""
    import httpx

    scheme, rest = endpoint.split("://", 1)
    base = f"{scheme}://{rest.split('/', 1)[0]}"
    try:
        return str(
            httpx.get(f"{base}/_admin/public-key", timeout=timeout_s).raise_for_status().json()["public_key"]
        )
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise PushConfigError(
            f"public key 'simulator': cannot read {base}/_admin/public-key ({type(exc).__name__}); is the "
            "simulator running (scripts/services up sim)? Otherwise set the platform's real public key"
        ) from None


def platform_config(
    conn_id: str = CONN_ID, *, spec_options: spec.SpecOptions, settings_: PlatformSettings | None = None
) -> PlatformConfig:
    """At task time: the Airflow connection ``conn_id`` if it exists, else the environment; the site's
    profile ``spec_options``."""
    from hurren.settings import settings
    from hurren.site import airflow_connection

    fallback = settings_ or settings().platform
    assert fallback is not None  # Settings.from_env always sets it
    conn = airflow_connection(conn_id)  # None: no such connection, or no Airflow (a bare machine's CLI)
    if conn is None:
        return PlatformConfig.from_settings(fallback, spec_options=spec_options)
    return PlatformConfig.from_connection(conn, fallback=fallback, spec_options=spec_options)
