"""SM4 / SM2 / SM3 for the region platform's envelope (spec §1.2: strReportInfo, strCredential, strKey).

Every call sends the payload and the credential SM4-ECB encrypted (PKCS#7 padding), and ``strKey``:
the 16-byte SM4 key encrypted with the platform's SM2 public key (GB/T 32918.4), then Base64.

Choices, and why:

- SM4 goes through ``cryptography`` (OpenSSL): about 130 MB/s on this kind of machine, against
  0.3 MB/s for gmssl's pure-Python SM4, which the tests use only as an independent cross-check.
- SM3 (KDF and C3) also goes through ``cryptography`` (``hashes.SM3``, OpenSSL).
- SM2 is our own, on a small curve implementation below, instead of wrapping ``gmssl.sm2``.
  Closing gmssl's pitfalls would have meant re-implementing most of ``CryptSM2`` anyway: its ``k``
  comes from ``random`` (not a CSPRNG) inside ``encrypt``, with no way to inject a better one; its
  ``public_key.lstrip("04")`` eats any leading ``0``/``4`` digits of x; ``decrypt`` never checks C3,
  so a wrong key or layout returns garbage; it validates no point (C1 or the public key) on the
  curve; it has no key generation; and its hex-string arithmetic costs 10-16 ms per operation.
  ``cryptography`` does not expose the SM2 curve, so OpenSSL's SM2 is out of reach. Ours is about
  a hundred lines (Jacobian coordinates, a 4-bit window for unknown points, a precomputed
  fixed-base table for G and for the platform's public key). A wrap takes ~0.5 ms against gmssl's
  ~10 ms, an unwrap ~1.2 ms against 5.5 ms (``bench/bench_crypto.py``). It is cross-checked
  against gmssl in both directions and against the published examples of GB/T 32918.4 (test
  curve) and GM/T 0003.5 / GB/T 32918.5 (sm2p256v1).
  Pure Python is not constant time: acceptable for wrapping a fresh session key on our own
  front-end machine (a leaked ``k`` would expose only that one wrapped key, never a private key);
  the decrypting side is the platform, or our simulator in tests and the demo.
- SM4-ECB has no integrity check: a wrong SM4 key shows as a ``PaddingError`` about 255 times in
  256 and as garbage otherwise; SM2 does check (C3), so a wrong SM2 key is always caught.

Platforms differ in the SM2 ciphertext layout, the ``04`` prefix, whether the wrapped key is the
16 raw bytes or their 32-character hex text, and the payload text encoding: ``CryptoOptions``.

Exceptions (all ``ValueError``, so a caller may catch ``CryptoError`` once at the envelope):

    CryptoError                 base class
    ├── KeyFormatError          a key is unusable: not hex, out of range, not a point on the curve
    │   └── KeyLengthError      a key has the wrong length
    ├── Base64FormatError       strKey / payload text is not valid Base64
    ├── CiphertextLayoutError   SM2 ciphertext too short, bad 04 prefix, C1 not on the curve, other layout
    ├── WrongKeyError           SM2 C3 mismatch: wrong private key, or the ciphertext was altered
    ├── TruncatedCiphertextError  SM4 ciphertext empty or not a multiple of 16 bytes
    ├── PaddingError            SM4 PKCS#7 padding invalid: wrong SM4 key, or corrupted ciphertext
    └── TextEncodingError       payload text does not encode/decode with the configured encoding
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "Base64FormatError",
    "CiphertextLayoutError",
    "CryptoError",
    "CryptoOptions",
    "KeyFormatError",
    "KeyLengthError",
    "KeyRing",
    "PaddingError",
    "SessionKey",
    "TextEncodingError",
    "TruncatedCiphertextError",
    "WrongKeyError",
    "b64decode",
    "b64encode",
    "generate_keypair",
    "public_key_from_private",
    "sm2_decrypt",
    "sm2_encrypt",
    "sm4_decrypt",
    "sm4_decrypt_text",
    "sm4_encrypt",
    "sm4_encrypt_text",
    "unwrap_key",
    "validate_public_key",
    "wrap_key",
]


# --------------------------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------------------------


class CryptoError(ValueError):
    """Base class: input that cannot be encrypted or decrypted as configured."""


class KeyFormatError(CryptoError):
    """A key is unusable: not hex, out of range, or not a point on the curve."""


class KeyLengthError(KeyFormatError):
    """A key has the wrong length."""


class Base64FormatError(CryptoError):
    """Text that should be Base64 is not."""


class CiphertextLayoutError(CryptoError):
    """SM2 ciphertext does not have the configured layout (length, 04 prefix, C1, order)."""


class WrongKeyError(CryptoError):
    """SM2 C3 does not match: the private key is not the one the data was encrypted for."""


class TruncatedCiphertextError(CryptoError):
    """SM4 ciphertext is empty or not a whole number of 16-byte blocks."""


class PaddingError(CryptoError):
    """SM4 PKCS#7 padding is invalid after decryption."""


