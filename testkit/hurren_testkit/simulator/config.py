"""The simulator's settings: command-line flags, each with an environment variable (for compose).

=============================  ===========================  ========================================
flag                           environment variable         default
=============================  ===========================  ========================================
--host                         HURREN_SIM_HOST              127.0.0.1
--port                         HURREN_SIM_PORT              58080
--path                         HURREN_SIM_PATH              /Myhealth
--key-file                     HURREN_SIM_KEY_FILE          none: a key pair generated at start
                                                            (a missing file is created, mode 0600)
(none: env only)               HURREN_SIM_PRIVATE_KEY       64 hex; wins over --key-file
--db                           HURREN_SIM_DB                :memory: (or a SQLite file path)
--visitor ORG:CODE:KEY[:NAME]  HURREN_SIM_VISITORS          none: any well-formed credential passes
  (repeatable)                 (comma-separated)
--recent-days                  HURREN_SIM_RECENT_DAYS       90
--recognition-days             HURREN_SIM_RECOGNITION_DAYS  30 (expired_time = report time + days)
--area-code                    HURREN_SIM_AREA_CODE         650000
--public-url                   HURREN_SIM_PUBLIC_URL        http://<host>:<port> (for url/pdf_url)
--sm2-mode                     HURREN_SIM_SM2_MODE          C1C3C2 (or C1C2C3)
--sm2-no-04                    HURREN_SIM_SM2_04=false      the 04 prefix expected
--key-form                     HURREN_SIM_KEY_FORM          raw (or hex)
--text-encoding                HURREN_SIM_TEXT_ENCODING     utf-8 (or gbk, gb18030)
--spec-options JSON            HURREN_SIM_SPEC_OPTIONS      {} (a SpecOptions profile)
--faults JSON                  HURREN_SIM_FAULTS            {} (see hurren_testkit.simulator.faults)
--lenient                      HURREN_SIM_LENIENT=true      unknown attributes are errors
--check-rate R                 HURREN_SIM_CHECK_RATE        1 (every submission checked field by
                                                            field; 0.01: one in a hundred; 0: none)
--admin-token                  HURREN_SIM_ADMIN_TOKEN       none: /_admin open (bind to loopback!)
--log-level                    HURREN_SIM_LOG_LEVEL         INFO
=============================  ===========================  ========================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hurren import crypto, spec
from hurren_testkit.simulator.faults import Faults

__all__ = ["ConfigError", "SimulatorConfig", "Visitor", "load_private_key"]


class ConfigError(ValueError):
    """A simulator setting is unusable; the message names the flag or variable."""


@dataclass(frozen=True, kw_only=True, repr=False)
class Visitor:
    org_code: str
    code: str
    key: str
    org_name: str = ""

    @classmethod
    def parse(cls, text: str) -> Visitor:
        parts = text.split(":", 3)
        if len(parts) < 3 or not all(p.strip() for p in parts[:3]):
            raise ConfigError(
                "a visitor is ORG_CODE:VISITOR_CODE:KEY[:ORG_NAME] (--visitor / HURREN_SIM_VISITORS)"
            )
        return cls(
            org_code=parts[0].strip(),
            code=parts[1].strip(),
            key=parts[2],
            org_name=parts[3] if len(parts) > 3 else "",
        )

    def __repr__(self) -> str:
        return f"Visitor(org_code={self.org_code!r}, code=<hidden>, key=<hidden>)"


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 58080
    path: str = "/Myhealth"
    private_key: str = field(repr=False)
    db: str = ":memory:"
    visitors: tuple[Visitor, ...] = ()
    recent_days: int = 90
    recognition_days: int = 30
    area_code: str = "650000"
    public_url: str | None = None
    crypto_options: crypto.CryptoOptions = field(default_factory=crypto.CryptoOptions)
    spec_options: spec.SpecOptions = spec.DEFAULT_OPTIONS  # the spec's defaults unless given a profile
    faults: Faults = field(default_factory=Faults)
    strict_attributes: bool = True
    check_rate: float = 1.0  # fast-ack: the share of submissions checked field by field (see service)
    admin_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigError(f"--path must start with '/', got {self.path!r}")
        if self.recent_days < 1 or self.recognition_days < 0:
            raise ConfigError("--recent-days must be >= 1 and --recognition-days >= 0")
        if not 0.0 <= self.check_rate <= 1.0:
            raise ConfigError(f"--check-rate must be between 0 and 1, got {self.check_rate}")
        try:
            crypto.public_key_from_private(self.private_key)
        except crypto.CryptoError as exc:
            raise ConfigError(f"the simulator's SM2 private key is unusable: {exc}") from None

    @property
    def public_key(self) -> str:
        return crypto.public_key_from_private(self.private_key)

    def base_url(self, host_header: str | None = None) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{host_header or f'{self.host}:{self.port}'}"


def load_private_key(*, key_file: str | Path | None, private_key: str | None = None) -> str:
    """The private key: given as hex; read from ``key_file``; or generated (and written when a file is named).

    A key file is JSON ``{"private_key": "<64 hex>", "public_key": "<130 hex>"}`` or plain hex.
    """
    if private_key:
        return private_key.strip()
    if key_file is None:
        return crypto.generate_keypair()[0]
    path = Path(key_file)
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        if text.startswith("{"):
            try:
                value = json.loads(text).get("private_key", "")
            except (json.JSONDecodeError, AttributeError):
                raise ConfigError(
                    f"{path} is not a key file (JSON with private_key, or 64 hex characters)"
                ) from None
        else:
            value = text.splitlines()[0].strip() if text else ""
        if not value:
            raise ConfigError(f"{path} holds no private key; delete it to have a new pair generated")
        return value
    private, public = crypto.generate_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"private_key": private, "public_key": public}, fh)
        fh.write("\n")
    return private


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def json_object(text: str | None, *, name: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object")
    return value
