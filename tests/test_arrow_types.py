"""Unit tests for enrich.arrow_types: pydantic output models -> Arrow schemas."""

from __future__ import annotations

from typing import List, Literal, Optional

import pyarrow as pa
import pytest
from pydantic import BaseModel

from enrich import columns as C
from enrich.arrow_types import arrow_schema, arrow_type
from enrich.config import JobConfig
from enrich.tasks import TASK_FACTORIES, Task
from enrich.tasks.address import AddressRecord
from enrich.validate import validate_batch


class Point(BaseModel):
    """A nested model."""

    x: float
    label: str | None = None


class Everything(BaseModel):
    """One field of every supported kind."""

    name: str
    count: int
    score: float
    flag: bool
    nickname: Optional[str] = None  # noqa: UP045 - the typing.Optional spelling on purpose
    alias: str | None = None
    tags: list[str]
    origin: Point
    path: list[Point]
    kind: Literal["home", "work"]
    level: Literal[1, 2, 3]
    maybe_tags: list[str] | None = None


def test_arrow_schema_all_kinds() -> None:
    """Field order and types: scalars, optionals, lists, structs, lists of structs, literals."""
    point = pa.struct([pa.field("x", pa.float64()), pa.field("label", pa.string())])
    expected = pa.schema(
        [
            ("name", pa.string()),
            ("count", pa.int64()),
            ("score", pa.float64()),
            ("flag", pa.bool_()),
            ("nickname", pa.string()),
            ("alias", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("origin", point),
            ("path", pa.list_(point)),
            ("kind", pa.string()),
            ("level", pa.int64()),
            ("maybe_tags", pa.list_(pa.string())),
        ]
    )
    schema = arrow_schema(Everything)
    assert schema.equals(expected), schema


def test_schema_fits_model_dump() -> None:
    """Values dumped by the model convert to Arrow with that schema and round-trip."""
    value = Everything(
        name="n", count=3, score=0.5, flag=True, tags=["a", "b"], origin=Point(x=1.0),
        path=[Point(x=2.0, label="p")], kind="work", level=2,
    ).model_dump(mode="json")
    table = pa.Table.from_pylist([value, value], schema=arrow_schema(Everything))
    assert table.to_pylist()[0] == value


def test_address_schema_is_six_strings() -> None:
    """The address task's output columns are six typed strings, in model order."""
    schema = arrow_schema(AddressRecord)
    assert schema.names == ["province", "city", "district", "specific_location", "name", "phone"]
    assert set(schema.types) == {pa.string()}


def test_unparametrized_list_and_fallbacks() -> None:
    """An unparametrized typing.List is a list of strings; other annotations fall back to string."""
    assert arrow_type(List) == pa.list_(pa.string())  # noqa: UP006
    assert arrow_type(tuple[int, ...]) == pa.list_(pa.int64())
    assert arrow_type(set[str]) == pa.list_(pa.string())
    assert arrow_type(dict[str, int]) == pa.string()
    assert arrow_type(int | str) == pa.string()


class Loose(BaseModel):
    """A field the schema types as (JSON) string."""

    extras: dict[str, int]


def test_fallback_field_travels_as_json_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dict-valued field ends up as its JSON text in the string column."""
    task = Task(
        name="loose", version="1", description="d", output_model=Loose,
        system_prompt="s", render_user=lambda row: str(row["text"]),
    )
    monkeypatch.setitem(TASK_FACTORIES, "loose", lambda options: task)
    table = pa.table(
        {
            C.TEXT: pa.array(["t"], pa.string()),
            C.REASON: pa.array([None], pa.string()),
            C.MESSAGE: pa.array([None], pa.string()),
            C.RAW_OUTPUT: pa.array(['{"extras": {"a": 1}}'], pa.string()),
            C.FINISH_REASON: pa.array(["stop"], pa.string()),
        }
    )
    cfg = JobConfig.model_validate({"input": "in", "output": "out", "model": "m", "task": "loose"})
    out = validate_batch(table, cfg)
    assert out.column("extras").to_pylist() == ['{"a": 1}']
