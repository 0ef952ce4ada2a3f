"""A task is data, not a subclass tree: output model, prompt, decoding constraint, checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class DomainError(ValueError):
    """A schema-valid output that fails a task's domain check (wrong district, bad phone...)."""


def _no_check(record: BaseModel, row: Mapping[str, Any]) -> BaseModel:
    return record


@dataclass(frozen=True)
class Task:
    """Everything task-specific the pipeline needs; the pipeline itself knows no task."""

    name: str
    version: str  # bump when prompt, schema or checks change: it is part of the fingerprint
    description: str
    output_model: type[BaseModel]  # drives the JSON schema for guided decoding and validation
    system_prompt: str
    render_user: Callable[[Mapping[str, Any]], str]
    # Domain checks; may return a richer record (e.g. with normalized columns) as long as it
    # is an instance of `columns_model`. Raises DomainError to reject the row.
    check: Callable[[BaseModel, Mapping[str, Any]], BaseModel] = _no_check
    choices: Sequence[str] | None = None  # choice-constrained tasks decode one of these
    columns_model: type[BaseModel] | None = None  # written columns; default: output_model

    @property
    def written_model(self) -> type[BaseModel]:
        return self.columns_model or self.output_model

    def json_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema()

    def spec_digest(self) -> str:
        """Digest of what shapes the outputs: prompt, schema, choices, version."""
        payload = json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "system_prompt": self.system_prompt,
                "schema": self.json_schema(),
                "choices": list(self.choices) if self.choices else None,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()
