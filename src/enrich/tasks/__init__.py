"""Built-in tasks. A plain dict is the registry."""

from __future__ import annotations

from enrich.tasks.address import ADDRESS_TASK
from enrich.tasks.base import DomainError, Task

TASKS: dict[str, Task] = {ADDRESS_TASK.name: ADDRESS_TASK}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}") from None


__all__ = ["TASKS", "DomainError", "Task", "get_task"]
