"""Tests for hurren.crypto: published vectors, gmssl as an independent peer, every bad input."""

from __future__ import annotations

import base64
import copy
import pickle
import random
import secrets
import threading
from dataclasses import FrozenInstanceError

import pytest
from gmssl import sm3 as gm_sm3
from gmssl.sm2 import CryptSM2
from gmssl.sm4 import SM4_DECRYPT, SM4_ENCRYPT, CryptSM4
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hurren import crypto
from hurren.crypto import (
    Base64FormatError,
    CiphertextLayoutError,
    CryptoError,
    CryptoOptions,
    KeyFormatError,
    KeyLengthError,
    KeyRing,
    PaddingError,
    SessionKey,
    TextEncodingError,
    TruncatedCiphertextError,
    WrongKeyError,
    b64decode,
    b64encode,
    generate_keypair,
    public_key_from_private,
    sm2_decrypt,
    sm2_encrypt,
    sm4_decrypt,
    sm4_decrypt_text,
    sm4_encrypt,
    sm4_encrypt_text,
    unwrap_key,
    validate_public_key,
    wrap_key,
)

CURVE = crypto.SM2P256V1
PRIVATE, PUBLIC = generate_keypair()  # one pair for the whole module: keeps hypothesis fast
OTHER_PRIVATE, OTHER_PUBLIC = generate_keypair()

# The four layouts a platform may use, with readable ids.
LAYOUTS = [
    pytest.param(
        CryptoOptions(mode=mode, with_04_prefix=prefixed), id=f"{mode}-{'04' if prefixed else 'no04'}"
    )
    for mode in ("C1C3C2", "C1C2C3")
    for prefixed in (True, False)
]

# GM/T 0003.5-2012 / GB/T 32918.5-2017 Annex C: encryption on sm2p256v1.
STD_PRIVATE = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
STD_PUBLIC = (
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
STD_K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
STD_C1 = (
    "04"
    "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
    "E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"
)
STD_C3 = "59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"
STD_C2 = "21886CA989CA9C7D58087307CA93092D651EFA"
STD_MESSAGE = b"encryption standard"

# GB/T 32918.4-2016 Annex A.2: encryption on the 256-bit test curve over Fp.
TEST_CURVE = crypto._Curve(
    name="GB/T 32918.4 A.2 test curve",
    p=0x8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3,
    a=0x787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498,
    b=0x63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A,
    gx=0x421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D,
    gy=0x0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2,
    n=0x8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7,
)
TEST_D = 0x1649AB77A00637BD5E2EFE283FBF353534AA7F7CB89463F208DDBC2920BB0DA0
TEST_PUBLIC = (
    0x435B39CCA8F3B508C1488AFC67BE491A0F7BA07E581A0E4849A5CF70628A7E0A,
    0x75DDBA78F15FEECB4C7895E2C1CDF5FE01DEBB2CDBADF45399CCF77BBA076A42,
)
TEST_K = 0x4C62EEFD6ECFC2B95B92FD6C3D9575148AFA17425546D49018E5388D49DD7B4F
TEST_CIPHERTEXT = (
    "04"
    "245C26FB68B1DDDDB12C4B6BF9F2B6D5FE60A383B0D18D1C4144ABF17F6252E7"
    "76CB9264C2A7E88E52B19903FDC47378F605E36811F5C07423A24B84400F01B8"
    "9C3D7360C30156FAB7C80A0276712DA9D8094A634B766D3A285E07480653426D"  # C3
    "650053A89B41C418B0C3AAD00D886C00286467"  # C2
)

SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")


def _rng_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _gmssl_sm2(mode: str) -> CryptSM2:
    # gmssl wants the public key without 04 (its lstrip("04") would eat digits of x) and
    # ciphertext without the 04 prefix; mode=1 is C1C3C2, mode=0 C1C2C3.
    return CryptSM2(private_key=PRIVATE, public_key=PUBLIC[2:], mode=1 if mode == "C1C3C2" else 0)


# --------------------------------------------------------------------------------------------
# SM4
# --------------------------------------------------------------------------------------------


def test_sm4_gbt32907_example_1_single_block() -> None:
    encryptor = crypto._sm4_cipher(SM4_KEY).encryptor()
    assert encryptor.update(SM4_KEY).hex() == "681edf34d206965e86b3e94f536e4246"
    decryptor = crypto._sm4_cipher(SM4_KEY).decryptor()
    assert decryptor.update(bytes.fromhex("681edf34d206965e86b3e94f536e4246")) == SM4_KEY


def test_sm4_gbt32907_example_2_million_iterations() -> None:
    encryptor = crypto._sm4_cipher(SM4_KEY).encryptor()  # one ECB context, reused
    block = SM4_KEY
    for _ in range(1_000_000):
        block = encryptor.update(block)
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"


def test_sm4_padded_output_starts_with_the_raw_block_and_adds_a_full_pad_block() -> None:
    ciphertext = sm4_encrypt(SM4_KEY, SM4_KEY)
    assert len(ciphertext) == 32
    assert ciphertext[:16].hex() == "681edf34d206965e86b3e94f536e4246"
    assert ciphertext[16:] == crypto._sm4_cipher(SM4_KEY).encryptor().update(b"\x10" * 16)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 1000, 4099], ids=lambda n: f"{n}B")
