"""Per-hospital code mappings: local codes turned into the spec's standard codes before validation.

Most hospitals send their own department, sex or item codes where the spec wants standard ones
(D10). A hospital's mapping is a TSV, by convention ``include/mappings/<org_code>.tsv``, named by
``mapping_file`` in the sources configuration::

    field                       local_code  std_code  std_name
    participant_dept_std_code   1411        A03.01    呼吸内科专业
    sex_code                    M           1         男性
    lab_subitem.class_code      WBC         6690-2

``field`` is the spec field whose value is replaced (``entity.field`` limits it to one entity; a
bare name applies to every source entity that has the field). ``std_name`` is optional: when
given, the paired name field is filled too (``participant_dept_std_code`` →
``participant_dept_std_name``, ``sex_code`` → ``sex_name``, see :func:`name_field`). Values match
exactly (no trimming). Codes not in the mapping are left as they are, so validation flags them.
The file is checked once, on load (:class:`MappingError` names the line to fix): unknown fields,
repeated local codes, a standard code outside a closed dictionary, a name without a name field.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from hurren import spec
from hurren.sources import SOURCE_ENTITIES, Source

__all__ = [
    "CodeMapping",
    "MappingError",
    "MappingResult",
    "apply_mapping",
    "load_mapping",
    "mapping_for",
    "name_field",
]

_COLUMNS = ("field", "local_code", "std_code")

# name fields that do not follow <stem>_code -> <stem>_name
_NAME_PAIRS = {
    "order_priority": "order_priority_name",
    "result_type": "result_type_descr",
    "result_interpre": "result_interpre_descr",
    "exam_site_code": "body_part_name",
}


class MappingError(ValueError):
    """A code mapping file cannot be used; the message names the file and line to fix."""


@dataclass(frozen=True, slots=True)
class Rule:
    std_code: str
    std_name: str | None


@dataclass(frozen=True, slots=True)
class CodeMapping:
    """One hospital's mappings: (entity or None for any, field) -> local code -> standard code."""

    path: Path
    rules: Mapping[tuple[str | None, str], Mapping[str, Rule]]

    def for_entity(self, entity: str) -> dict[str, dict[str, Rule]]:
        """field -> local code -> rule, for one entity (entity-specific rules win)."""
        ent = spec.entity(entity)
        out: dict[str, dict[str, Rule]] = {}
        for (scope, field_name), table in self.rules.items():
            if scope is None and field_name in ent.names:
                out.setdefault(field_name, {}).update(table)
        for (scope, field_name), table in self.rules.items():
            if scope == entity:
                out.setdefault(field_name, {}).update(table)
        return out

    def __len__(self) -> int:
        return sum(len(t) for t in self.rules.values())


@dataclass(frozen=True, slots=True)
class MappingResult:
    frame: pd.DataFrame
    mapped: Mapping[str, int]  # field -> values replaced

    @property
    def total(self) -> int:
        return sum(self.mapped.values())


def name_field(entity: spec.Entity, field_name: str) -> str | None:
    """The field that carries the name of ``field_name``'s code in ``entity``, if there is one."""
    candidate = _NAME_PAIRS.get(field_name)
    if candidate is None and field_name.endswith("_code"):
        candidate = field_name[: -len("_code")] + "_name"
    return candidate if candidate in entity.names else None


def _entities_with(field_name: str, scope: str | None) -> list[spec.Entity]:
    names = (scope,) if scope else SOURCE_ENTITIES
    return [spec.entity(n) for n in names if field_name in spec.entity(n).names]


@cache
def load_mapping(path: Path | str) -> CodeMapping:
    """Read and check a mapping TSV (cached by path: a file is read once per process)."""
    path = Path(path)
    rules: dict[tuple[str | None, str], dict[str, Rule]] = {}
    problems: list[str] = []
    try:
        fh = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from exc
    with fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = reader.fieldnames or []
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise MappingError(
                f"{path}: missing column(s) {missing}; the header must be field, local_code, std_code[, std_name]"
            )
        extra = sorted(set(header) - {*_COLUMNS, "std_name"})
        if extra:
            raise MappingError(
                f"{path}: unknown column(s) {extra}; allowed: field, local_code, std_code, std_name"
            )
        for lineno, row in enumerate(reader, start=2):
            where = f"{path.name}:{lineno}"
            field_ref = (row.get("field") or "").strip()
            local, std = row.get("local_code") or "", row.get("std_code") or ""
            std_name = row.get("std_name") or None
            if not field_ref and not local and not std:
                continue  # blank line
            scope, _, field_name = field_ref.rpartition(".")
            scope_or_none = scope or None
            if scope_or_none is not None and scope_or_none not in SOURCE_ENTITIES:
                problems.append(
                    f"{where}: {scope!r} is not a source entity; one of {', '.join(SOURCE_ENTITIES)}"
                )
                continue
            targets = _entities_with(field_name, scope_or_none)
            if not targets:
                problems.append(f"{where}: no source entity has a field {field_ref!r}")
                continue
            if not local or not std:
                problems.append(f"{where}: local_code and std_code must both be given")
                continue
            for ent in targets:
                dict_name = ent.field(field_name).dictionary
                if dict_name and std not in spec.dictionary(dict_name):
                    problems.append(
                        f"{where}: {std!r} is not a code of {dict_name} ({ent.name}.{field_name}); "
                        "fix the std_code, or qualify the field as entity.field if it is meant for another entity"
                    )
                if std_name is not None and name_field(ent, field_name) is None:
                    problems.append(
                        f"{where}: {ent.name}.{field_name} has no name field to fill; leave std_name empty"
                    )
            table = rules.setdefault((scope_or_none, field_name), {})
            if local in table:
                problems.append(f"{where}: local code {local!r} of {field_ref} is mapped twice")
                continue
            table[local] = Rule(std, std_name)
    if problems:
        raise MappingError(
            f"{path}: {len(problems)} problem(s) to fix:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return CodeMapping(path, MappingProxyType({k: MappingProxyType(v) for k, v in rules.items()}))


def mapping_for(source: Source) -> CodeMapping | None:
    """The source's mapping, or None when it has none configured."""
    return None if source.mapping_file is None else load_mapping(source.mapping_file)


def apply_mapping(frame: pd.DataFrame, entity: str, mapping: CodeMapping | None) -> MappingResult:
    """``frame`` (canonical strings of ``entity``) with local codes replaced by standard ones.

    Returns a new frame (the input is not changed) and how many values of each field were
    replaced. Vectorised: one ``isin``/``map`` per mapped field.
    """
    if mapping is None or frame.empty:
        return MappingResult(frame, MappingProxyType({}))
    ent = spec.entity(entity)
    out = frame.copy()
    counts: dict[str, int] = {}
    for field_name, table in mapping.for_entity(entity).items():
        if field_name not in out.columns:
            continue
        values = out[field_name]
        hit = values.isin(list(table))
        n = int(hit.sum())
        counts[field_name] = n
        if not n:
            continue
        out.loc[hit, field_name] = values[hit].map({k: r.std_code for k, r in table.items()}).astype(object)
        paired = name_field(ent, field_name)
        named_codes = {k: r.std_name for k, r in table.items() if r.std_name is not None}
        if paired is not None and paired in out.columns and named_codes:
            named = values.isin(list(named_codes))
            if named.any():
                out.loc[named, paired] = values[named].map(named_codes).astype(object)
    return MappingResult(out, MappingProxyType(counts))
