"""Validate: parse each output, validate it with the task's pydantic model and checks.

Every row leaves with either typed output values or a reject reason from a closed set.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from enrich import columns as C
from enrich.arrow_types import arrow_schema
from enrich.config import JobConfig
from enrich.tasks import DomainError, Task, task_for


class RejectReason(str, Enum):
    """Why a row is in the rejects table (closed set)."""

    BAD_INPUT = "bad_input"  # unparseable line, invalid UTF-8, non-string text
    EMPTY_TEXT = "empty_text"
    TOO_LONG = "too_long"  # prompt over the token budget
    ENGINE_ERROR = "engine_error"
    TRUNCATED = "truncated"  # output cut off at max_tokens
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    DOMAIN_CHECK = "domain_check"


def validate_output(
    task: Task, raw: str, finish_reason: str | None, row: dict[str, Any]
) -> tuple[BaseModel | None, RejectReason | None, str | None]:
    """(record, None, None) for a good output, else (None, reason, message)."""
    if finish_reason == "length":
        return None, RejectReason.TRUNCATED, "output cut off at max_tokens"
    if task.choices:
        value: Any = {next(iter(task.output_model.model_fields)): raw.strip()}
    else:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            return None, RejectReason.INVALID_JSON, f"col {exc.colno}: {exc.msg}"
    try:
        record = task.output_model.model_validate(value)
    except ValidationError as exc:
        return None, RejectReason.SCHEMA_VIOLATION, _short(exc)
    try:
        record = task.check(record, row)
    except DomainError as exc:
        return None, RejectReason.DOMAIN_CHECK, str(exc)
    return record, None, None


def _short(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)


def validate_batch(table: pa.Table, cfg: JobConfig) -> pa.Table:
    """Add the task's typed output columns (null on rejected rows) and final reasons."""
    task = task_for(cfg)
    reasons = table.column(C.REASON).to_pylist()
    messages = table.column(C.MESSAGE).to_pylist()
    raws = table.column(C.RAW_OUTPUT).to_pylist()
    finishes = table.column(C.FINISH_REASON).to_pylist()
    texts = table.column(C.TEXT).to_pylist()
    records: list[dict[str, Any] | None] = [None] * table.num_rows
    for i, raw in enumerate(raws):
        if reasons[i] is not None:
            continue
        record, reason, message = validate_output(task, raw or "", finishes[i], {"text": texts[i]})
        if record is None:
            reasons[i], messages[i] = reason.value if reason else None, message
        else:
            records[i] = record.model_dump(mode="json")
    table = C.replace(table, C.REASON, pa.array(reasons, pa.string()))
    table = C.replace(table, C.MESSAGE, pa.array(messages, pa.string()))
    schema = arrow_schema(task.written_model)
    for field in schema:
        values = [None if r is None else r[field.name] for r in records]
        if pa.types.is_string(field.type):  # types without an Arrow mapping travel as JSON
            values = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
        table = table.append_column(field.name, pa.array(values, field.type))
    return table