def test_sm4_matches_gmssl_both_directions(size: int) -> None:
    key = _rng_bytes(16, size)
    data = _rng_bytes(size, size + 1)
    theirs = CryptSM4()
    theirs.set_key(key, SM4_ENCRYPT)
    ours = sm4_encrypt(data, key)
    assert ours == theirs.crypt_ecb(data)
    theirs.set_key(key, SM4_DECRYPT)
    assert theirs.crypt_ecb(ours) == data
    assert sm4_decrypt(ours, key) == data


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=4096), key=st.binary(min_size=16, max_size=16))
def test_sm4_round_trip_property(data: bytes, key: bytes) -> None:
    ciphertext = sm4_encrypt(data, key)
    assert len(ciphertext) == (len(data) // 16 + 1) * 16
    assert sm4_decrypt(ciphertext, key) == data


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=200), key=st.binary(min_size=16, max_size=16))
def test_sm4_matches_gmssl_property(data: bytes, key: bytes) -> None:
    theirs = CryptSM4()
    theirs.set_key(key, SM4_ENCRYPT)
    assert sm4_encrypt(data, key) == theirs.crypt_ecb(data)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        pytest.param("<root>检验报告</root>", "utf-8", id="chinese-utf8"),
        pytest.param("<root>检验报告</root>", "gbk", id="chinese-gbk"),
        pytest.param("<root>ئۇيغۇر 检验</root>", "utf-8", id="uyghur-utf8"),
        pytest.param("<root>ئۇيغۇر 检验</root>", "gb18030", id="uyghur-gb18030"),
    ],
)
def test_sm4_text_round_trip(text: str, encoding: crypto.TextEncoding) -> None:
    ciphertext = sm4_encrypt_text(text, SM4_KEY, encoding=encoding)
    assert sm4_decrypt(ciphertext, SM4_KEY) == text.encode(encoding)
    assert sm4_decrypt_text(ciphertext, SM4_KEY, encoding=encoding) == text


@pytest.mark.parametrize("size", [0, 8, 15, 17, 24, 32], ids=lambda n: f"{n}B")
def test_sm4_wrong_key_length(size: int) -> None:
    with pytest.raises(KeyLengthError, match="exactly 16 bytes"):
        sm4_encrypt(b"data", b"k" * size)
    with pytest.raises(KeyLengthError, match="exactly 16 bytes"):
        sm4_decrypt(b"\0" * 16, b"k" * size)


