"""Built-in tasks. A plain dict is the registry: task name -> factory(options) -> Task."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache

from enrich.config import JobConfig, TaskOptions
from enrich.tasks.address import make_address_task
from enrich.tasks.base import DomainError, Task
from enrich.tasks.classify import make_classify_task
from enrich.tasks.custom import make_custom_task
from enrich.tasks.keywords import make_keywords_task


def _custom(o: TaskOptions) -> Task:
    if not o.output_schema:
        raise ValueError("task 'custom' needs --output-schema (module:Class or a .json file)")
    return make_custom_task(o.output_schema, o.prompt_template, o.system_prompt)


TASK_FACTORIES: dict[str, Callable[[TaskOptions], Task]] = {
    "address": lambda o: make_address_task(strict=not o.flag_invalid),
    "keywords": lambda o: make_keywords_task(o.max_keywords, o.require_grounded),
    "classify": lambda o: make_classify_task(o.labels),
    "custom": _custom,
}


def build_task(name: str, options: TaskOptions | None = None) -> Task:
    try:
        factory = TASK_FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(TASK_FACTORIES))
        raise ValueError(f"unknown task {name!r}; available: {known}") from None
    return factory(options or TaskOptions())


def task_for(cfg: JobConfig) -> Task:
    """The task a job runs, with its options (built once per process: workers call it often)."""
    return _cached(cfg.task, cfg.task_options.model_dump_json())


@lru_cache(maxsize=8)
def _cached(name: str, options_json: str) -> Task:
    return build_task(name, TaskOptions.model_validate(json.loads(options_json)))


__all__ = ["TASK_FACTORIES", "DomainError", "Task", "build_task", "task_for"]
