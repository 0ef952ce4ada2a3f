"""Bring-your-own task for a general model: an output schema plus a prompt template."""

from __future__ import annotations

import hashlib
import importlib
import json
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from enrich.tasks.base import Task

_COMMON = {"type", "title", "description"}
_NUMERIC = _COMMON | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_ALLOWED: dict[str, set[str]] = {
    "string": _COMMON | {"maxLength", "minLength", "enum", "pattern"},
    "integer": _NUMERIC,
    "number": _NUMERIC,
    "boolean": _COMMON,
    "array": _COMMON | {"items", "minItems", "maxItems"},
    "object": _COMMON | {"properties", "required", "additionalProperties", "$defs", "$schema", "$id"},
}
_SCALARS: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}
_CONSTRAINTS = {  # JSON Schema keyword -> pydantic Field keyword
    "maxLength": "max_length", "minLength": "min_length", "pattern": "pattern", "minimum": "ge",
    "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt", "minItems": "min_length",
    "maxItems": "max_length", "description": "description",
}
DEFAULT_TEMPLATE = "{text}"


class _Builder:
    """JSON Schema -> pydantic models; every error names the JSON pointer it is about."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = root.get("$defs", {}) if isinstance(root, dict) else {}
        self.resolving: set[str] = set()

    def type_and_field(self, node: Any, ptr: str) -> tuple[Any, dict[str, Any]]:
        """(annotation, Field kwargs) for one schema node."""
        if not isinstance(node, dict):
            raise ValueError(f"{ptr or '/'}: expected a schema object, got {type(node).__name__}")
        if "$ref" in node:
            return self.follow(node, ptr)
        kind = node.get("type")
        if kind not in _ALLOWED:
            raise ValueError(f"{ptr or '/'}: unsupported type {kind!r} (use one of {sorted(_ALLOWED)})")
        unknown = set(node) - _ALLOWED[kind]
        if unknown:
            raise ValueError(f"{ptr or '/'}: unsupported keyword(s) {sorted(unknown)} for type {kind!r}")
        kwargs = {_CONSTRAINTS[k]: v for k, v in node.items() if k in _CONSTRAINTS}
        if kind == "string" and "pattern" in node and {"minLength", "maxLength"} & set(node):
            # xgrammar cannot combine the two (vLLM falls back or fails); say so up front.
            raise ValueError(f"{ptr}: pattern together with minLength/maxLength is not supported")
        if kind in _SCALARS:
            if "enum" in node:
                values = node["enum"]
                if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                    raise ValueError(f"{ptr}/enum: expected a non-empty list of strings")
                return Literal[tuple(values)], {k: v for k, v in kwargs.items() if k == "description"}
            return _SCALARS[kind], kwargs
        if kind == "array":
            if "items" not in node:
                raise ValueError(f"{ptr}: array needs 'items'")
            item, item_kwargs = self.type_and_field(node["items"], f"{ptr}/items")
            item_kwargs.pop("description", None)
            return list[Annotated[item, Field(**item_kwargs)] if item_kwargs else item], kwargs
        return self.model(node, ptr, node.get("title") or _class_name(ptr)), kwargs

    def follow(self, node: dict[str, Any], ptr: str) -> tuple[Any, dict[str, Any]]:
        """Local refs as pydantic writes them (`#/$defs/Name`), so dumped schemas load too."""
        ref = node["$ref"]
        name = ref.removeprefix("#/$defs/") if isinstance(ref, str) else ""
        if set(node) - {"$ref", "title", "description"} or name == ref or name not in self.defs:
            raise ValueError(f"{ptr}/$ref: only plain local refs '#/$defs/Name' are supported")
        if name in self.resolving:
            raise ValueError(f"{ptr}/$ref: recursive reference {ref!r} is not supported")
        self.resolving.add(name)
        try:
            annotation, kwargs = self.type_and_field(self.defs[name], f"/$defs/{name}")
        finally:
            self.resolving.discard(name)
        if "description" in node:
            kwargs["description"] = node["description"]
        return annotation, kwargs

    def model(self, node: dict[str, Any], ptr: str, name: str) -> type[BaseModel]:
        props = node.get("properties")
        if not isinstance(props, dict) or not props or node.get("additionalProperties", False):
            raise ValueError(f"{ptr or '/'}: object needs 'properties' (and no additionalProperties)")
        required = node.get("required", [])
        missing = [r for r in required if r not in props]
        if missing:
            raise ValueError(f"{ptr or '/'}/required: {missing} not in properties")
        fields: dict[str, Any] = {}
        for key, sub in props.items():
            sub_ptr = f"{ptr}/properties/{key}"
            if not key.isidentifier() or key.startswith("_") or hasattr(BaseModel, key):
                raise ValueError(f"{sub_ptr}: property name {key!r} cannot be a column/field name")
            annotation, kwargs = self.type_and_field(sub, sub_ptr)
            if key in required:
                fields[key] = (annotation, Field(..., **kwargs))
            else:
                fields[key] = (annotation | None, Field(None, **kwargs))
        config = ConfigDict(extra="forbid", protected_namespaces=())
        return create_model(name, __config__=config, __doc__=node.get("description"), **fields)


def _class_name(ptr: str) -> str:
    return "".join(p.capitalize() for p in ptr.split("/")[-1].split("_")) or "Output"


def model_from_json_schema(schema: dict[str, Any]) -> type[BaseModel]:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ValueError("/: the root of an output schema must be {'type': 'object', ...}")
    return _Builder(schema).type_and_field(schema, "")[0]


def load_output_model(spec: str) -> type[BaseModel]:
    """`module:Class` (a pydantic model) or a path to a JSON Schema file ending in .json."""
    if spec.endswith(".json"):
        try:
            schema = json.loads(Path(spec).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{spec}: cannot load JSON Schema: {exc}") from exc
        try:
            return model_from_json_schema(schema)
        except ValueError as exc:
            raise ValueError(f"{spec}: {exc}") from None
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"output schema {spec!r}: expected 'module:Class' or a .json file")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ValueError(f"output schema {spec!r} is not a pydantic BaseModel class")
    return obj


def load_prompt_template(path: str | Path) -> str:
    template = Path(path).read_text(encoding="utf-8")
    template_columns(template)  # malformed templates fail at startup, not per row
    return template


def template_columns(template: str) -> list[str]:
    """Placeholder names; only plain `{name}` fields (literal braces must be doubled: `{{`)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"prompt template: {exc} (write literal braces as '{{{{' and '}}}}')") from None
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"prompt template placeholder {{{name}}} must be a column name")
    return names