def test_sm4_hex_text_key_gets_a_hint() -> None:
    with pytest.raises(KeyLengthError, match=r"bytes\.fromhex"):
        sm4_encrypt(b"data", SM4_KEY.hex().encode())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: sm4_encrypt(b"x", SM4_KEY.hex()), "SM4 key must be bytes", id="str-key"),
        pytest.param(lambda: sm4_encrypt("text", SM4_KEY), "takes bytes", id="str-plaintext"),
        pytest.param(lambda: sm4_decrypt("text", SM4_KEY), "takes bytes", id="str-ciphertext"),
    ],
)
def test_sm4_wrong_types(call, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize("size", [0, 1, 15, 17, 31, 47], ids=lambda n: f"{n}B")
def test_sm4_truncated_ciphertext(size: int) -> None:
    ciphertext = sm4_encrypt(b"x" * 40, SM4_KEY)[:size]
    with pytest.raises(
        TruncatedCiphertextError, match=f"{size} bytes, not a positive multiple of the 16-byte block"
    ):
        sm4_decrypt(ciphertext, SM4_KEY)


def test_sm4_wrong_key_is_a_padding_error() -> None:
    ciphertext = sm4_encrypt(b"<root>report</root>", SM4_KEY)
    with pytest.raises(PaddingError, match="SM4 key is not the one"):
        sm4_decrypt(ciphertext, bytes(16))


def test_sm4_corrupted_last_block_is_a_padding_error() -> None:
    ciphertext = bytearray(sm4_encrypt(b"<root>report</root>", SM4_KEY))
    ciphertext[-1] ^= 0xFF
    with pytest.raises(PaddingError, match="padding is invalid"):
        sm4_decrypt(bytes(ciphertext), SM4_KEY)


def test_sm4_text_not_encodable_in_gbk() -> None:
    with pytest.raises(TextEncodingError, match="cannot be encoded as gbk.*gb18030"):
        sm4_encrypt_text("名字 ئۇيغۇر", SM4_KEY, encoding="gbk")


def test_sm4_text_decoded_with_the_wrong_encoding() -> None:
    ciphertext = sm4_encrypt_text("检验报告", SM4_KEY, encoding="gbk")
    with pytest.raises(TextEncodingError, match="not valid utf-8.*text_encoding"):
        sm4_decrypt_text(ciphertext, SM4_KEY, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# SM3 and the KDF
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "digest"),
    [
        pytest.param(b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0", id="abc"),
        pytest.param(
            b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732", id="abcd*16"
        ),
    ],
)
def test_sm3_gbt32905_examples(message: bytes, digest: str) -> None:
    assert crypto._sm3(message).hex() == digest
    assert gm_sm3.sm3_hash(list(message)) == digest


@pytest.mark.parametrize("length", [1, 16, 19, 32, 33, 100], ids=lambda n: f"{n}B")
def test_kdf_matches_gmssl(length: int) -> None:
    z = _rng_bytes(64, length)
    assert crypto._kdf(z, length).hex() == gm_sm3.sm3_kdf(z.hex().encode(), length)


# --------------------------------------------------------------------------------------------
# Curve arithmetic
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "x", "y"),
    [
        pytest.param(
            STD_K,
            0x04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73,
            0xE858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0,
            id="gmt0003.5-A.2-kG",
        ),
        pytest.param(
            0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA,
            0x2B9CE14E3C8D1FFC46D693FA0B54F2BDC4825A506607655DE22894B5C99D3746,
            0x277BFE04D1E526B4E1C32726435761FBCE0997C26390919C4417B3A0A8639A59,
            id="gmt0003.5-A.2-sG",
        ),
        pytest.param(1, CURVE.gx, CURVE.gy, id="1G"),
        pytest.param(CURVE.n - 1, CURVE.gx, CURVE.p - CURVE.gy, id="(n-1)G"),
    ],
)
def test_scalar_multiplication_examples(k: int, x: int, y: int) -> None:
    assert crypto._multiply_fixed(CURVE, k, CURVE.g) == (x, y)
    assert crypto._multiply(CURVE, k, CURVE.g) == (x, y)


def test_multiplying_by_the_order_gives_infinity() -> None:
    assert crypto._multiply(CURVE, CURVE.n, CURVE.g) is None
    assert crypto._multiply_fixed(CURVE, CURVE.n, CURVE.g) is None


@settings(max_examples=25, deadline=None)
@given(k=st.integers(min_value=1, max_value=CURVE.n - 1))
def test_window_and_fixed_base_multiplication_agree(k: int) -> None:
    public = crypto._parse_public_key(PUBLIC)
    assert crypto._multiply(CURVE, k, CURVE.g) == crypto._multiply_fixed(CURVE, k, CURVE.g)
    assert crypto._multiply(CURVE, k, public) == crypto._multiply_fixed(CURVE, k, public)


# --------------------------------------------------------------------------------------------
# SM2: published examples
# --------------------------------------------------------------------------------------------