class TextEncodingError(CryptoError):
    """Payload text cannot be encoded to, or decoded from, the configured encoding."""


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

SM2Mode = Literal["C1C3C2", "C1C2C3"]
KeyForm = Literal["raw", "hex"]
TextEncoding = Literal["utf-8", "gbk", "gb18030"]


@dataclass(frozen=True, kw_only=True)
class CryptoOptions:
    """How one platform lays out SM2 ciphertext, represents the wrapped key and encodes text.

    ``mode``: order of the SM2 parts; C1C3C2 is GB/T 32918.4-2016's, C1C2C3 the 2010 draft's.
    ``with_04_prefix``: C1 starts with the uncompressed-point byte 0x04 (65 bytes) or not (64).
    ``key_form``: the SM2 plaintext is the 16 raw key bytes (``raw``) or their 32-character hex
    text in ASCII (``hex``; written lowercase, read in either case).
    ``text_encoding``: payload text encoding; gb18030 is the superset of gbk that also holds
    Uyghur script.
    """

    mode: SM2Mode = "C1C3C2"
    with_04_prefix: bool = True
    key_form: KeyForm = "raw"
    text_encoding: TextEncoding = "utf-8"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("mode", get_args(SM2Mode)),
            ("key_form", get_args(KeyForm)),
            ("text_encoding", get_args(TextEncoding)),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"CryptoOptions.{name}={value!r} is not supported; use one of {allowed}")
        if not isinstance(self.with_04_prefix, bool):
            raise ValueError(
                f"CryptoOptions.with_04_prefix must be True or False, got {self.with_04_prefix!r}"
            )

    def describe_layout(self) -> str:
        """The SM2 layout in words, for error messages."""
        return f"{self.mode} {'with' if self.with_04_prefix else 'without'} the 04 prefix"


DEFAULT_OPTIONS = CryptoOptions()


# --------------------------------------------------------------------------------------------
# Base64
# --------------------------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Standard Base64 (RFC 4648, with padding, no line breaks) as text."""
    return base64.b64encode(data).decode("ascii")


_LINE_BREAKS = re.compile(rb"[\r\n]+")


def b64decode(text: str | bytes, *, what: str = "Base64 text") -> bytes:
    """Strict Base64 decoding; only MIME line breaks are tolerated.

    Spaces are refused rather than skipped: a space usually is a ``+`` lost to URL decoding, and
    skipping it would shift every following byte.
    """
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError as exc:
            raise Base64FormatError(
                f"{what} contains non-ASCII characters at position {exc.start}: it is not Base64; "
                "check that the right field was passed and that it was not decoded twice"
            ) from exc
    else:
        raw = bytes(text)
    raw = _LINE_BREAKS.sub(b"", raw)
    if b" " in raw:
        raise Base64FormatError(
            f"{what} contains spaces: a '+' was probably turned into ' ' by URL decoding on the way"
        )
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        hint = (
            " ('-' or '_' found: URL-safe Base64 is not what the spec uses)"
            if re.search(rb"[-_]", raw)
            else ""
        )
        raise Base64FormatError(
            f"{what} is not valid Base64 ({exc}; {len(raw)} characters){hint}: check that it was not "
            "cut short, wrapped or altered in transit"
        ) from exc


# --------------------------------------------------------------------------------------------
# SM3 (through OpenSSL)
# --------------------------------------------------------------------------------------------


