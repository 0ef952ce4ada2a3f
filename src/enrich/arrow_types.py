"""Arrow types for a task's pydantic output model, so output columns are typed, not JSON."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # constrained items, e.g. list[Annotated[int, Ge(0)]]
        return arrow_type(typing.get_args(annotation)[0])
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return arrow_type(args[0])  # Optional[X]
    if origin is Literal:
        return arrow_type(type(args[0]))
    if origin in (list, tuple, set, frozenset, typing.Sequence):
        return pa.list_(arrow_type(args[0]) if args else pa.string())
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(list(arrow_schema(annotation)))
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    return pa.string()  # anything else travels as its JSON text


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    return pa.schema(
        [pa.field(name, arrow_type(f.annotation)) for name, f in model.model_fields.items()]
    )
