"""Per-hospital code mappings: loading checks, vectorised application, counts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hurren import mapping, sources
from hurren.mapping import MappingError, apply_mapping, load_mapping, name_field
from hurren.spec import entity

HEADER = "field\tlocal_code\tstd_code\tstd_name\n"


def write(tmp_path: Path, body: str, header: str = HEADER, name: str = "270258069.tsv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    load_mapping.cache_clear()
    return path


def masters(**columns: list[str | None]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {f: [None] * n for f in entity("labmaster").names}
    base.update(columns)
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in base.items()})


@pytest.fixture
def dept_and_sex(tmp_path: Path) -> mapping.CodeMapping:
    return load_mapping(
        write(
            tmp_path,
            "participant_dept_std_code\t1411\tA03.01\t呼吸内科专业\n"
            "participant_dept_std_code\t1412\tA03.02\t\n"
            "sex_code\tM\t1\t男性\n"
            "sex_code\tF\t2\t女性\n"
            "lab_subitem.class_code\tWBC\t6690-2\t\n",
        )
    )


def test_local_codes_become_standard_and_names_follow(dept_and_sex: mapping.CodeMapping) -> None:
    frame = masters(
        participant_dept_std_code=["1411", "1412", "A02", None, " 1411"],
        participant_dept_std_name=["呼吸科", "心内科", "全科医疗科", None, "x"],
        sex_code=["M", "F", "1", "M", None],
        sex_name=["男", "女", "男性", None, None],
    )
    result = apply_mapping(frame, "labmaster", dept_and_sex)
    out = result.frame
    assert list(out["participant_dept_std_code"]) == ["A03.01", "A03.02", "A02", None, " 1411"]
    # a name only where the mapping gives one; unmapped and padded values are left for validation
    assert list(out["participant_dept_std_name"]) == ["呼吸内科专业", "心内科", "全科医疗科", None, "x"]
    assert list(out["sex_code"]) == ["1", "2", "1", "1", None]
    assert list(out["sex_name"]) == ["男性", "女性", "男性", "男性", None]
    assert dict(result.mapped) == {"participant_dept_std_code": 2, "sex_code": 3}
    assert result.total == 5
    assert out["sex_code"].dtype == object and out["sex_name"].iloc[4] is None


def test_the_input_frame_is_not_changed(dept_and_sex: mapping.CodeMapping) -> None:
    frame = masters(sex_code=["M"], sex_name=["男"])
    apply_mapping(frame, "labmaster", dept_and_sex)
    assert frame["sex_code"].iloc[0] == "M" and frame["sex_name"].iloc[0] == "男"


def test_entity_qualified_rules_apply_only_to_their_entity(dept_and_sex: mapping.CodeMapping) -> None:
    items = pd.DataFrame(
        {
            f: pd.Series(["WBC"] if f == "class_code" else [None], dtype=object)
            for f in entity("lab_subitem").names
        }
    )
    assert apply_mapping(items, "lab_subitem", dept_and_sex).frame["class_code"].iloc[0] == "6690-2"
    exam = pd.DataFrame(
        {
            f: pd.Series(["WBC"] if f == "class_code" else [None], dtype=object)
            for f in entity("exammaster").names
        }
    )
    result = apply_mapping(exam, "exammaster", dept_and_sex)
    assert result.frame["class_code"].iloc[0] == "WBC"
    assert "class_code" not in result.mapped


def test_no_mapping_or_no_rows_is_a_no_op(dept_and_sex: mapping.CodeMapping) -> None:
    frame = masters(sex_code=["M"])
    assert apply_mapping(frame, "labmaster", None).frame is frame
    empty = masters(sex_code=[])
    assert apply_mapping(empty, "labmaster", dept_and_sex).total == 0


def test_a_million_values_are_mapped_vectorised(dept_and_sex: mapping.CodeMapping) -> None:
    n = 1_000_000
    frame = pd.DataFrame(
        {
            "sex_code": pd.Series(["M", "F", "9", None] * (n // 4), dtype=object),
            "sex_name": pd.Series([None] * n, dtype=object),
        }
    )
    result = apply_mapping(frame, "labmaster", dept_and_sex)
    assert result.mapped["sex_code"] == n // 2
    assert result.frame["sex_name"].iloc[1] == "女性"


@pytest.mark.parametrize(
    ("field", "paired"),
    [
        ("participant_dept_std_code", "participant_dept_std_name"),
        ("sex_code", "sex_name"),
        ("order_priority", "order_priority_name"),
        ("specimen_determiner_code", "specimen_determiner_name"),
        ("id_type_code", None),
    ],
)
def test_name_field_pairs(field: str, paired: str | None) -> None:
    assert name_field(entity("labmaster"), field) == paired


def test_exam_and_record_pairs() -> None:
    assert name_field(entity("exam_subitem"), "exam_site_code") == "body_part_name"
    assert name_field(entity("exam_subitem"), "exam_item_code") == "exam_item_name"
    assert name_field(entity("lab_subitem"), "result_interpre") == "result_interpre_descr"
    assert name_field(entity("sehr_accept_record"), "dept_std_code") == "dept_std_name"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("no_such_field\tx\ty\t\n", "no source entity has a field 'no_such_field'", id="field"),
        pytest.param("labs.sex_code\tM\t1\t\n", "'labs' is not a source entity", id="entity"),
        pytest.param("sex_code\tM\t7\t\n", "'7' is not a code of STD_SEX", id="closed-dictionary"),
        pytest.param("participant_dept_std_code\t1\tZ99\t\n", "is not a code of STD_DEPT", id="dept"),
        pytest.param("sex_code\tM\t1\t\nsex_code\tM\t2\t\n", "'M' of sex_code is mapped twice", id="twice"),
        pytest.param("id_type_code\tSFZ\t01\t身份证\n", "has no name field to fill", id="name-without-field"),
        pytest.param("sex_code\t\t1\t\n", "must both be given", id="empty-local"),
        pytest.param(
            "class_code\tWBC\t6690-2\t\n", "qualify the field as entity.field", id="ambiguous-bare-field"
        ),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(MappingError) as info:
        load_mapping(write(tmp_path, body))
    assert expected in str(info.value)
    line = 3 if "twice" in expected else 2
    assert f"270258069.tsv:{line}:" in str(info.value)


def test_header_is_checked(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="missing column"):
        load_mapping(write(tmp_path, "sex_code\tM\n", header="field\tlocal_code\n"))
    with pytest.raises(MappingError, match="unknown column"):
        load_mapping(write(tmp_path, "", header="field\tlocal_code\tstd_code\tnote\n"))
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "absent.tsv")


def test_std_name_column_is_optional(tmp_path: Path) -> None:
    m = load_mapping(write(tmp_path, "sex_code\tM\t1\n", header="field\tlocal_code\tstd_code\n"))
    out = apply_mapping(masters(sex_code=["M"], sex_name=["男"]), "labmaster", m).frame
    assert (out["sex_code"].iloc[0], out["sex_name"].iloc[0]) == ("1", "男")
    assert len(m) == 1


def test_mapping_for_a_configured_source(tmp_path: Path) -> None:
    path = write(tmp_path, "sex_code\tM\t1\t男性\n")
    cfg = sources.parse_sources(
        json.dumps(
            {
                "hospitals": [
                    {
                        "id": "a",
                        "org_code": "1",
                        "org_name": "A",
                        "conn_id": "a",
                        "dialect": "sqlite",
                        "mapping_file": str(path),
                    },
                    {"id": "b", "org_code": "2", "org_name": "B", "conn_id": "b", "dialect": "sqlite"},
                ]
            }
        )
    )
    got = mapping.mapping_for(cfg.get("a"))
    assert got is not None and got.path == path
    assert mapping.mapping_for(cfg.get("b")) is None