def _sm3(*parts: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    for part in parts:
        digest.update(part)
    return digest.finalize()


def _kdf(z: bytes, length: int) -> bytes:
    """GB/T 32918.4 §5.4.3: SM3(Z || ct) for ct = 1, 2, ... (32-bit big endian), cut to length."""
    blocks = [_sm3(z, counter.to_bytes(4, "big")) for counter in range(1, -(-length // 32) + 1)]
    return b"".join(blocks)[:length]


# --------------------------------------------------------------------------------------------
# SM4-ECB with PKCS#7 (through OpenSSL)
# --------------------------------------------------------------------------------------------

SM4_KEY_SIZE = 16
_BLOCK = 16


def _check_sm4_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"the SM4 key must be bytes, got {type(key).__name__}")
    if len(key) != SM4_KEY_SIZE:
        hint = (
            " (32 bytes: is it the hex text of a key? decode it with bytes.fromhex)" if len(key) == 32 else ""
        )
        raise KeyLengthError(f"the SM4 key is {len(key)} bytes; it must be exactly 16 bytes (128 bits){hint}")
    return bytes(key)


def _sm4_cipher(key: bytes) -> Cipher:
    """SM4-ECB without padding; the tests reuse it for the GB/T 32907 vectors."""
    return Cipher(algorithms.SM4(_check_sm4_key(key)), modes.ECB())  # noqa: S305 - ECB is what the spec prescribes


def _check_bytes(data: object, function: str) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{function} takes bytes, got {type(data).__name__}")


def sm4_encrypt(plaintext: bytes, key: bytes) -> bytes:
    """SM4-ECB with PKCS#7 padding (always 1-16 bytes of it, as the spec's Java peers expect)."""
    _check_bytes(plaintext, "sm4_encrypt")
    encryptor = _sm4_cipher(key).encryptor()
    pad = _BLOCK - len(plaintext) % _BLOCK
    return encryptor.update(plaintext) + encryptor.update(bytes((pad,)) * pad) + encryptor.finalize()


def sm4_decrypt(ciphertext: bytes, key: bytes) -> bytes:
    """Inverse of ``sm4_encrypt``; checks the block count and the padding."""
    _check_bytes(ciphertext, "sm4_decrypt")
    size = len(ciphertext)
    if size == 0 or size % _BLOCK:
        raise TruncatedCiphertextError(
            f"SM4 ciphertext is {size} bytes, not a positive multiple of the 16-byte block: it was "
            "truncated or altered in transit, or it is not SM4 output (check the field and the Base64)"
        )
    decryptor = _sm4_cipher(key).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= _BLOCK or not hmac.compare_digest(padded[-pad:], bytes((pad,)) * pad):
        raise PaddingError(
            "SM4 PKCS#7 padding is invalid after decryption: most likely the SM4 key is not the one "
            "this data was encrypted with (check that strKey belongs to this payload), or the "
            "ciphertext was corrupted; a peer using zero padding or no padding also ends here"
        )
    return padded[:-pad]


def sm4_encrypt_text(text: str, key: bytes, *, encoding: TextEncoding = "utf-8") -> bytes:
    """Encode ``text`` (utf-8, gbk or gb18030) and SM4-encrypt it."""
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise TextEncodingError(
            f"character {text[exc.start]!r} at position {exc.start} cannot be encoded as {encoding}; "
            "check CryptoOptions.text_encoding (gb18030 holds every Unicode character, gbk does not)"
        ) from exc
    return sm4_encrypt(data, key)


def sm4_decrypt_text(ciphertext: bytes, key: bytes, *, encoding: TextEncoding = "utf-8") -> str:
    """SM4-decrypt and decode text; a decoding failure names the encoding to check."""
    data = sm4_decrypt(ciphertext, key)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TextEncodingError(
            f"decrypted payload is not valid {encoding} (byte {exc.start}): check "
            "CryptoOptions.text_encoding for this platform (utf-8 or gbk), or the SM4 key"
        ) from exc


# --------------------------------------------------------------------------------------------
# Elliptic curve arithmetic (short Weierstrass, prime field, cofactor 1)
# --------------------------------------------------------------------------------------------
# Affine points are (x, y) tuples; Jacobian points (X, Y, Z) stand for (X/Z², Y/Z³); Z == 0 is
# the point at infinity. Fixed windows of 4 bits: 64 windows for a 256-bit order.

Affine = tuple[int, int]
Jacobian = tuple[int, int, int]
_INFINITY: Jacobian = (1, 1, 0)
_WINDOW = 4


@dataclass(frozen=True)
class _Curve:
    name: str
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int

    @property
    def size(self) -> int:
        """Bytes per coordinate."""
        return (self.p.bit_length() + 7) // 8

    @property
    def g(self) -> Affine:
        return (self.gx, self.gy)

    def contains(self, point: Affine) -> bool:
        x, y = point
        return (
            0 <= x < self.p and 0 <= y < self.p and (y * y - (x * x * x + self.a * x + self.b)) % self.p == 0
        )


SM2P256V1 = _Curve(
    name="sm2p256v1",
    p=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF,
    a=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC,
    b=0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93,
    gx=0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    gy=0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
    n=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123,
)


def _double(curve: _Curve, point: Jacobian) -> Jacobian:
    x, y, z = point
    p = curve.p
    if z == 0 or y == 0:
        return _INFINITY
    yy = y * y % p
    s = 4 * x * yy % p
    zz = z * z % p
    if curve.a == p - 3:  # sm2p256v1: 3x² - 3z⁴ = 3(x - z²)(x + z²)
        m = 3 * (x - zz) * (x + zz) % p
    else:
        m = (3 * x * x + curve.a * zz * zz) % p
    x3 = (m * m - 2 * s) % p
    y3 = (m * (s - x3) - 8 * yy * yy) % p
    z3 = 2 * y * z % p
    return (x3, y3, z3)


def _add_affine(curve: _Curve, point: Jacobian, other: Affine) -> Jacobian:
    """Jacobian + affine ("mixed" addition), handling equal and opposite points."""
    x1, y1, z1 = point
    x2, y2 = other
    p = curve.p
    if z1 == 0:
        return (x2, y2, 1)
    z1z1 = z1 * z1 % p
    h = (x2 * z1z1 - x1) % p
    r = (y2 * z1 * z1z1 - y1) % p
    if h == 0:
        return _double(curve, point) if r == 0 else _INFINITY
    hh = h * h % p
    hhh = h * hh % p
    v = x1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    y3 = (r * (v - x3) - y1 * hhh) % p
    z3 = z1 * h % p
    return (x3, y3, z3)


def _to_affine(curve: _Curve, point: Jacobian) -> Affine | None:
    x, y, z = point
    if z == 0:
        return None
    p = curve.p
    zi = pow(z, -1, p)
    zi2 = zi * zi % p
    return (x * zi2 % p, y * zi2 * zi % p)


def _batch_to_affine(curve: _Curve, points: list[Jacobian]) -> list[Affine]:
    """Many points to affine with one inversion (Montgomery's trick); none may be infinity."""
    p = curve.p
    prefix = [1]
    for _, _, z in points:
        prefix.append(prefix[-1] * z % p)
    inverse = pow(prefix[-1], -1, p)
    result: list[Affine] = [(0, 0)] * len(points)
    for i in range(len(points) - 1, -1, -1):
        x, y, z = points[i]
        zi = inverse * prefix[i] % p
        inverse = inverse * z % p
        zi2 = zi * zi % p
        result[i] = (x * zi2 % p, y * zi2 * zi % p)
    return result


def _windows(curve: _Curve) -> int:
    return -(-curve.n.bit_length() // _WINDOW)


def _multiply(curve: _Curve, k: int, point: Affine) -> Affine | None:
    """[k]P for a point seen once (C1 when decrypting): left-to-right 4-bit fixed window."""
    if k % curve.n == 0:
        return None
    k %= curve.n
    multiples = [(point[0], point[1], 1)]
    for _ in range(2, 1 << _WINDOW):
        multiples.append(_add_affine(curve, multiples[-1], point))
    table = _batch_to_affine(curve, multiples)  # table[j - 1] = [j]P; none is infinity as n > 15
    acc = _INFINITY
    for i in range(_windows(curve) - 1, -1, -1):
        for _ in range(_WINDOW):
            acc = _double(curve, acc)
        digit = (k >> (i * _WINDOW)) & 0xF
        if digit:
            acc = _add_affine(curve, acc, table[digit - 1])
    return _to_affine(curve, acc)


@functools.lru_cache(maxsize=16)
def _fixed_base_table(curve: _Curve, point: Affine) -> tuple[tuple[Affine, ...], ...]:
    """table[i][j - 1] = [j·16^i]P: turns [k]P into 64 additions and no doublings.

    Built once per point (G, and the platform's public key, which never changes), in ~25 ms.
    """
    rows: list[list[Jacobian]] = []
    base = point
    for _ in range(_windows(curve)):
        row = [(base[0], base[1], 1)]
        for _ in range(2, 1 << _WINDOW):
            row.append(_add_affine(curve, row[-1], base))
        rows.append(row)
        next_base = _to_affine(curve, _add_affine(curve, row[-1], base))  # [16]base
        assert next_base is not None, "the curve order must exceed 16^windows"
        base = next_base
    flat = _batch_to_affine(curve, [pt for row in rows for pt in row])
    width = (1 << _WINDOW) - 1
    return tuple(tuple(flat[i : i + width]) for i in range(0, len(flat), width))


def _multiply_fixed(curve: _Curve, k: int, point: Affine) -> Affine | None:
    """[k]P for a point used again and again (G, the platform's public key)."""
    k %= curve.n
    table = _fixed_base_table(curve, point)
    acc = _INFINITY
    for i, row in enumerate(table):
        digit = (k >> (i * _WINDOW)) & 0xF
        if digit:
            acc = _add_affine(curve, acc, row[digit - 1])
    return _to_affine(curve, acc)


# --------------------------------------------------------------------------------------------
# SM2 keys
# --------------------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-fA-F]*")
_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.S)


def _int_bytes(value: int, curve: _Curve) -> bytes:
    return value.to_bytes(curve.size, "big")


def _parse_private_key(private_key: str | bytes, curve: _Curve = SM2P256V1) -> int:
    size = curve.size
    if isinstance(private_key, str):
        text = private_key.strip()
        if not _HEX.fullmatch(text):
            raise KeyFormatError(
                f"the SM2 private key must be {2 * size} hex characters; it contains non-hex characters"
            )
        if len(text) != 2 * size:
            raise KeyLengthError(
                f"the SM2 private key is {len(text)} hex characters; it must be exactly {2 * size}"
            )
        d = int(text, 16)
    elif isinstance(private_key, bytes | bytearray):
        if len(private_key) != size:
            raise KeyLengthError(
                f"the SM2 private key is {len(private_key)} bytes; it must be exactly {size}"
            )
        d = int.from_bytes(private_key, "big")
    else:
        raise TypeError(f"the SM2 private key must be hex text or bytes, got {type(private_key).__name__}")
    if not 1 <= d <= curve.n - 2:
        raise KeyFormatError(
            f"the SM2 private key is out of range [1, n-2] for {curve.name}: it is not an SM2 key"
        )
    return d


def _public_key_bytes(public_key: str | bytes) -> bytes:
    if isinstance(public_key, bytes | bytearray):
        return bytes(public_key)
    if not isinstance(public_key, str):
        raise TypeError(f"the SM2 public key must be text or bytes, got {type(public_key).__name__}")
    text = public_key.strip()
    pem = _PEM.search(text)
    if pem:
        return b64decode("".join(pem.group(1).split()), what="the PEM body of the SM2 public key")
    if _HEX.fullmatch(text):
        if len(text) % 2:
            raise KeyLengthError(
                f"the SM2 public key is {len(text)} hex characters, an odd number: a digit is missing"
            )
        return bytes.fromhex(text)
    if text.startswith("MF"):  # Base64 of a DER SubjectPublicKeyInfo, as Java's getEncoded() gives
        return b64decode(text, what="the Base64 SM2 public key")
    raise KeyFormatError(
        "the SM2 public key is neither hex (128 or 130 characters, 04 first) nor Base64/PEM of a "
        "SubjectPublicKeyInfo: check what the platform sent"
    )


def _parse_public_key(public_key: str | bytes, curve: _Curve = SM2P256V1) -> Affine:
    """Hex / bytes / SPKI / PEM / compressed → a validated point; the check is the point of it."""
    raw = _public_key_bytes(public_key)
    size = curve.size
    if len(raw) == 2 * size + 27 and raw[:2] == b"\x30\x59" and raw[-(2 * size + 1)] == 4:
        raw = raw[-(2 * size + 1) :]  # DER SubjectPublicKeyInfo: the BIT STRING holds 04 || x || y
    if len(raw) == 2 * size + 1 and raw[0] == 4:
        raw = raw[1:]
    if len(raw) == 2 * size:
        x, y = int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    elif len(raw) == size + 1 and raw[0] in (2, 3) and curve.p % 4 == 3:
        x = int.from_bytes(raw[1:], "big")
        y = pow((x * x * x + curve.a * x + curve.b) % curve.p, (curve.p + 1) // 4, curve.p)
        if y % 2 != raw[0] % 2:
            y = curve.p - y
    else:
        raise KeyLengthError(
            f"the SM2 public key is {len(raw)} bytes; expected {2 * size} (x||y), {2 * size + 1} "
            f"(04||x||y), {size + 1} (compressed) or a {2 * size + 27}-byte SubjectPublicKeyInfo"
        )
    if not curve.contains((x, y)):
        raise KeyFormatError(
            f"the SM2 public key is not a point on {curve.name}: check that it is the platform's SM2 "
            "key (not RSA or NIST P-256) and that nothing was lost when it was copied"
        )
    return (x, y)


def _encode_point(point: Affine, curve: _Curve = SM2P256V1) -> str:
    return "04" + (_int_bytes(point[0], curve) + _int_bytes(point[1], curve)).hex()


def validate_public_key(public_key: str | bytes) -> str:
    """Check an SM2 public key (hex, bytes, compressed, SPKI DER, PEM) and return it as 04||x||y hex."""
    return _encode_point(_parse_public_key(public_key))


def public_key_from_private(private_key: str | bytes) -> str:
    """The 04||x||y hex public key that belongs to a private key."""
    point = _multiply_fixed(SM2P256V1, _parse_private_key(private_key), SM2P256V1.g)
    assert point is not None
    return _encode_point(point)


def generate_keypair() -> tuple[str, str]:
    """A new SM2 key pair from the CSPRNG: (64-hex private key, 130-hex 04||x||y public key)."""
    curve = SM2P256V1
    d = secrets.randbelow(curve.n - 2) + 1  # [1, n-2], as GB/T 32918.1 §6.1 asks
    point = _multiply_fixed(curve, d, curve.g)
    if point is None or not curve.contains(point):  # cannot happen; a broken table must not pass silently
        raise CryptoError("generated SM2 public key is not on the curve: the EC arithmetic is broken")
    return _int_bytes(d, curve).hex(), _encode_point(point, curve)


# --------------------------------------------------------------------------------------------
# SM2 encryption (GB/T 32918.4-2016 §6 and §7)
# --------------------------------------------------------------------------------------------

_C3_SIZE = 32


def _encrypt(
    curve: _Curve, public_point: Affine, plaintext: bytes, options: CryptoOptions, k: int | None = None
) -> bytes:
    """SM2 encryption; ``k`` is injected only by the tests that replay the published examples."""
    if not plaintext:
        raise CryptoError("nothing to encrypt: SM2 plaintext is empty")
    while True:
        nonce = secrets.randbelow(curve.n - 1) + 1 if k is None else k  # A1: k in [1, n-1]
        c1 = _multiply_fixed(curve, nonce, curve.g)  # A2
        shared = _multiply_fixed(curve, nonce, public_point)  # A4 (A3: h = 1, the key was validated)
        assert c1 is not None and shared is not None
        x2, y2 = _int_bytes(shared[0], curve), _int_bytes(shared[1], curve)
        t = _kdf(x2 + y2, len(plaintext))  # A5
        if any(t):
            break
        if k is not None:
            raise CryptoError("the injected k gives an all-zero KDF output")
    c2 = (int.from_bytes(plaintext, "big") ^ int.from_bytes(t, "big")).to_bytes(len(plaintext), "big")  # A6
    c3 = _sm3(x2, plaintext, y2)  # A7
    c1_bytes = (
        (b"\x04" if options.with_04_prefix else b"") + _int_bytes(c1[0], curve) + _int_bytes(c1[1], curve)
    )
    return c1_bytes + (c3 + c2 if options.mode == "C1C3C2" else c2 + c3)


def _split(data: bytes, options: CryptoOptions, curve: _Curve) -> tuple[bytes, bytes, bytes]:
    """(C1 as x||y, C3, C2) by the configured layout, or CiphertextLayoutError."""
    prefix = 1 if options.with_04_prefix else 0
    c1_size = prefix + 2 * curve.size
    minimum = c1_size + _C3_SIZE + 1
    if len(data) < minimum:
        raise CiphertextLayoutError(
            f"SM2 ciphertext is {len(data)} bytes, shorter than the {minimum} bytes of C1 ({c1_size}) + "
            f"C3 ({_C3_SIZE}) + at least 1 byte of C2: it was truncated, or it is not SM2 ciphertext"
        )
    if prefix and data[0] != 4:
        hint = {
            0x30: "it looks like ASN.1 DER (GM/T 0009), which this module does not read",
            2: "C1 is a compressed point (02/03), which this module does not read",
            3: "C1 is a compressed point (02/03), which this module does not read",
        }.get(data[0], "check with_04_prefix for this platform")
        raise CiphertextLayoutError(
            f"SM2 ciphertext does not start with the 04 prefix (0x{data[0]:02x}): {hint}"
        )
    c1, rest = data[prefix:c1_size], data[c1_size:]
    if options.mode == "C1C3C2":
        return c1, rest[:_C3_SIZE], rest[_C3_SIZE:]
    return c1, rest[-_C3_SIZE:], rest[:-_C3_SIZE]


def _c1_point(c1: bytes, curve: _Curve) -> Affine | None:
    point = (int.from_bytes(c1[: curve.size], "big"), int.from_bytes(c1[curve.size :], "big"))
    return point if curve.contains(point) else None


def _recover(curve: _Curve, shared: Affine, c3: bytes, c2: bytes) -> bytes | None:
    """B4-B6: the plaintext, or None when C3 does not match."""
    x2, y2 = _int_bytes(shared[0], curve), _int_bytes(shared[1], curve)
    t = _kdf(x2 + y2, len(c2))
    if not any(t):
        return None
    plaintext = (int.from_bytes(c2, "big") ^ int.from_bytes(t, "big")).to_bytes(len(c2), "big")
    return plaintext if hmac.compare_digest(_sm3(x2, plaintext, y2), c3) else None


def _other_layout(curve: _Curve, d: int, data: bytes, options: CryptoOptions) -> CryptoOptions | None:
    """After a failure: the other layout under which the data decrypts and verifies, if any."""
    shared_by_c1: dict[bytes, Affine | None] = {}
    for mode in get_args(SM2Mode):
        for prefixed in (True, False):
            candidate = CryptoOptions(mode=mode, with_04_prefix=prefixed)
            if (mode, prefixed) == (options.mode, options.with_04_prefix):
                continue
            try:
                c1, c3, c2 = _split(data, candidate, curve)
            except CiphertextLayoutError:
                continue
            if c1 not in shared_by_c1:
                point = _c1_point(c1, curve)
                shared_by_c1[c1] = None if point is None else _multiply(curve, d, point)
            shared = shared_by_c1[c1]
            if shared is not None and _recover(curve, shared, c3, c2) is not None:
                return candidate
    return None


def _decrypt(curve: _Curve, d: int, data: bytes, options: CryptoOptions) -> bytes:
    try:
        c1, c3, c2 = _split(data, options, curve)
    except CiphertextLayoutError as exc:
        found = _other_layout(curve, d, data, options)
        if found is None:
            raise
        raise _layout_mismatch(found, options) from exc
    point = _c1_point(c1, curve)  # B1
    if point is None:
        found = _other_layout(curve, d, data, options)
        if found is not None:
            raise _layout_mismatch(found, options)
        raise CiphertextLayoutError(
            f"SM2 C1 is not a point on {curve.name}: the data is not SM2 ciphertext for this curve, "
            f"was cut or shifted, or the layout differs from {options.describe_layout()}"
        )
    shared = _multiply(curve, d, point)  # B2 (h = 1: C1 on the curve is never infinity), B3
    plaintext = None if shared is None else _recover(curve, shared, c3, c2)
    if plaintext is None:
        found = _other_layout(curve, d, data, options)
        if found is not None:
            raise _layout_mismatch(found, options)
        raise WrongKeyError(
            "SM2 C3 check failed: the private key is not the one this ciphertext was encrypted for "
            "(check the key pair configured for this platform), or the ciphertext was altered"
        )
    return plaintext


def _layout_mismatch(found: CryptoOptions, options: CryptoOptions) -> CiphertextLayoutError:
    return CiphertextLayoutError(
        f"SM2 ciphertext is laid out as {found.describe_layout()}, but the options say "
        f"{options.describe_layout()}: set CryptoOptions(mode={found.mode!r}, "
        f"with_04_prefix={found.with_04_prefix}) for this platform"
    )


def sm2_encrypt(plaintext: bytes, public_key: str | bytes, *, options: CryptoOptions | None = None) -> bytes:
    """SM2-encrypt ``plaintext`` to ``public_key`` (validated on the curve), with a fresh CSPRNG k."""
    _check_bytes(plaintext, "sm2_encrypt")
    point = _parse_public_key(public_key)
    return _encrypt(SM2P256V1, point, bytes(plaintext), options or DEFAULT_OPTIONS)


def sm2_decrypt(
    ciphertext: bytes, private_key: str | bytes, *, options: CryptoOptions | None = None
) -> bytes:
    """SM2-decrypt and verify C3; a failure says whether the key or the layout is wrong."""
    _check_bytes(ciphertext, "sm2_decrypt (Base64-decode strKey first)")
    return _decrypt(SM2P256V1, _parse_private_key(private_key), bytes(ciphertext), options or DEFAULT_OPTIONS)


# --------------------------------------------------------------------------------------------
# strKey: the wrapped SM4 key
# --------------------------------------------------------------------------------------------


def wrap_key(sm4_key: bytes, public_key: str | bytes, *, options: CryptoOptions | None = None) -> str:
    """``strKey``: the SM4 key (raw or as hex text, per options) SM2-encrypted, then Base64."""
    options = options or DEFAULT_OPTIONS
    key = _check_sm4_key(sm4_key)
    plaintext = key if options.key_form == "raw" else key.hex().encode("ascii")
    return b64encode(sm2_encrypt(plaintext, public_key, options=options))


def unwrap_key(
    str_key: str | bytes, private_key: str | bytes, *, options: CryptoOptions | None = None
) -> bytes:
    """The platform's side of ``wrap_key`` (our simulator, the tests): strKey → 16-byte SM4 key."""
    options = options or DEFAULT_OPTIONS
    plaintext = sm2_decrypt(b64decode(str_key, what="strKey"), private_key, options=options)
    if options.key_form == "raw":
        if len(plaintext) != SM4_KEY_SIZE:
            hint = ""
            if len(plaintext) == 2 * SM4_KEY_SIZE and _HEX.fullmatch(plaintext.decode("latin-1")):
                hint = "; it is 32 hex characters, so this platform uses key_form='hex'"
            raise KeyLengthError(
                f"the unwrapped SM4 key is {len(plaintext)} bytes, expected 16 for key_form='raw'{hint}"
            )
        return plaintext
    text = plaintext.decode("latin-1")
    if len(text) != 2 * SM4_KEY_SIZE or not _HEX.fullmatch(text):
        hint = (
            "; it is 16 bytes, so this platform uses key_form='raw'" if len(plaintext) == SM4_KEY_SIZE else ""
        )
        raise KeyLengthError(
            f"the unwrapped SM4 key is {len(plaintext)} bytes, expected 32 hex characters for key_form='hex'{hint}"
        )
    return bytes.fromhex(text)


# --------------------------------------------------------------------------------------------
# Session keys
# --------------------------------------------------------------------------------------------


class SessionKey:
    """One SM4 key and its ``strKey``, wrapped once. Never printed, never serialised.

    Keep the object used for a request to decrypt its answer: the platform answers with the
    caller's key, and the ring may have rotated in between.
    """

    __slots__ = ("_created_at", "_key", "_key_id", "_options", "_str_key", "_uses")

    def __init__(self, *, key: bytes, str_key: str, created_at: float, options: CryptoOptions) -> None:
        self._key = _check_sm4_key(key)
        self._str_key = str_key
        self._created_at = created_at
        self._options = options
        self._key_id = uuid.uuid4().hex[:8]  # a label for logs, unrelated to the key
        self._uses = 0

    @classmethod
    def create(
        cls, *, public_key: str | bytes, options: CryptoOptions | None = None, created_at: float | None = None
    ) -> SessionKey:
        """A fresh key from the CSPRNG, wrapped for ``public_key``."""
        options = options or DEFAULT_OPTIONS
        key = secrets.token_bytes(SM4_KEY_SIZE)
        return cls(
            key=key,
            str_key=wrap_key(key, public_key, options=options),
            created_at=time.monotonic() if created_at is None else created_at,
            options=options,
        )

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def str_key(self) -> str:
        """Base64 of the SM2-wrapped key: the ``strKey`` argument of every call."""
        return self._str_key

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def created_at(self) -> float:
        return self._created_at

    @property
    def uses(self) -> int:
        return self._uses

    def encrypt(self, data: bytes) -> bytes:
        return sm4_encrypt(data, self._key)

    def decrypt(self, data: bytes) -> bytes:
        return sm4_decrypt(data, self._key)

    def encrypt_text(self, text: str) -> bytes:
        return sm4_encrypt_text(text, self._key, encoding=self._options.text_encoding)

    def decrypt_text(self, data: bytes) -> str:
        return sm4_decrypt_text(data, self._key, encoding=self._options.text_encoding)

    def __repr__(self) -> str:
        return f"SessionKey(key_id={self._key_id!r}, uses={self._uses}, key=<hidden>)"

    def __reduce_ex__(self, protocol: object) -> object:
        raise TypeError(
            "a SessionKey holds an SM4 key in clear and must not be pickled, copied or sent to XCom"
        )


class KeyRing:
    """Hands out the current ``SessionKey``, rotating it after ``max_uses`` calls or ``max_age_seconds``.

    Thread-safe; wrapping (about 1 ms) happens under the lock, once per rotation. At least one
    bound is required: a key must not live for ever.
    """

    def __init__(
        self,
        *,
        public_key: str | bytes,
        options: CryptoOptions | None = None,
        max_uses: int | None = 1000,
        max_age_seconds: float | None = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_uses is None and max_age_seconds is None:
            raise ValueError(
                "KeyRing needs max_uses and/or max_age_seconds: a session key must not be reused for ever"
            )
        if max_uses is not None and (
            isinstance(max_uses, bool) or not isinstance(max_uses, int) or max_uses < 1
        ):
            raise ValueError(f"KeyRing max_uses must be a positive integer or None, got {max_uses!r}")
        if max_age_seconds is not None and not max_age_seconds > 0:
            raise ValueError(f"KeyRing max_age_seconds must be positive or None, got {max_age_seconds!r}")
        self._public_key = validate_public_key(public_key)  # fail early on a bad platform key
        self._options = options or DEFAULT_OPTIONS
        self._max_uses = max_uses
        self._max_age = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._current: SessionKey | None = None
        self._rotations = 0

    def _expired(self, session: SessionKey) -> bool:
        if self._max_uses is not None and session.uses >= self._max_uses:
            return True
        return self._max_age is not None and self._clock() - session.created_at >= self._max_age

    def _new_key(self) -> SessionKey:
        self._rotations += 1
        return SessionKey.create(public_key=self._public_key, options=self._options, created_at=self._clock())

    def current(self) -> SessionKey:
        """The key for one call (counted as one use); a new one once the window is spent."""
        with self._lock:
            if self._current is None or self._expired(self._current):
                self._current = self._new_key()
            self._current._uses += 1
            return self._current

    def rotate(self) -> SessionKey:
        """Drop the current key now (e.g. after the platform rejected it) and make a new one."""
        with self._lock:
            self._current = self._new_key()
            return self._current

    @property
    def rotations(self) -> int:
        """How many keys this ring has made."""
        return self._rotations

    @property
    def options(self) -> CryptoOptions:
        return self._options

    def __repr__(self) -> str:
        return f"KeyRing(rotations={self._rotations}, max_uses={self._max_uses}, max_age_seconds={self._max_age})"

    def __reduce_ex__(self, protocol: object) -> object:
        raise TypeError("a KeyRing holds SM4 keys in clear and must not be pickled, copied or sent to XCom")
