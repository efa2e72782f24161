"""Property-based hostile input: the XML builders, the answer readers and the crypto decoders
never fail with anything but their documented exceptions, whatever text or bytes they are given."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hurren import crypto, spec
from hurren.platform import xml as px
from hurren.platform.answers import Ack, read_query, read_status, read_submit
from hurren.platform.envelope import Credential, Envelope
from hurren.platform.exceptions import AnswerError, BusinessError, PayloadError
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import samples

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAB_MASTER, LAB_ITEMS = samples.lab_report(items=2)
TEXT_FIELDS = {
    e: [f.name for f in spec.entity(e).fields if f.type == "text" and f.name not in spec.entity(e).key]
    for e in ("labmaster", "lab_subitem")
}
# Any Unicode, including surrogates, controls and non-characters (what a bad driver may hand us).
ANY_TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=60)

PRIVATE, PUBLIC = crypto.generate_keypair()
SESSION = crypto.KeyRing(public_key=PUBLIC).current()
KEY = bytes(range(16))


@PROPS
@given(field=st.sampled_from(TEXT_FIELDS["labmaster"]), value=ANY_TEXT)
def test_master_text_builds_and_round_trips_or_names_the_field(field: str, value: str) -> None:
    master = {**LAB_MASTER, field: value}
    try:
        data = px.build_lab_report(master, LAB_ITEMS, options=DEFAULT_OPTIONS)
    except PayloadError as exc:
        assert exc.entity == "labmaster" and exc.field == field
        assert value not in str(exc) or len(value) < 2  # the culprit is named, its value is not quoted
        return
    assert px.parse_records(px.parse_xml(data))["labmaster"][0][field] == value


@PROPS
@given(field=st.sampled_from(TEXT_FIELDS["lab_subitem"]), value=ANY_TEXT, index=st.integers(0, 1))
def test_item_text_builds_and_round_trips_or_names_the_field(field: str, value: str, index: int) -> None:
    items = [dict(i) for i in LAB_ITEMS]
    items[index][field] = value
    try:
        data = px.build_lab_report(LAB_MASTER, items, options=DEFAULT_OPTIONS)
    except PayloadError as exc:
        assert exc.entity == "lab_subitem" and exc.field == field
        return
    assert px.parse_records(px.parse_xml(data))["lab_subitem"][index][field] == value


@PROPS
@given(value=ANY_TEXT)
def test_check_text_accepts_exactly_what_xml_can_carry(value: str) -> None:
    try:
        assert px.check_text(value, entity="e", field="f") == value
    except PayloadError as exc:
        assert exc.field == "f"


# --- answers -------------------------------------------------------------------------------------

ANSWERS = st.one_of(
    st.just("ok"), st.builds(lambda t: "ok:" + t, ANY_TEXT), st.builds(lambda t: "OK：" + t, ANY_TEXT),
    st.builds(lambda t: "error:" + t, ANY_TEXT), st.builds(lambda t: " Error：" + t, ANY_TEXT),
    ANY_TEXT, st.none(),
)  # fmt: skip


@PROPS
@given(answer=ANSWERS)
def test_submit_answers_give_an_ack_or_a_documented_error(answer: str | None) -> None:
    try:
        ack = read_submit(answer, method="ArchiveAutoReport")
    except (BusinessError, AnswerError) as exc:
        assert exc.method == "ArchiveAutoReport"
        return
    assert isinstance(ack, Ack)


@PROPS
@given(answer=ANSWERS)
def test_status_answers_never_raise_anything_else(answer: str | None) -> None:
    try:
        out = read_status(answer, method="GetCheckLabList")
    except (BusinessError, AnswerError):
        return
    assert out is None or isinstance(out, Ack)


@PROPS
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.builds(lambda t: t.encode("utf-8", "surrogatepass"), ANY_TEXT),
        st.sampled_from(
            [
                b"<root/>",
                b"<root><item a='1'/></root>",
                b"<?xml version='1.0'?><root>",
                b"<!DOCTYPE r [<!ENTITY x 'y'>]><root>&x;</root>",
            ]
        ),
    )
)
def test_query_xml_parses_or_raises_answer_error(data: bytes) -> None:
    try:
        result = read_query(data, method="GetCheckLabList")
    except AnswerError:
        return
    assert isinstance(result.records, dict)


@PROPS
@given(answer=ANY_TEXT)
def test_opening_any_answer_raises_only_answer_error(answer: str) -> None:
    env = Envelope(
        credential=Credential(org_code="1", org_name="o", visitor_code="v", visitor_key="k"),
        public_key=PUBLIC,
        xml_declaration=True,
    )
    try:
        env.open_answer(answer, SESSION, method="GetCheckLabList")
    except AnswerError:
        pass


# --- crypto --------------------------------------------------------------------------------------


def _crypto_only(fn: Any, *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except crypto.CryptoError:
        pass


@PROPS
@given(
    text=st.one_of(
        ANY_TEXT, st.binary(max_size=120), st.text("ABCDEFabcdef0123456789+/=\r\n -_", max_size=80)
    )
)
def test_b64decode_raises_only_crypto_errors(text: str | bytes) -> None:
    _crypto_only(crypto.b64decode, text)


@PROPS
@given(data=st.binary(max_size=130))
def test_sm4_decrypt_raises_only_crypto_errors(data: bytes) -> None:
    _crypto_only(crypto.sm4_decrypt, data, KEY)
    _crypto_only(crypto.sm4_decrypt_text, data, KEY)


@PROPS
@given(data=st.binary(max_size=200))
def test_sm2_decrypt_raises_only_crypto_errors(data: bytes) -> None:
    _crypto_only(crypto.sm2_decrypt, data, PRIVATE)


@PROPS
@given(text=st.one_of(ANY_TEXT, st.binary(max_size=160).map(crypto.b64encode)))
def test_unwrap_key_raises_only_crypto_errors(text: str) -> None:
    _crypto_only(crypto.unwrap_key, text, PRIVATE)


@pytest.mark.parametrize("key", [b"", b"short", bytes(17)])
def test_bad_sm4_keys_are_crypto_errors(key: bytes) -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.sm4_decrypt(bytes(16), key)
