"""The envelope around every call: strCredential, SM4 + Base64 of the payload, strKey via SM2.

Caller's side (:class:`Envelope`): one SM4 session key per bounded window (``crypto.KeyRing``:
wrapped with the platform's SM2 public key once, reused for ``key_max_uses`` calls or
``key_max_age_s`` seconds); the credential is encrypted once per session key. Every sealed call
keeps its ``SessionKey`` so its answer is decrypted with the key it was sent with, even if the ring
rotated meanwhile.

Platform's side (:func:`open_request`, :func:`seal_answer`; used by the simulator and the tests):
unwrap strKey with the platform's private key, decrypt payload and credential.

Crypto failures become :class:`AnswerError` on the caller's side (an answer we cannot decrypt)
and :class:`UnsealError` on the platform's side, whose message names the parameter (strKey,
strCredential, strReportInfo/strFilter) and what to check. Neither ever carries key material.
"""

from __future__ import annotations

import binascii
import hmac
import threading
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from hurren import crypto
from hurren.platform.exceptions import AnswerError, ConfigurationError
from hurren.platform.xml import check_text, declaration, parse_xml

__all__ = [
    "Credential",
    "Envelope",
    "Opened",
    "Sealed",
    "UnsealError",
    "open_request",
    "seal_answer",
]


def b64decode(text: str, *, what: str) -> bytes:
    """Strict Base64; the common case (no line breaks) without ``crypto.b64decode``'s regex pass
    over ~230 KB, anything else through it for its precise error messages."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return crypto.b64decode(text, what=what)


@dataclass(frozen=True, kw_only=True, repr=False)
class Credential:
    """Who calls: ``<root><org code="...">name</org><visitor type="0" code="..." key="..."></visitor></root>``.

    Comes from the caller (an Airflow connection), never from the repository. ``repr`` hides the
    visitor code and key.
    """

    org_code: str
    org_name: str
    visitor_code: str
    visitor_key: str = field(repr=False)
    visitor_type: str = "0"

    def __post_init__(self) -> None:
        for name in ("org_code", "org_name", "visitor_code", "visitor_key", "visitor_type"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigurationError(f"Credential.{name} must be text, got {type(value).__name__}")
            if name != "org_name" and not value.strip():
                raise ConfigurationError(
                    f"Credential.{name} is empty; set it from the platform connection (org code, visitor code and key)"
                )
            try:
                check_text(value, entity="credential", field=name)
            except ValueError:
                raise ConfigurationError(f"Credential.{name} contains characters XML cannot carry") from None

    def to_xml(self, *, encoding: str = "UTF-8", with_declaration: bool) -> bytes:
        """strCredential in ``encoding``, with or without the XML declaration (D21)."""
        root = etree.Element("root")
        org = etree.SubElement(root, "org", code=self.org_code)
        org.text = self.org_name
        visitor = etree.SubElement(
            root, "visitor", {"type": self.visitor_type, "code": self.visitor_code, "key": self.visitor_key}
        )
        visitor.text = ""  # <visitor ...></visitor>, as the spec writes it
        head = declaration(encoding, with_declaration=with_declaration)
        return head + etree.tostring(root, encoding=encoding, xml_declaration=False)

    @classmethod
    def from_xml(cls, data: bytes | str, *, encoding: str = "utf-8") -> Credential:
        """Read a strCredential (platform side); raises UnsealError naming what is missing."""
        try:
            root = parse_xml(data, what="strCredential", encoding=encoding)
        except AnswerError as exc:
            raise UnsealError("strCredential", str(exc)) from None
        org = root.find("org")
        visitor = root.find("visitor")
        if org is None or visitor is None:
            raise UnsealError(
                "strCredential", "expected <root><org code=...>name</org><visitor type code key/></root>"
            )
        try:
            return cls(
                org_code=org.get("code", ""),
                org_name=(org.text or "").strip(),
                visitor_code=visitor.get("code", ""),
                visitor_key=visitor.get("key", ""),
                visitor_type=visitor.get("type", "0") or "0",
            )
        except ConfigurationError as exc:
            raise UnsealError("strCredential", str(exc).replace("Credential.", "")) from None

    def matches(self, other: Credential) -> bool:
        """Same org, visitor code and key (constant time on the secrets)."""
        return (
            self.org_code == other.org_code
            and hmac.compare_digest(self.visitor_code.encode(), other.visitor_code.encode())
            and hmac.compare_digest(self.visitor_key.encode(), other.visitor_key.encode())
        )

    def __repr__(self) -> str:
        return f"Credential(org_code={self.org_code!r}, org_name={self.org_name!r}, visitor_code=<hidden>, visitor_key=<hidden>)"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a Credential holds a password and must not be pickled or sent to XCom")


@dataclass(frozen=True, kw_only=True, repr=False)
class Sealed:
    """The three encrypted strings of one call, and the session key to decrypt its answer with."""

    payload: str
    credential: str
    key: str
    session: crypto.SessionKey

    def params(self, payload_param: str) -> dict[str, str]:
        return {payload_param: self.payload, "strCredential": self.credential, "strKey": self.key}

    def __repr__(self) -> str:
        return f"Sealed(payload=<{len(self.payload)} chars>, session={self.session!r})"


class Envelope:
    """Seals payloads for one platform and one credential; opens that platform's answers. Thread-safe."""

    def __init__(
        self,
        *,
        credential: Credential,
        public_key: str | bytes,
        crypto_options: crypto.CryptoOptions | None = None,
        key_max_uses: int | None = 1000,
        key_max_age_s: float | None = 600.0,
        xml_declaration: bool,
    ) -> None:
        """``xml_declaration``: the credential's XML declaration, as the payloads' (D21)."""
        if not isinstance(credential, Credential):
            raise ConfigurationError(f"credential must be a Credential, got {type(credential).__name__}")
        self._options = crypto_options or crypto.CryptoOptions()
        try:
            self._ring = crypto.KeyRing(
                public_key=public_key,
                options=self._options,
                max_uses=key_max_uses,
                max_age_seconds=key_max_age_s,
            )
        except (crypto.CryptoError, TypeError) as exc:
            raise ConfigurationError(f"the platform's SM2 public key is unusable: {exc}") from None
        except ValueError as exc:  # KeyRing's own bounds
            raise ConfigurationError(str(exc)) from None
        self._credential_xml = credential.to_xml(
            encoding=self._options.text_encoding, with_declaration=xml_declaration
        )
        self._org_code = credential.org_code
        self._lock = threading.Lock()
        self._cached: tuple[str, str] | None = None  # (key_id, Base64 of the encrypted credential)

    @property
    def options(self) -> crypto.CryptoOptions:
        return self._options

    @property
    def org_code(self) -> str:
        return self._org_code

    def _credential_for(self, session: crypto.SessionKey) -> str:
        with self._lock:
            if self._cached is not None and self._cached[0] == session.key_id:
                return self._cached[1]
        text = crypto.b64encode(session.encrypt(self._credential_xml))
        with self._lock:
            self._cached = (session.key_id, text)
        return text

    def seal(self, payload: bytes) -> Sealed:
        """Encrypt a payload (bytes of XML in the platform's text encoding) for one call."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"seal takes the payload as bytes, got {type(payload).__name__}")
        session = self._ring.current()
        return Sealed(
            payload=crypto.b64encode(session.encrypt(bytes(payload))),
            credential=self._credential_for(session),
            key=session.str_key,
            session=session,
        )

    def rotate(self) -> None:
        """Use a fresh session key from the next call on (e.g. after the platform refused strKey)."""
        self._ring.rotate()

    def open_answer(self, answer: str, session: crypto.SessionKey, *, method: str) -> bytes:
        """Decrypt an encrypted query answer with the key of the call it answers."""
        try:
            data = b64decode(answer, what=f"the {method} answer")
        except crypto.CryptoError as exc:
            raise AnswerError(
                f"{method} answered neither ok/error nor Base64: {exc}", method=method
            ) from None
        try:
            return session.decrypt(data)
        except crypto.CryptoError as exc:
            raise AnswerError(
                f"cannot decrypt the {method} answer with this call's SM4 key: {exc}", method=method
            ) from None


# --------------------------------------------------------------------------------------------
# Platform side
# --------------------------------------------------------------------------------------------


class UnsealError(ValueError):
    """A request cannot be opened; ``part`` names the parameter (strKey, strCredential, the payload)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}")
        self.part = part


