"""An independent reading of the spec's plain text, used to check our transcription of it.

It parses the field tables and the appendix dictionaries straight from the Chinese original
(``../shared/spec/000_*.txt``), with as little interpretation as possible, so that a typo in
``include/spec`` or ``include/dictionaries`` shows up as a difference.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spec_path() -> Path:
    """The spec text: $HURREN_SPEC_TEXT, else ``../shared/spec`` beside the checkout."""
    if env := os.environ.get("HURREN_SPEC_TEXT"):
        return Path(env)
    found = sorted((ROOT.parent / "shared" / "spec").glob("000_*.txt"))
    if not found:
        raise FileNotFoundError(
            "spec text not found: expected ../shared/spec/000_*.txt beside the checkout, "
            "or set HURREN_SPEC_TEXT to its path"
        )
    return found[0]


def missing() -> str | None:
    """Why the spec text cannot be read here, or None when it can: the tests that compare our
    transcription with it are skipped with this reason (failed where ``HURREN_REQUIRE_SPEC_TEXT``
    is set, as in CI: ``tests/conftest.py``)."""
    try:
        path = spec_path()
    except FileNotFoundError as exc:
        return str(exc)
    if not path.is_file():
        return f"spec text not found: HURREN_SPEC_TEXT={path} is not a file"
    return None


@cache
def lines() -> tuple[str, ...]:
    return tuple(spec_path().read_text(encoding="utf-8").splitlines())


def section(start: str, end: str | None, *, after: str | None = None) -> list[str]:
    """Lines strictly between the first line starting with ``start`` (after ``after``) and ``end``
    (or the end of the text)."""
    text = lines()
    i = 0
    if after is not None:
        i = next(n for n, line in enumerate(text) if line.startswith(after))
    i = next(n for n in range(i, len(text)) if text[n].startswith(start))
    j = next((n for n in range(i + 1, len(text)) if end and text[n].startswith(end)), len(text))
    return list(text[i + 1 : j])


@dataclass(frozen=True)
class SpecRow:
    name: str
    zh_name: str
    type: str
    nullable: str
    note: str
    dictionary: str


_FIELD = re.compile(r"^([A-Za-z_]+)\t")


def field_rows(block: list[str]) -> list[SpecRow]:
    """Rows of a report field table: name, Chinese name, type, 空 (Yes/No), note, dictionary."""
    rows = []
    for line in block:
        if not _FIELD.match(line):
            continue
        cells = [c.strip() for c in line.split("\t")] + [""] * 6
        if cells[0] == "英文编码":
            continue
        rows.append(SpecRow(*cells[:6]))
    return rows


def view_rows(block: list[str]) -> list[SpecRow]:
    """Rows of a PACS view table: element id, NAME, Chinese name, type, required (Y/N), note."""
    rows = []
    for line in block:
        cells = [c.strip() for c in line.split("\t")] + [""] * 6
        if not re.fullmatch(r"[A-Z_]+", cells[1]) or cells[1] == "":
            continue
        rows.append(SpecRow(cells[1], cells[2], cells[3], "No" if cells[4] == "Y" else "Yes", cells[5], ""))
    return rows


def filter_elements(block: list[str]) -> list[str]:
    """Element names of a ``<root><x>…</x></root>`` filter example."""
    return re.findall(r"^\s*<([a-z_]+)>", "\n".join(block), flags=re.M)


def dictionary_rows(name: str) -> list[tuple[str, str]]:
    """(code, name) rows of an appendix dictionary written as ``NAME<TAB>code<TAB>label`` lines."""
    out = []
    for line in lines():
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) >= 3 and cells[0] == name:
            out.append((cells[1], cells[2]))
    return out


def table_rows(start: str, end: str | None) -> list[tuple[str, str]]:
    """(code, label) rows of the two-column appendix tables (Modality, reject reasons)."""
    out = []
    for line in section(start, end):
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) == 2 and cells[0] not in ("设备类型", "编码") and cells[0]:
            out.append((cells[0], cells[1]))
    return out


# Where each entity's table stands in the text: (start heading, end heading, after).
ENTITY_SECTIONS: dict[str, tuple[str, str, str | None]] = {
    "labmaster": ("检验报告主节点 labmaster", "检验报告子节点 lab_subitem", None),
    "lab_subitem": ("检验报告子节点 lab_subitem", "1.2.2.2 检验报告作废", None),
    "exammaster": ("检查报告主节点 exammaster", "检查报告子节点 exam_subitem", None),
    "exam_subitem": ("检查报告子节点 exam_subitem", "1.2.2.4 检查报告作废", None),
    "lab_exam_report": ("检查检验日报表", "1.3 检查检验互认方案", None),
    "sehr_accept_record": ("参数说明:", "1.4.2.4 检验报告结果引用", "1.4.2.3 保存检查检验互认结果"),
    "sehr_quote_record": ("引用结果表", "1.5 网络及硬件条件", "1.4.2.6 定时/定频提交引用结果"),
    "v_web_jcjg": ("2.3.1 PACS 查询视图", "2.3.2 PACS 统计视图", None),
    "v_web_jctj": ("2.3.2 PACS 统计视图", "2.4 已建云影像平台对接", None),
}

FILTER_SECTIONS: dict[str, tuple[str, str, str | None]] = {
    "lab_void_filter": ("参数格式:strFilter:", "成功返回", "1.2.2.2 检验报告作废"),
    "exam_void_filter": ("参数格式:strFilter:", "成功返回", "1.2.2.4 检查报告作废"),
    "check_lab_list_filter": ("参数格式:strFilter:", "成功返回", "1.3.2.1 获取近期检查检验记录"),
    "check_lab_info_filter": ("strFilter:", "成功返回", "1.3.2.2 获取近期互认项目明细信息"),
    "lab_info_filter": ("strFilter:", "成功返回", "1.4.2.4 检验报告结果引用"),
    "exam_info_filter": ("strFilter:", "成功返回", "1.4.2.5 检查报告结果引用"),
}


def entity_rows(entity: str) -> list[SpecRow]:
    start, end, after = ENTITY_SECTIONS[entity]
    block = section(start, end, after=after)
    return view_rows(block) if entity.startswith("v_web_") else field_rows(block)


def filter_rows(entity: str) -> list[str]:
    start, end, after = FILTER_SECTIONS[entity]
    return filter_elements(section(start, end, after=after))
