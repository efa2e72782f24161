"""Small, valid PDF 1.4 files built by hand, deterministically, and a tiny structural check.

One page, the standard Helvetica font (nothing embedded), text in ASCII (Chinese would need an
embedded CID font, which would make every file hundreds of KB). ``pad_to`` adds an unreferenced
stream of pseudo-random bytes so benchmarks can ask for files of a realistic size that neither
PostgreSQL's TOAST nor anything else can compress away.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

__all__ = ["build_pdf", "pdf_problems"]

_LINES_PER_PAGE = 64


def _literal(text: str) -> bytes:
    """A PDF literal string: ASCII only (anything else becomes ?), with \\ ( ) escaped."""
    ascii_ = text.encode("ascii", errors="replace")
    return b"(" + ascii_.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def build_pdf(
    title: str,
    lines: Sequence[str],
    *,
    created: str = "",
    pad_to: int = 0,
    pad_seed: str = "",
) -> bytes:
    """A one-page PDF 1.4 showing ``title`` and ``lines``.

    ``created`` is a PDF date (``D:20261124103000+08'00'``) for the Info dictionary; ``pad_to``
    is the total size in bytes to reach (approximately, never less than the unpadded file).
    """
    text = [b"BT /F1 14 Tf 50 800 Td ", _literal(title), b" Tj ET\nBT /F1 9 Tf 11 TL 50 775 Td\n"]
    for line in lines[:_LINES_PER_PAGE]:
        text += [_literal(line), b" Tj T*\n"]
    text.append(b"ET\n")
    content = b"".join(text)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Title "
        + _literal(title)
        + b" /Producer (hurren_testkit.synthetic)"
        + (b" /CreationDate " + _literal(created) if created else b"")
        + b" >>",
    ]
    body = _assemble(objects)
    if pad_to > len(body) + 64:
        pad = random.Random(f"pdf-pad|{pad_seed}").randbytes(pad_to - len(body) - 64)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(pad), pad))
        body = _assemble(objects)
    return body


def _assemble(objects: list[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


_STARTXREF = re.compile(rb"startxref\s+(\d+)\s+%%EOF\s*$")
_XREF_HEAD = re.compile(rb"xref\s+0 (\d+)\s+")


def pdf_problems(data: bytes) -> list[str]:
    """What is structurally wrong with ``data`` as a classic-xref PDF; ``[]`` when nothing is.

    Checks the header, the ``%%EOF`` marker, that ``startxref`` points at the xref table, and that
    every in-use xref entry points at ``N 0 obj`` for its own object number N.
    """
    problems = []
    if not data.startswith(b"%PDF-1."):
        problems.append("does not start with %PDF-1.")
    tail = _STARTXREF.search(data[-64:])
    if not tail:
        return [*problems, "no startxref/%%EOF at the end"]
    xref = int(tail.group(1))
    head = _XREF_HEAD.match(data, xref)
    if not head:
        return [*problems, f"startxref {xref} does not point at an xref table"]
    count, pos = int(head.group(1)), head.end()
    for number in range(count):
        entry = data[pos + 20 * number : pos + 20 * number + 20]
        if len(entry) != 20 or entry[17:18] not in (b"n", b"f"):
            problems.append(f"xref entry {number} is malformed: {entry!r}")
            continue
        if entry[17:18] == b"n":
            offset = int(entry[:10])
            if not data.startswith(b"%d 0 obj" % number, offset):
                problems.append(f"xref entry {number} points at {offset}, which is not object {number}")
    if b"/Root" not in data[pos + 20 * count :]:
        problems.append("trailer has no /Root")
    return problems