@dataclass(frozen=True, kw_only=True, repr=False)
class Opened:
    payload: bytes
    credential: Credential
    key: bytes
    credential_xml: bytes = field(default=b"")  # strCredential decrypted, as sent (its declaration, D21)

    def __repr__(self) -> str:
        return f"Opened(payload=<{len(self.payload)} bytes>, credential={self.credential!r}, key=<hidden>)"


def unwrap(str_key: str, private_key: str, *, options: crypto.CryptoOptions | None = None) -> bytes:
    """strKey → the caller's SM4 key, or UnsealError saying what to check."""
    try:
        return crypto.unwrap_key(str_key, private_key, options=options)
    except crypto.CryptoError as exc:
        raise UnsealError("strKey", str(exc)) from None


def open_request(
    *,
    payload: str,
    credential: str,
    key: bytes,
    payload_param: str = "strReportInfo",
    options: crypto.CryptoOptions | None = None,
) -> Opened:
    """Decrypt payload and credential with the unwrapped SM4 ``key`` (see :func:`unwrap`)."""
    options = options or crypto.CryptoOptions()
    parts: dict[str, bytes] = {}
    for part, text in ((payload_param, payload), ("strCredential", credential)):
        try:
            parts[part] = crypto.sm4_decrypt(b64decode(text or "", what=part), key)
        except crypto.CryptoError as exc:
            raise UnsealError(part, str(exc)) from None
    return Opened(
        payload=parts[payload_param],
        credential=Credential.from_xml(parts["strCredential"], encoding=options.text_encoding),
        key=key,
        credential_xml=parts["strCredential"],
    )


def seal_answer(xml: bytes, key: bytes) -> str:
    """A query answer as the platform sends it: Base64 of SM4 with the caller's key."""
    return crypto.b64encode(crypto.sm4_encrypt(xml, key))