def test_sm2_gmt0003_example_on_sm2p256v1() -> None:
    assert public_key_from_private(STD_PRIVATE) == STD_PUBLIC.lower()
    point = crypto._parse_public_key(STD_PUBLIC)
    c1c3c2 = crypto._encrypt(CURVE, point, STD_MESSAGE, CryptoOptions(), k=STD_K)
    assert c1c3c2.hex().upper() == STD_C1 + STD_C3 + STD_C2
    c1c2c3 = crypto._encrypt(
        CURVE, point, STD_MESSAGE, CryptoOptions(mode="C1C2C3", with_04_prefix=False), k=STD_K
    )
    assert c1c2c3.hex().upper() == STD_C1[2:] + STD_C2 + STD_C3
    assert sm2_decrypt(c1c3c2, STD_PRIVATE) == STD_MESSAGE


def test_sm2_gbt32918_4_example_on_the_test_curve() -> None:
    assert TEST_CURVE.contains(TEST_CURVE.g)
    assert crypto._multiply(TEST_CURVE, TEST_D, TEST_CURVE.g) == TEST_PUBLIC  # general-a doubling path
    ciphertext = crypto._encrypt(TEST_CURVE, TEST_PUBLIC, STD_MESSAGE, CryptoOptions(), k=TEST_K)
    assert ciphertext.hex().upper() == TEST_CIPHERTEXT
    assert crypto._decrypt(TEST_CURVE, TEST_D, ciphertext, CryptoOptions()) == STD_MESSAGE


# --------------------------------------------------------------------------------------------
# SM2: gmssl as an independent peer
# --------------------------------------------------------------------------------------------

PLAINTEXTS = [
    pytest.param(b"\x00", id="1B-zero"),
    pytest.param(bytes(range(16)), id="16B-raw-key"),
    pytest.param(b"0123456789abcdef0123456789abcdef", id="32B-hex-key"),
    pytest.param(_rng_bytes(100, 7), id="100B"),
]


@pytest.mark.parametrize("plaintext", PLAINTEXTS)
@pytest.mark.parametrize("mode", ["C1C3C2", "C1C2C3"])
def test_sm2_ours_encrypt_gmssl_decrypt(mode: str, plaintext: bytes) -> None:
    ciphertext = sm2_encrypt(plaintext, PUBLIC, options=CryptoOptions(mode=mode, with_04_prefix=False))
    assert _gmssl_sm2(mode).decrypt(ciphertext) == plaintext


@pytest.mark.parametrize("plaintext", PLAINTEXTS)
@pytest.mark.parametrize("mode", ["C1C3C2", "C1C2C3"])
def test_sm2_gmssl_encrypt_ours_decrypt(mode: str, plaintext: bytes) -> None:
    # gmssl returns None when its random k gives an all-zero KDF output (likely for short
    # messages: 1 in 256 for one byte) instead of drawing a new k as GB/T 32918 says; draw again.
    ciphertext = None
    while ciphertext is None:
        ciphertext = _gmssl_sm2(mode).encrypt(plaintext)
    assert (
        sm2_decrypt(ciphertext, PRIVATE, options=CryptoOptions(mode=mode, with_04_prefix=False)) == plaintext
    )
    # the same bytes with the 04 prefix, as Java/BouncyCastle peers send them
    prefixed = b"\x04" + ciphertext
    assert sm2_decrypt(prefixed, PRIVATE, options=CryptoOptions(mode=mode)) == plaintext


@pytest.mark.parametrize("options", LAYOUTS)
def test_sm2_layouts_round_trip(options: CryptoOptions) -> None:
    ciphertext = sm2_encrypt(b"sixteen byte key", PUBLIC, options=options)
    assert len(ciphertext) == (65 if options.with_04_prefix else 64) + 32 + 16
    assert ciphertext[0] == 4 or not options.with_04_prefix
    assert sm2_decrypt(ciphertext, PRIVATE, options=options) == b"sixteen byte key"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plaintext=st.binary(min_size=1, max_size=300),
    mode=st.sampled_from(["C1C3C2", "C1C2C3"]),
    prefixed=st.booleans(),
)
def test_sm2_round_trip_property(plaintext: bytes, mode: crypto.SM2Mode, prefixed: bool) -> None:
    options = CryptoOptions(mode=mode, with_04_prefix=prefixed)
    assert sm2_decrypt(sm2_encrypt(plaintext, PUBLIC, options=options), PRIVATE, options=options) == plaintext


