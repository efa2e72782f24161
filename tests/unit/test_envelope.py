"""The envelope: strCredential, SM4 + Base64 of payload and credential, strKey via SM2, both sides."""

from __future__ import annotations

import base64
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from hurren import crypto
from hurren.platform.envelope import Credential, Envelope, UnsealError, open_request, seal_answer, unwrap
from hurren.platform.exceptions import AnswerError, ConfigurationError

PRIVATE, PUBLIC = crypto.generate_keypair()
OTHER_PRIVATE, OTHER_PUBLIC = crypto.generate_keypair()
VISITOR_KEY = "s3cr3t-Visitor-Key"
VISITOR_CODE = "visitor-007"
CREDENTIAL = Credential(
    org_code="457759922", org_name="昌吉市人民医院", visitor_code=VISITOR_CODE, visitor_key=VISITOR_KEY
)
PAYLOAD = b'<?xml version="1.0" encoding="UTF-8"?>\n<root><lab_exam_report/></root>'


def envelope(**kwargs: object) -> Envelope:
    kwargs.setdefault("xml_declaration", True)
    return Envelope(credential=CREDENTIAL, public_key=kwargs.pop("public_key", PUBLIC), **kwargs)


def platform_open(
    sealed_payload: str,
    sealed_credential: str,
    str_key: str,
    *,
    private: str = PRIVATE,
    options: crypto.CryptoOptions | None = None,
):
    key = unwrap(str_key, private, options=options)
    return open_request(payload=sealed_payload, credential=sealed_credential, key=key, options=options)


def assert_no_secrets(message: str, *extra: str) -> None:
    for secret in (VISITOR_KEY, VISITOR_CODE, PRIVATE, OTHER_PRIVATE, *extra):
        assert secret not in message


# --------------------------------------------------------------------------------------------
# credential
# --------------------------------------------------------------------------------------------


def test_credential_xml_is_the_specs() -> None:
    root = etree.fromstring(CREDENTIAL.to_xml(with_declaration=True))
    assert [c.tag for c in root] == ["org", "visitor"]
    assert root.find("org").get("code") == "457759922" and root.find("org").text == "昌吉市人民医院"
    visitor = root.find("visitor")
    assert dict(visitor.attrib) == {"type": "0", "code": VISITOR_CODE, "key": VISITOR_KEY}
    assert b"></visitor>" in CREDENTIAL.to_xml(with_declaration=True)


def test_credential_round_trips_and_matches() -> None:
    back = Credential.from_xml(CREDENTIAL.to_xml(with_declaration=True))
    assert back.matches(CREDENTIAL) and back.org_name == CREDENTIAL.org_name
    assert not back.matches(
        Credential(org_code="457759922", org_name="", visitor_code=VISITOR_CODE, visitor_key="x")
    )


def test_credential_repr_hides_secrets_and_refuses_pickling() -> None:
    assert_no_secrets(repr(CREDENTIAL))
    assert "457759922" in repr(CREDENTIAL)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(CREDENTIAL)


@pytest.mark.parametrize("field", ["org_code", "visitor_code", "visitor_key"])
def test_empty_credential_parts_are_configuration_errors(field: str) -> None:
    values = {"org_code": "1", "org_name": "", "visitor_code": "c", "visitor_key": "k", field: " "}
    with pytest.raises(ConfigurationError, match=f"Credential.{field} is empty"):
        Credential(**values)


def test_credential_with_characters_xml_cannot_carry() -> None:
    with pytest.raises(ConfigurationError, match="visitor_key contains characters XML cannot carry") as info:
        Credential(org_code="1", org_name="", visitor_code="c", visitor_key="pa\x00ss")
    assert "pa" not in str(info.value).split("visitor_key")[0]


@pytest.mark.parametrize(
    "data,message",
    [
        (b"<root/>", "expected <root><org"),
        (b"<root><org", "not well-formed"),
        (b'<root><org code="">x</org><visitor code="c" key="k"/></root>', "org_code is empty"),
    ],
    ids=["no-parts", "malformed", "empty-org"],
)
def test_unreadable_credentials_name_the_parameter(data: bytes, message: str) -> None:
    with pytest.raises(UnsealError, match=message) as info:
        Credential.from_xml(data)
    assert info.value.part == "strCredential"


# --------------------------------------------------------------------------------------------
# seal / open
# --------------------------------------------------------------------------------------------


def test_sealed_call_opens_on_the_platform_side() -> None:
    sealed = envelope().seal(PAYLOAD)
    assert set(sealed.params("strReportInfo")) == {"strReportInfo", "strCredential", "strKey"}
    opened = platform_open(sealed.payload, sealed.credential, sealed.key)
    assert opened.payload == PAYLOAD
    assert opened.credential.matches(CREDENTIAL)
    assert opened.key == sealed.session.key
    assert_no_secrets(repr(sealed) + repr(opened), sealed.session.key.hex())


