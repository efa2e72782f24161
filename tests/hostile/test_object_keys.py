"""Object keys built from source values (issue #17): safe for every S3 implementation, and the same
as before for every value that made a storable key before.

A ``report_form_no`` of ``..`` once made a key the minio client refuses, so its whole batch failed
on every retry. ``hurren.load.key_segment`` now percent-encodes a value as before and replaces only
segments no S3 can take (empty, ``.``, ``..``, over 255 bytes) by a readable prefix and a hash.
The property test puts keys from arbitrary values into the real S3 server and reads them back.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from minio.helpers import check_object_name

from hurren import load
from tests.fixtures.services import remove_bucket

SHA = hashlib.sha256(b"%PDF-1.4").hexdigest()
ANY_TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=200)


def old_key(org: str, rfn: str) -> str:
    """The key before issue #17 (what stored rows point at)."""
    return f"reports/{quote(org, safe='')}/labmaster/{quote(rfn, safe='')}/{SHA}.pdf"


def assert_safe(key: str) -> None:
    check_object_name(key)  # the minio client: no '.'/'..' segment, not empty
    parts = key.split("/")
    assert len(parts) == 5, key
    assert all(parts) and all(len(p.encode()) <= load.S3_SEGMENT_MAX for p in parts), key
    assert len(key.encode()) <= load.KEY_MAX  # what the store's column holds (S3: 1024)
    assert key.isascii() and key.isprintable(), key  # one encoding: percent-encoded UTF-8


@pytest.mark.parametrize(
    "value",
    [".", "..", "", "...", "%2e", "%2E%2e", "a/../b", "/", "//", "a" * 256, "检" * 42, "检" * 200,
     "\x00\x01\x1b", "\u202e1878", "\ufeff", "\ud800", "😀" * 100, " ", "~", "..%2F..", "\\..\\"],
    ids=lambda v: repr(v)[:24],
)  # fmt: skip
def test_hostile_segments_make_safe_keys(value: str) -> None:
    key = load.pdf_object_key("457759922", "labmaster", value, SHA)
    assert_safe(key)
    assert load.pdf_object_key(value, "labmaster", "R1", SHA).count("/") == 4  # org codes too
    assert load.pdf_object_key("457759922", "labmaster", value, SHA) == key  # stable


def test_unsafe_segments_keep_a_readable_prefix_and_a_hash() -> None:
    digest = hashlib.sha256(b"..").hexdigest()[:32]
    assert load.key_segment("..") == f"..~{digest}"
    assert load.key_segment(".").startswith(".~") and load.key_segment("").startswith("~")
    long = load.key_segment("检" * 42)  # 378 encoded bytes
    assert long.startswith(quote("检", safe="") * 21) and len(long) <= load.S3_SEGMENT_MAX
    assert "%" not in long[long.rindex("~") - 2 :]  # never half an escape before the hash
    assert load.key_segment("a" * 255) == "a" * 255  # at the limit: as it was
    assert load.key_segment("a" * 256) != load.key_segment("a" * 257)


def test_a_key_longer_than_the_store_holds_is_made_of_shorter_segments() -> None:
    org, rfn = "!" * 85, "#" * 85  # 255 encoded bytes each: a 599-byte key, never storable before
    key = load.pdf_object_key(org, "labmaster", rfn, SHA)
    assert_safe(key)
    assert key.split("/")[1] == load.key_segment(org, 128) and key.split("/")[3] == load.key_segment(rfn, 128)
    assert (
        load.pdf_object_key("457759922", "labmaster", rfn, SHA).split("/")[3] == "%23" * 85
    )  # fits: as before


@pytest.mark.parametrize(
    "value", ["14437173", "R0001", "%2e", "a/../b", "检验-001", "检" * 28, " x ", "a" * 255, "\u202e"]
)
def test_every_value_that_made_a_storable_key_keeps_it(value: str) -> None:
    assert load.pdf_object_key("457759922", "labmaster", value, SHA) == old_key("457759922", value)


@settings(max_examples=300, deadline=None)
@given(value=ANY_TEXT)
def test_keys_are_unchanged_where_they_were_valid_and_safe_everywhere(value: str) -> None:
    key = load.pdf_object_key("457759922", "labmaster", value, SHA)
    assert_safe(key)
    try:
        before = quote(value, safe="")
    except UnicodeEncodeError:  # a lone surrogate: the old key function raised
        return
    if before not in ("", ".", "..") and len(before) <= load.S3_SEGMENT_MAX:  # then the key fits 512
        assert key == old_key("457759922", value)
        assert unquote(key.split("/")[3]) == value  # and it decodes to the value


# --- the real S3 server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(s3) -> Iterator[tuple[object, str]]:
    name = f"hurren-keys-{secrets.token_hex(4)}"
    s3.client.make_bucket(name)
    yield s3.client, name
    remove_bucket(s3.client, name)


@pytest.mark.services
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(org=ANY_TEXT, rfn=ANY_TEXT)
def test_every_key_round_trips_through_real_s3(bucket, org: str, rfn: str) -> None:
    client, name = bucket
    key = load.pdf_object_key(org, "labmaster", rfn, SHA)
    data = secrets.token_bytes(16)
    client.put_object(name, key, io.BytesIO(data), len(data))
    try:
        assert [o.object_name for o in client.list_objects(name, prefix=key)] == [key]
        assert client.get_object(name, key).read() == data
    finally:
        client.remove_object(name, key)