def test_sm2_encryption_is_randomised() -> None:
    assert sm2_encrypt(b"same", PUBLIC) != sm2_encrypt(b"same", PUBLIC)


def test_sm2_empty_plaintext_is_refused() -> None:
    with pytest.raises(CryptoError, match="plaintext is empty"):
        sm2_encrypt(b"", PUBLIC)


# --------------------------------------------------------------------------------------------
# SM2: keys
# --------------------------------------------------------------------------------------------


def test_generate_keypair_shapes_and_curve() -> None:
    private, public = generate_keypair()
    assert len(private) == 64 and len(public) == 130 and public.startswith("04")
    x, y = int(public[2:66], 16), int(public[66:], 16)
    assert CURVE.contains((x, y))
    assert public_key_from_private(private) == public
    assert 1 <= int(private, 16) <= CURVE.n - 2


def _spki(public_hex: str) -> bytes:
    prefix = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
    return prefix + bytes.fromhex(public_hex)


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"


def _compressed(public_hex: str) -> bytes:
    y = int(public_hex[66:], 16)
    return bytes([2 + (y & 1)]) + bytes.fromhex(public_hex[2:66])


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda h: h, id="hex-04"),
        pytest.param(lambda h: h[2:], id="hex-no04"),
        pytest.param(lambda h: f"  {h.upper()}\n", id="hex-upper-spaces"),
        pytest.param(lambda h: bytes.fromhex(h), id="bytes-65"),
        pytest.param(lambda h: bytes.fromhex(h[2:]), id="bytes-64"),
        pytest.param(_compressed, id="compressed"),
        pytest.param(_spki, id="spki-der"),
        pytest.param(lambda h: base64.b64encode(_spki(h)).decode(), id="spki-base64"),
        pytest.param(lambda h: _pem(_spki(h)), id="pem"),
    ],
)
def test_public_key_forms(form) -> None:
    assert validate_public_key(form(PUBLIC)) == PUBLIC


def test_public_key_whose_x_starts_with_0_or_4_survives() -> None:
    """gmssl's public_key.lstrip("04") eats such digits; ours must not."""
    while True:
        private, public = generate_keypair()
        if public[2] in "04":
            break
    assert public[2:].lstrip("04") != public[2:]  # the gmssl pitfall applies to this key
    ciphertext = sm2_encrypt(b"key", public)
    assert sm2_decrypt(ciphertext, private) == b"key"


def _not_on_curve(public_hex: str) -> str:
    return public_hex[:-2] + format(int(public_hex[-2:], 16) ^ 1, "02x")


@pytest.mark.parametrize(
    ("public_key", "error", "message"),
    [
        pytest.param(_not_on_curve(PUBLIC), KeyFormatError, "not a point on sm2p256v1", id="not-on-curve"),
        pytest.param("04" + "ff" * 64, KeyFormatError, "not a point on sm2p256v1", id="coordinates-above-p"),
        pytest.param(PUBLIC[:-4], KeyLengthError, "is 63 bytes", id="two-bytes-short"),
        pytest.param(PUBLIC[:-1], KeyLengthError, "odd number", id="odd-hex"),
        pytest.param("", KeyLengthError, "is 0 bytes", id="empty"),
        pytest.param("not a key at all", KeyFormatError, "neither hex", id="junk"),
        pytest.param(b"\x05" + bytes.fromhex(PUBLIC[2:]), KeyLengthError, "65", id="bad-prefix-byte"),
        pytest.param("MF!!", Base64FormatError, "not valid Base64", id="bad-base64-spki"),
    ],
)
def test_bad_public_keys(public_key: str | bytes, error: type[CryptoError], message: str) -> None:
    with pytest.raises(error, match=message):
        sm2_encrypt(b"key", public_key)
    with pytest.raises(error):
        KeyRing(public_key=public_key)