def test_session_key_and_credential_are_reused_within_the_window() -> None:
    env = envelope(key_max_uses=3)
    first, second, third, fourth = (env.seal(PAYLOAD) for _ in range(4))
    assert first.key == second.key == third.key != fourth.key
    assert first.credential == second.credential == third.credential != fourth.credential
    assert first.payload == second.payload  # SM4-ECB: same key, same text, same ciphertext


def test_rotate_starts_a_new_key() -> None:
    env = envelope()
    before = env.seal(PAYLOAD)
    env.rotate()
    assert env.seal(PAYLOAD).key != before.key


def test_sealing_from_many_threads() -> None:
    env = envelope(key_max_uses=5)
    payloads = [f"<root><n>{i}</n></root>".encode() for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        sealed = list(pool.map(env.seal, payloads))
    for data, s in zip(payloads, sealed, strict=True):
        assert platform_open(s.payload, s.credential, s.key).payload == data


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(max_size=300))
def test_property_seal_open_round_trip(payload: bytes) -> None:
    sealed = envelope().seal(payload)
    assert platform_open(sealed.payload, sealed.credential, sealed.key).payload == payload


def test_answers_decrypt_with_the_calls_key() -> None:
    env = envelope()
    sealed = env.seal(PAYLOAD)
    answer = seal_answer("<root><item a='维'/></root>".encode(), sealed.session.key)
    assert (
        env.open_answer(answer, sealed.session, method="GetLabInfo") == "<root><item a='维'/></root>".encode()
    )


# --------------------------------------------------------------------------------------------
# bad input, platform side: every failure names the parameter and what to check
# --------------------------------------------------------------------------------------------


def test_wrong_private_key() -> None:
    sealed = envelope().seal(PAYLOAD)
    with pytest.raises(UnsealError, match="strKey: SM2 C3 check failed: the private key") as info:
        platform_open(sealed.payload, sealed.credential, sealed.key, private=OTHER_PRIVATE)
    assert info.value.part == "strKey"
    assert_no_secrets(str(info.value), sealed.session.key.hex())


@pytest.mark.parametrize(
    "client,platform,message",
    [
        (crypto.CryptoOptions(mode="C1C2C3"), crypto.CryptoOptions(), "laid out as C1C2C3"),
        (crypto.CryptoOptions(with_04_prefix=False), crypto.CryptoOptions(), "without the 04 prefix"),
        (crypto.CryptoOptions(key_form="hex"), crypto.CryptoOptions(), "key_form='hex'"),
    ],
    ids=["mode", "04-prefix", "key-form"],
)
def test_wrong_ciphertext_layout(
    client: crypto.CryptoOptions, platform: crypto.CryptoOptions, message: str
) -> None:
    sealed = envelope(crypto_options=client).seal(PAYLOAD)
    with pytest.raises(UnsealError, match=message) as info:
        platform_open(sealed.payload, sealed.credential, sealed.key, options=platform)
    assert info.value.part == "strKey"


def _cut(text: str, n: int) -> str:
    return base64.b64encode(base64.b64decode(text)[:-n]).decode()


@pytest.mark.parametrize(
    "mangle,part,message",
    [
        (lambda s: (s.payload[:-3] + "!!!", s.credential, s.key), "strReportInfo", "not valid Base64"),
        (
            lambda s: (
                s.payload.replace("+", " ", 1) if "+" in s.payload else s.payload[:5] + " " + s.payload[6:],
                s.credential,
                s.key,
            ),
            "strReportInfo",
            "spaces",
        ),
        (lambda s: (s.payload, s.credential[:-2], s.key), "strCredential", "Base64"),
        (
            lambda s: (_cut(s.payload, 5), s.credential, s.key),
            "strReportInfo",
            "not a positive multiple of the 16-byte block",
        ),
        (lambda s: ("", s.credential, s.key), "strReportInfo", "0 bytes"),
        (lambda s: (s.payload, s.credential, s.key[:-3]), "strKey", "Base64"),
        (lambda s: (s.payload, s.credential, _cut(s.key, 20)), "strKey", "SM2"),
        (lambda s: (s.payload, s.credential, "维吾尔"), "strKey", "non-ASCII"),
    ],
    ids=[
        "payload-bad-base64",
        "payload-space",
        "credential-bad-base64",
        "payload-truncated",
        "payload-empty",
        "key-bad-base64",
        "key-truncated",
        "key-not-ascii",
    ],
)
def test_mangled_requests_name_the_parameter(mangle, part: str, message: str) -> None:
    sealed = envelope().seal(PAYLOAD)
    payload, credential, key = mangle(sealed)
    with pytest.raises(UnsealError, match=message) as info:
        platform_open(payload, credential, key)
    assert info.value.part == part
    assert_no_secrets(str(info.value), sealed.session.key.hex())


