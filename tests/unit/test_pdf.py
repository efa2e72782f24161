"""Report PDFs checked and decoded once after extraction (hurren.pdf): the same verdicts as the
validation's check of the Base64 text, and no Base64 text left in the frame for a good PDF."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hurren import pdf, rules
from hurren.spec import DEFAULT_OPTIONS
from hurren.validation import validate_reports
from tests.unit.test_validation import LM, frames, lab_report

GOOD = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
B64 = base64.b64encode(GOOD).decode()
VALUES = {
    "good": B64,
    "good, MIME line breaks": "\r\n".join(B64[i : i + 76] for i in range(0, len(B64), 76)),
    "missing": None,
    "blank": " \n ",
    "not Base64": B64[:-3] + "*==",
    "Base64 of a text": base64.b64encode(b"hello, not a PDF at all").decode(),
    "no %%EOF": base64.b64encode(GOOD[:-8] + b"\n").decode(),
    "too large": base64.b64encode(GOOD + b" " * 30_000).decode(),
    "a form feed inside": B64[:40] + "\f" + B64[40:],
}
MAX = 20_000


def test_read_answers_outcome_size_and_the_decoded_pdf() -> None:
    outcome, size, found = pdf.read(VALUES["good, MIME line breaks"], MAX)
    assert (outcome, size) == ("ok", len(GOOD)) and found is not None
    assert (found.data, found.sha256) == (GOOD, hashlib.sha256(GOOD).hexdigest())
    assert pdf.read(VALUES["missing"], MAX) == ("missing", None, None)
    assert pdf.read(VALUES["blank"], MAX) == ("missing", None, None)
    assert pdf.read(VALUES["not Base64"], MAX) == ("not_base64", None, None)
    assert pdf.read(VALUES["a form feed inside"], MAX) == ("not_base64", None, None)
    assert pdf.read(VALUES["Base64 of a text"], MAX)[0] == "not_pdf"
    assert pdf.read(VALUES["no %%EOF"], MAX)[0] == "no_eof"
    assert pdf.read(VALUES["too large"], MAX)[:2] == ("too_large", len(GOOD) + 30_000)
    assert pdf.read(found, MAX) == ("ok", len(GOOD), found)  # already decoded: taken as it is


def test_a_pdf_shows_neither_its_bytes_nor_its_base64_in_a_log_line() -> None:
    found = pdf.Pdf.of(GOOD)
    assert str(len(GOOD)) in repr(found) and "%PDF" not in repr(found) and B64[:20] not in str(found)
    assert found.base64() == B64


def test_detach_keeps_the_text_of_a_failing_pdf_and_decodes_the_good_ones() -> None:
    reports = [lab_report(i, pdf=v) for i, v in enumerate(VALUES.values(), start=1)]
    masters, _ = frames(*reports)
    out = pdf.detach(masters, "pdf", MAX)
    assert list(out.index) == list(masters.index) and masters["pdf"].tolist() == list(VALUES.values())
    by_name = dict(zip(VALUES, zip(out["pdf"], out["__pdf__pdf"], out["pdf_size"], strict=True), strict=True))
    for name in ("good", "good, MIME line breaks"):
        value, outcome, size = by_name[name]
        assert isinstance(value, pdf.Pdf) and value.data == GOOD and (outcome, size) == ("ok", len(GOOD))
    for name in ("not Base64", "Base64 of a text", "no %%EOF", "too large"):
        value, outcome, _ = by_name[name]
        assert value == VALUES[name] and outcome != "ok"
    assert by_name["missing"][1] == by_name["blank"][1] == "missing"
    assert pdf.detach(out, "pdf", MAX) is out  # once


@pytest.mark.parametrize("engine", ["pandas", "gx"])
def test_detached_and_base64_batches_get_the_same_verdicts_and_messages(engine: str) -> None:
    rb = replace(rules.load_rulebook(), pdf_max_bytes=MAX)
    reports = [lab_report(i, pdf=v) for i, v in enumerate(VALUES.values(), start=1)]
    masters, items = frames(*reports)
    as_text = validate_reports(
        masters, items, master_entity=LM, engine=engine, rulebook=rb, options=DEFAULT_OPTIONS
    )
    detached = pdf.detach(masters, "pdf", rb.pdf_max_bytes)
    as_pdf = validate_reports(
        detached, items, master_entity=LM, engine=engine, rulebook=rb, options=DEFAULT_OPTIONS
    )
    cols = ["record_key", "rule", "field", "check", "message"]
    assert as_text.held_keys == as_pdf.held_keys and len(as_text.held_keys) == 7
    assert sorted(as_text.failures[cols].itertuples(index=False)) == sorted(
        as_pdf.failures[cols].itertuples(index=False)
    )


OLD_B64 = re.compile(r"\A(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="QUJD+/=a9\né*-_ ", max_size=14))
def test_is_base64_answers_as_the_regular_expression_it_replaced(t: str) -> None:
    assert pdf.is_base64(t) == bool(OLD_B64.search(t))