@pytest.mark.parametrize(
    ("private_key", "error", "message"),
    [
        pytest.param(PRIVATE[:-2], KeyLengthError, "62 hex characters", id="short-hex"),
        pytest.param(PRIVATE + "00", KeyLengthError, "66 hex characters", id="long-hex"),
        pytest.param("zz" + PRIVATE[2:], KeyFormatError, "non-hex", id="non-hex"),
        pytest.param(bytes.fromhex(PRIVATE)[:31], KeyLengthError, "31 bytes", id="short-bytes"),
        pytest.param("00" * 32, KeyFormatError, "out of range", id="zero"),
        pytest.param(format(CURVE.n - 1, "064x"), KeyFormatError, "out of range", id="n-1"),
    ],
)
def test_bad_private_keys(private_key: str | bytes, error: type[CryptoError], message: str) -> None:
    ciphertext = sm2_encrypt(b"key", PUBLIC)
    with pytest.raises(error, match=message):
        sm2_decrypt(ciphertext, private_key)


# --------------------------------------------------------------------------------------------
# SM2: bad ciphertexts
# --------------------------------------------------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


GOOD = sm2_encrypt(b"0123456789abcdef", PUBLIC)  # C1C3C2 with 04: 65 + 32 + 16 bytes


@pytest.mark.parametrize(
    ("ciphertext", "error", "message"),
    [
        pytest.param(b"", CiphertextLayoutError, "0 bytes, shorter than the 98", id="empty"),
        pytest.param(GOOD[:97], CiphertextLayoutError, "97 bytes, shorter", id="truncated-to-97"),
        pytest.param(
            b"\x05" + GOOD[1:], CiphertextLayoutError, "does not start with the 04 prefix", id="bad-prefix"
        ),
        pytest.param(b"\x30" + GOOD[1:], CiphertextLayoutError, "ASN.1 DER", id="asn1"),
        pytest.param(b"\x02" + GOOD[1:], CiphertextLayoutError, "compressed point", id="compressed-c1"),
        pytest.param(_flip(GOOD, 5), CiphertextLayoutError, "C1 is not a point", id="c1-not-on-curve"),
        pytest.param(_flip(GOOD, 70), WrongKeyError, "C3 check failed", id="c3-altered"),
        pytest.param(_flip(GOOD, 100), WrongKeyError, "C3 check failed", id="c2-altered"),
        pytest.param(GOOD[:-1], WrongKeyError, "C3 check failed", id="c2-cut-by-one"),
    ],
)
def test_bad_sm2_ciphertexts(ciphertext: bytes, error: type[CryptoError], message: str) -> None:
    with pytest.raises(error, match=message):
        sm2_decrypt(ciphertext, PRIVATE)


def test_sm2_wrong_private_key() -> None:
    with pytest.raises(WrongKeyError, match="private key is not the one"):
        sm2_decrypt(GOOD, OTHER_PRIVATE)


@pytest.mark.parametrize("sent", LAYOUTS)
@pytest.mark.parametrize("expected", LAYOUTS)
def test_sm2_layout_mismatch_names_the_actual_layout(sent: CryptoOptions, expected: CryptoOptions) -> None:
    ciphertext = sm2_encrypt(b"0123456789abcdef", PUBLIC, options=sent)
    if sent == expected:
        assert sm2_decrypt(ciphertext, PRIVATE, options=expected) == b"0123456789abcdef"
        return
    with pytest.raises(
        CiphertextLayoutError, match=rf"laid out as {sent.describe_layout()}.*mode='{sent.mode}'"
    ):
        sm2_decrypt(ciphertext, PRIVATE, options=expected)


def test_sm2_decrypt_wants_bytes() -> None:
    with pytest.raises(TypeError, match="Base64-decode strKey first"):
        sm2_decrypt(b64encode(GOOD), PRIVATE)


# --------------------------------------------------------------------------------------------
# Base64 and strKey
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("abc", "not valid Base64", id="bad-padding"),
        pytest.param("ab$c", "not valid Base64", id="bad-character"),
        pytest.param("q-_w", "URL-safe", id="url-safe"),
        pytest.param("YW Jj", "'\\+' was probably turned into ' '", id="space"),
        pytest.param("检验报告", "non-ASCII", id="non-ascii"),
    ],
)
def test_b64decode_refuses_corrupt_text(text: str, message: str) -> None:
    with pytest.raises(Base64FormatError, match=message):
        b64decode(text)
    with pytest.raises(Base64FormatError):
        unwrap_key(text, PRIVATE)


def test_b64_round_trip_and_mime_line_breaks() -> None:
    data = _rng_bytes(200, 3)
    text = b64encode(data)
    assert "\n" not in text
    assert b64decode(text) == data
    assert b64decode(base64.encodebytes(data)) == data  # 76-character lines, as Java's MIME encoder