def test_payload_encrypted_with_another_sm4_key() -> None:
    sealed = envelope().seal(PAYLOAD)
    foreign = crypto.b64encode(crypto.sm4_encrypt(PAYLOAD, bytes(range(16))))
    with pytest.raises(UnsealError, match="strReportInfo: SM4 PKCS#7 padding is invalid"):
        platform_open(foreign, sealed.credential, sealed.key)


# --------------------------------------------------------------------------------------------
# bad input, caller's side
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer,message",
    [
        ("!!not-base64!!", "neither ok/error nor Base64"),
        ("QUJD", "with this call's SM4 key: SM4 ciphertext is 3 bytes"),
        ("", "0 bytes"),
    ],
    ids=["bad-base64", "truncated", "empty"],
)
def test_undecryptable_answers_are_answer_errors(answer: str, message: str) -> None:
    env = envelope()
    sealed = env.seal(PAYLOAD)
    with pytest.raises(AnswerError, match=message) as info:
        env.open_answer(answer, sealed.session, method="GetLabInfo")
    assert info.value.method == "GetLabInfo" and info.value.retryable
    assert_no_secrets(str(info.value), sealed.session.key.hex())


def test_answer_under_another_key() -> None:
    env = envelope()
    sealed = env.seal(PAYLOAD)
    answer = seal_answer(b"<root/>", bytes(16))
    with pytest.raises(AnswerError, match="cannot decrypt the GetLabInfo answer with this call's SM4 key"):
        env.open_answer(answer, sealed.session, method="GetLabInfo")


@pytest.mark.parametrize(
    "public_key,message",
    [
        ("zz", "non-hex|neither hex"),
        ("04" + "00" * 64, "not a point|curve"),
        ("", "SM2 public key"),
        (PRIVATE, "public key"),
    ],
    ids=["not-hex", "off-curve", "empty", "a-private-key"],
)
def test_unusable_public_key_is_a_configuration_error(public_key: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        envelope(public_key=public_key)
    assert_no_secrets(str(info.value))


def test_key_ring_bounds_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_uses and/or max_age_seconds"):
        envelope(key_max_uses=None, key_max_age_s=None)


def test_seal_takes_bytes() -> None:
    with pytest.raises(TypeError, match="as bytes"):
        envelope().seal("<root/>")


def test_envelope_is_thread_safe_with_rotation() -> None:
    env = envelope(key_max_uses=2)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                s = env.seal(PAYLOAD)
                assert platform_open(s.payload, s.credential, s.key).payload == PAYLOAD
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------------------------
# D24: ECB under one session key, and what the key ring bounds
# --------------------------------------------------------------------------------------------


def _first_blocks(sealed: list[str]) -> list[bytes]:
    return [base64.b64decode(s)[:16] for s in sealed]


def test_ecb_repeats_equal_blocks_only_within_one_key_and_the_ring_bounds_how_many_d24() -> None:
    """The spec mandates SM4-ECB: under one key, equal 16-byte plaintext blocks at the same offsets
    give equal ciphertext blocks. Every payload starts with the same bytes (the declaration, or
    ``<root><labmaster``), so within one key window their first blocks are equal; so would be any
    other block two payloads share at an aligned offset. The key ring bounds that to
    ``key_max_uses`` payloads (and ``key_max_age_s`` seconds): across keys nothing compares."""
    uses = 4
    env = Envelope(credential=CREDENTIAL, public_key=PUBLIC, key_max_uses=uses, key_max_age_s=None,
                   xml_declaration=True)  # fmt: skip
    payloads = [PAYLOAD.replace(b"<lab_exam_report/>", f"<n>{i}</n>".encode()) for i in range(3 * uses)]
    sealed = [env.seal(p) for p in payloads]
    firsts = _first_blocks([s.payload for s in sealed])
    groups = [firsts[i : i + uses] for i in range(0, len(firsts), uses)]
    assert all(len(set(g)) == 1 for g in groups)  # the leak: one key, one prefix, one first block
    assert len({g[0] for g in groups}) == 3  # the bound: a new key, nothing in common
    assert len({s.key for s in sealed}) == 3 and max(firsts.count(f) for f in firsts) == uses
    # the same holds for any aligned block two payloads share, not only the first
    same_tail = [
        b"<root>" + b"A" * 10 + b"0123456789abcdef" + b"</root>",
        b"<root>" + b"B" * 10 + b"0123456789abcdef" + b"</root>",
    ]
    one_key = crypto.SessionKey.create(public_key=PUBLIC)
    a, b = (one_key.encrypt(p) for p in same_tail)
    assert a[:16] != b[:16] and a[16:32] == b[16:32]


def test_the_key_ring_also_bounds_a_window_by_age_d24() -> None:
    now = [0.0]
    ring = crypto.KeyRing(public_key=PUBLIC, max_uses=None, max_age_seconds=600, clock=lambda: now[0])
    first = ring.current()
    now[0] = 599.0
    assert ring.current() is first
    now[0] = 600.0
    assert ring.current() is not first and ring.rotations == 2
