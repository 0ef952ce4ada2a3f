"""Sink: the workers' write stage. Validation and writing in one function, per task.

    engine output -> validate_and_write -> one Descriptor row per (task, shard) group

Each task's rows are validated with that task's schema and written right away to its output
folder, so typed output columns of different tasks never meet in one block (an input column
named like another task's output column stays an input column). Only descriptors (~200 bytes
per group: files, row ranges, counters) go on to the driver; rows and prompt token ids do not.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from enrich import columns as C
from enrich.config import JobConfig
from enrich.fanout import split_by_task
from enrich.storage import filesystem
from enrich.validate import validate_batch
from enrich.write import Descriptor, Lineage, write_attempt

DESCRIPTOR = "descriptor"  # the one column of the write stage's output (JSON text)


@dataclass(frozen=True)
class WriteTarget:
    """Where and how one task writes: shipped to the workers once per run."""

    output: str
    s3_endpoint: str | None
    lineage: Lineage
    output_names: tuple[str, ...]


def validate_and_write(
    table: pa.Table, configs: Mapping[str, JobConfig], targets: Mapping[str, WriteTarget], run_id: str
) -> pa.Table:
    """Validate each task's rows, write each (task, shard) group as one attempt, and return
    the descriptors. The attempt id is new per call: a re-run batch writes new files."""
    out: list[str] = []
    for label, rows in split_by_task(table, list(configs)):
        target = targets[label]
        fs, root = filesystem(target.output, target.s3_endpoint)
        validated = validate_batch(rows, configs[label])
        sources = validated.column(C.SOURCE_FILE)
        for source in pc.unique(sources).to_pylist():
            group = validated.filter(pc.equal(sources, source))
            attempt = f"{run_id}-{uuid.uuid4().hex[:12]}"
            d = write_attempt(fs, root, label, group, target.lineage, list(target.output_names), attempt)
            out.append(d.model_dump_json())
    return pa.table({DESCRIPTOR: pa.array(out, pa.string())})


def descriptors(batch: pa.Table) -> list[Descriptor]:
    return [Descriptor.model_validate_json(s) for s in batch.column(DESCRIPTOR).to_pylist()]