def make_renderer(template: str) -> Callable[[Mapping[str, Any]], str]:
    columns = template_columns(template)

    def render_user(row: Mapping[str, Any]) -> str:
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"prompt template needs column {missing[0]!r}")
        return template.format_map({c: row[c] for c in columns})

    return render_user


def default_system_prompt(model: type[BaseModel]) -> str:
    schema = json.dumps(model.model_json_schema(), ensure_ascii=False, sort_keys=True)
    return (
        "Extract the requested information from the user's text. "
        f"Answer with JSON matching this schema:\n{schema}"
    )


def make_custom_task(
    schema: str, prompt_template: str | None, system_prompt: str | None, name: str = "custom"
) -> Task:
    """`schema`: module:Class or .json file; `prompt_template`: template file path or None."""
    model = load_output_model(schema)
    template = load_prompt_template(prompt_template) if prompt_template else DEFAULT_TEMPLATE
    # The template is not otherwise part of the fingerprint, so it goes into the version.
    payload = json.dumps(model.model_json_schema(), sort_keys=True, ensure_ascii=False) + "\0" + template
    return Task(
        name=name,
        version="c-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:8],
        description=f"Custom task: text -> {model.__name__} ({schema}).",
        output_model=model,
        system_prompt=system_prompt if system_prompt is not None else default_system_prompt(model),
        render_user=make_renderer(template),
    )