@pytest.mark.parametrize("key_form", ["raw", "hex"])
@pytest.mark.parametrize("options", LAYOUTS)
def test_wrap_unwrap_round_trip(options: CryptoOptions, key_form: crypto.KeyForm) -> None:
    options = CryptoOptions(mode=options.mode, with_04_prefix=options.with_04_prefix, key_form=key_form)
    str_key = wrap_key(SM4_KEY, PUBLIC, options=options)
    assert unwrap_key(str_key, PRIVATE, options=options) == SM4_KEY
    inner = sm2_decrypt(b64decode(str_key), PRIVATE, options=options)
    assert inner == (SM4_KEY if key_form == "raw" else SM4_KEY.hex().encode("ascii"))


def test_unwrap_hex_key_in_either_case() -> None:
    options = CryptoOptions(key_form="hex")
    str_key = b64encode(sm2_encrypt(SM4_KEY.hex().upper().encode(), PUBLIC, options=options))
    assert unwrap_key(str_key, PRIVATE, options=options) == SM4_KEY


@pytest.mark.parametrize(
    ("wrapped_as", "read_as", "hint"),
    [
        pytest.param("hex", "raw", "uses key_form='hex'", id="hex-read-as-raw"),
        pytest.param("raw", "hex", "uses key_form='raw'", id="raw-read-as-hex"),
    ],
)
def test_unwrap_with_the_wrong_key_form(
    wrapped_as: crypto.KeyForm, read_as: crypto.KeyForm, hint: str
) -> None:
    str_key = wrap_key(SM4_KEY, PUBLIC, options=CryptoOptions(key_form=wrapped_as))
    with pytest.raises(KeyLengthError, match=hint):
        unwrap_key(str_key, PRIVATE, options=CryptoOptions(key_form=read_as))


def test_unwrap_with_the_wrong_private_key() -> None:
    with pytest.raises(WrongKeyError):
        unwrap_key(wrap_key(SM4_KEY, PUBLIC), OTHER_PRIVATE)


def test_wrap_refuses_a_wrong_length_key() -> None:
    with pytest.raises(KeyLengthError, match="is 15 bytes"):
        wrap_key(SM4_KEY[:15], PUBLIC)


# --------------------------------------------------------------------------------------------
# CSPRNG
# --------------------------------------------------------------------------------------------


def test_sm2_k_comes_from_secrets_randbelow(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_randbelow(bound: int) -> int:
        calls.append(bound)
        return STD_K - 1  # the module adds 1: k in [1, n-1]

    monkeypatch.setattr(secrets, "randbelow", fake_randbelow)
    ciphertext = sm2_encrypt(STD_MESSAGE, STD_PUBLIC)
    assert calls == [CURVE.n - 1]
    assert ciphertext.hex().upper() == STD_C1 + STD_C3 + STD_C2


def test_keypair_comes_from_secrets_randbelow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbelow", lambda bound: int(STD_PRIVATE, 16) - 1)
    assert generate_keypair() == (STD_PRIVATE.lower(), STD_PUBLIC.lower())


def test_no_module_level_random_is_used() -> None:
    assert "random" not in vars(crypto)
    assert not any(getattr(value, "__name__", "") == "random" for value in vars(crypto).values())


def test_session_key_comes_from_secrets_token_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_token_bytes(size: int) -> bytes:
        calls.append(size)
        return SM4_KEY

    monkeypatch.setattr(secrets, "token_bytes", fake_token_bytes)
    session = KeyRing(public_key=PUBLIC).current()
    assert calls == [16]
    assert session.key == SM4_KEY
    assert unwrap_key(session.str_key, PRIVATE) == SM4_KEY


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("mode", "C2C3C1", id="mode"),
        pytest.param("key_form", "base64", id="key_form"),
        pytest.param("text_encoding", "latin-1", id="text_encoding"),
        pytest.param("with_04_prefix", "yes", id="with_04_prefix"),
    ],
)
def test_options_refuse_unknown_values(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"CryptoOptions.{field}"):
        CryptoOptions(**{field: value})


def test_options_are_frozen_and_keyword_only() -> None:
    options = CryptoOptions()
    assert (options.mode, options.with_04_prefix, options.key_form, options.text_encoding) == (
        "C1C3C2",
        True,
        "raw",
        "utf-8",
    )
    with pytest.raises(FrozenInstanceError):
        options.mode = "C1C2C3"
    with pytest.raises(TypeError):
        CryptoOptions("C1C2C3")


