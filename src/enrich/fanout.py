"""Several tasks in one pass: each input row fans out to one row per task before the engine,
and the validated rows split back by task before the commit.

    read -> prepare_tasks (row x task, `_enrich_task` set) -> engine (per-row sampling params
    and LoRA adapter) -> validate_tasks (one output table per task) -> split_by_task -> commit

A single-task run is the one-task case of the same path. Reading, tokenizer and engines are
shared; each task keeps its own prompt, constraint, validation and output folder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from enrich import columns as C
from enrich.config import JobConfig
from enrich.prepare import prepare_batch
from enrich.validate import validate_batch


def prepare_tasks(
    table: pa.Table, configs: Mapping[str, JobConfig], needs: Mapping[str, Sequence[str]] | None = None
) -> pa.Table:
    """One prepared copy of `table` per task, labelled in `_enrich_task`.

    `configs`: label -> that task's config (`JobConfig.task_configs()`, made once per run, not
    per batch). `needs`: source file -> the tasks still to do for it (a resumed run skips a
    task whose output already has the shard); default: every task."""
    parts = []
    for label, sub in configs.items():
        rows = table
        if needs is not None:
            wanted = [src for src, labels in needs.items() if label in labels]
            rows = table.filter(pc.is_in(table.column(C.SOURCE_FILE), pa.array(wanted, pa.string())))
        if rows.num_rows or len(configs) == 1:
            prepared = prepare_batch(rows, sub)
            parts.append(prepared.append_column(C.TASK, pa.array([label] * prepared.num_rows, pa.string())))
    return pa.concat_tables(parts) if len(parts) != 1 else parts[0]


def validate_tasks(table: pa.Table, configs: Mapping[str, JobConfig]) -> Iterator[pa.Table]:
    """Validate each task's rows with its own task: one table per task (their output columns differ)."""
    for label, rows in split_by_task(table, list(configs)):
        yield validate_batch(rows, configs[label])


def split_by_task(table: pa.Table, labels: Sequence[str]) -> Iterator[tuple[str, pa.Table]]:
    """(label, rows of that task) for each task present in `table`."""
    if C.TASK not in table.column_names:
        if len(labels) != 1:
            raise ValueError("rows carry no task label in a multi-task run")
        yield labels[0], table
        return
    if len(labels) == 1:
        yield labels[0], table
        return
    column = table.column(C.TASK)
    for label in labels:
        rows = table.filter(pc.equal(column, label))
        if rows.num_rows:
            yield label, rows