# --------------------------------------------------------------------------------------------
# Session keys
# --------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_str_key_is_wrapped_once_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    wraps: list[bytes] = []
    real_wrap = crypto.wrap_key

    def counting_wrap(key: bytes, public_key: str | bytes, *, options: CryptoOptions | None = None) -> str:
        wraps.append(key)
        return real_wrap(key, public_key, options=options)

    monkeypatch.setattr(crypto, "wrap_key", counting_wrap)
    ring = KeyRing(public_key=PUBLIC, max_uses=10)
    sessions = [ring.current() for _ in range(5)]
    assert len(wraps) == 1
    assert all(s is sessions[0] for s in sessions)
    assert sessions[0].uses == 5


def test_key_rotates_after_max_uses() -> None:
    ring = KeyRing(public_key=PUBLIC, max_uses=3, max_age_seconds=None)
    first = [ring.current() for _ in range(3)]
    fourth = ring.current()
    assert first[0] is first[1] is first[2]
    assert fourth is not first[0]
    assert fourth.key != first[0].key and fourth.str_key != first[0].str_key
    assert ring.rotations == 2
    assert unwrap_key(fourth.str_key, PRIVATE) == fourth.key


def test_key_rotates_after_max_age() -> None:
    clock = FakeClock()
    ring = KeyRing(public_key=PUBLIC, max_uses=None, max_age_seconds=10, clock=clock)
    first = ring.current()
    clock.now += 9.9
    assert ring.current() is first
    clock.now += 0.1
    second = ring.current()
    assert second is not first and second.key != first.key and second.str_key != first.str_key


def test_forced_rotation() -> None:
    ring = KeyRing(public_key=PUBLIC)
    first = ring.current()
    assert ring.rotate() is not first
    assert ring.current() is not first


def test_key_ring_is_thread_safe() -> None:
    ring = KeyRing(public_key=PUBLIC, max_uses=7)
    seen: list[SessionKey] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            session = ring.current()
            with lock:
                seen.append(session)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    distinct = {id(s): s for s in seen}.values()
    assert all(s.uses <= 7 for s in distinct)
    assert sum(s.uses for s in distinct) == 400
    assert len(distinct) == ring.rotations == -(-400 // 7)
    assert len({s.key for s in distinct}) == len(distinct)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"max_uses": None, "max_age_seconds": None}, "must not be reused for ever", id="unbounded"
        ),
        pytest.param({"max_uses": 0}, "positive integer", id="zero-uses"),
        pytest.param({"max_uses": 2.5}, "positive integer", id="float-uses"),
        pytest.param({"max_age_seconds": 0}, "positive", id="zero-age"),
    ],
)
def test_key_ring_refuses_bad_windows(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyRing(public_key=PUBLIC, **kwargs)


def test_key_ring_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        KeyRing(PUBLIC)


def test_keys_never_show_in_repr_str_or_pickle() -> None:
    ring = KeyRing(public_key=PUBLIC)
    session = ring.current()
    for text in (repr(session), str(session), f"{session}", repr(ring), str([session])):
        assert session.key.hex() not in text.lower()
        assert repr(session.key) not in text
        assert "hidden" in text or "KeyRing" in text
    for obj in (session, ring):
        with pytest.raises(TypeError, match="must not be pickled"):
            pickle.dumps(obj)
        with pytest.raises(TypeError, match="must not be pickled"):
            copy.copy(obj)


def test_session_encrypts_for_the_platform() -> None:
    ring = KeyRing(public_key=PUBLIC, options=CryptoOptions(text_encoding="gbk", key_form="hex"))
    session = ring.current()
    platform_key = unwrap_key(session.str_key, PRIVATE, options=ring.options)
    payload = session.encrypt_text("<root>检验报告</root>")
    assert sm4_decrypt(payload, platform_key) == "<root>检验报告</root>".encode("gbk")
    answer = sm4_encrypt_text("ok:已接收", platform_key, encoding="gbk")
    assert session.decrypt_text(answer) == "ok:已接收"
    assert session.decrypt(session.encrypt(b"\x00\x01")) == b"\x00\x01"
