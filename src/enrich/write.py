"""Write: stage each shard's enriched rows and rejects, commit the shard when complete.

Layout under the output prefix:
    part-<shard>-<n>.parquet            enriched rows: input + output + lineage columns
    _rejects/part-<shard>-<n>.parquet   rejected rows, fixed schema (columns.REJECTS_SCHEMA)
    _manifests/<shard>.json             the shard's commit record (ShardManifest)
    _staging/<shard>/...                work in progress, never read by consumers
A shard's files move from staging to their final names and then its manifest is written:
a manifest means the shard is complete, which is what resume and idempotency rely on.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem
from pyarrow.fs import FSSpecHandler, PyFileSystem
from pydantic import BaseModel, Field

from enrich import columns as C


class ShardManifest(BaseModel):
    """Commit record of one input shard; its presence means the shard is done."""

    shard_id: str = Field(..., description="Hash of the source URL; names the shard's files.")
    source: str = Field(..., description="Input file URL.")
    size: int = Field(..., description="Input size in bytes when read.")
    version: str = Field(..., description="ETag or mtime of the input when read.")
    fingerprint: str = Field(..., description="Model + task + prompt + schema + sampling digest.")
    rows_in: int = Field(..., description="Rows read from the shard.")
    rows_ok: int = Field(..., description="Rows written to the enriched table.")
    rows_rejected: int = Field(..., description="Rows written to the rejects table.")
    rejects_by_reason: dict[str, int] = Field(default_factory=dict)
    output_tokens: int = Field(0, description="Tokens generated for the shard's rows.")
    files: list[str] = Field(default_factory=list, description="Enriched files, relative.")
    reject_files: list[str] = Field(default_factory=list, description="Reject files, relative.")


@dataclass(frozen=True)
class Lineage:
    """Constant lineage values stamped on every enriched row."""

    model: str
    model_revision: str | None
    adapter: str | None
    task: str
    task_version: str
    fingerprint: str


def arrow_fs(fs: AbstractFileSystem) -> PyFileSystem:
    # pyarrow 26 aborts at exit when handed fsspec file objects; a filesystem is safe.
    return PyFileSystem(FSSpecHandler(fs))


class _PartWriter:
    """Rolls Parquet files `<prefix>-<n>.parquet`: large row groups, a new file only when a
    later batch's schema cannot be cast to the current file's (e.g. JSONL type drift)."""

    def __init__(self, fs: AbstractFileSystem, prefix: str, row_group_rows: int) -> None:
        self.fs, self.prefix, self.row_group_rows = fs, prefix, row_group_rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.writer: pq.ParquetWriter | None = None
        self.files: list[str] = []

    def add(self, table: pa.Table) -> None:
        if self.buffer and not _mergeable(self.buffer[0].schema, table.schema):
            self._flush()  # e.g. an int column turned string: close this group first
        if table.num_rows:
            self.buffer.append(table)
            self.buffered += table.num_rows
        if self.buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        group = pa.concat_tables(self.buffer, promote_options="permissive")
        self.buffer, self.buffered = [], 0
        if self.writer is not None:
            try:
                group = _conform(group, self.writer.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                self.writer.close()
                self.writer = None
        if self.writer is None:
            path = f"{self.prefix}-{len(self.files)}.parquet"
            self.writer = pq.ParquetWriter(
                path, group.schema, filesystem=arrow_fs(self.fs), compression="zstd"
            )
            self.files.append(path)
        self.writer.write_table(group, row_group_size=max(group.num_rows, 1))

    def close(self, empty_schema: pa.Schema | None = None) -> list[str]:
        self._flush()
        if self.writer is not None:
            self.writer.close()
        elif empty_schema is not None:  # a file even when empty: readers see the schema
            path = f"{self.prefix}-0.parquet"
            pq.write_table(empty_schema.empty_table(), path, filesystem=arrow_fs(self.fs))
            self.files.append(path)
        return self.files


def _mergeable(a: pa.Schema, b: pa.Schema) -> bool:
    try:
        pa.unify_schemas([a, b], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise pa.ArrowInvalid(f"new columns {sorted(extra)}")
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(schema.names).cast(schema)


class ShardWriter:
    """One shard's staged output: enriched rows and rejects."""

    def __init__(self, fs: AbstractFileSystem, staging: str, shard_id: str, row_group_rows: int):
        self.ok = _PartWriter(fs, posixpath.join(staging, f"part-{shard_id}"), row_group_rows)
        self.rejects = _PartWriter(
            fs, posixpath.join(staging, "_rejects", f"part-{shard_id}"), row_group_rows
        )
        fs.makedirs(posixpath.join(staging, "_rejects"), exist_ok=True)
        self.rows_ok = 0
        self.rows_rejected = 0
        self.output_tokens = 0
        self.rejects_by_reason: dict[str, int] = {}
        self.ok_schema: pa.Schema | None = None  # for an empty enriched file

    def add(self, table: pa.Table, lineage: Lineage, output_names: list[str]) -> None:
        if self.ok_schema is None:
            self.ok_schema = enriched_rows(table.slice(0, 0), lineage, output_names).schema
        reasons = table.column(C.REASON)
        rejected = reasons.is_valid()
        ok = table.filter(reasons.is_null())
        bad = table.filter(rejected)
        tokens = table.column(C.OUTPUT_TOKENS).to_pylist()
        self.output_tokens += sum(t for t in tokens if t)
        if ok.num_rows:
            self.ok.add(enriched_rows(ok, lineage, output_names))
            self.rows_ok += ok.num_rows
        if bad.num_rows:
            self.rejects.add(reject_rows(bad, lineage, output_names))
            self.rows_rejected += bad.num_rows
            for reason in bad.column(C.REASON).to_pylist():
                self.rejects_by_reason[reason] = self.rejects_by_reason.get(reason, 0) + 1

    def close(self) -> tuple[list[str], list[str]]:
        # Both tables get a file per shard even when empty, so readers always find a schema.
        return self.ok.close(self.ok_schema), self.rejects.close(empty_schema=C.REJECTS_SCHEMA)


def enriched_rows(table: pa.Table, lineage: Lineage, output_names: list[str]) -> pa.Table:
    """Input columns + the task's output columns + lineage columns."""
    inputs = _input_names(table)
    clash = sorted({n for n in inputs if inputs.count(n) > 1})
    if clash:
        raise ValueError(f"input columns {clash} clash with the task's output columns; rename them")
    n = table.num_rows
    values = {
        "enrich_row_id": table.column(C.ROW_ID),
        "enrich_source_file": table.column(C.SOURCE_FILE),
        "enrich_row_index": table.column(C.ROW_INDEX),
        "enrich_model": pa.array([lineage.model] * n, pa.string()),
        "enrich_model_revision": pa.array([lineage.model_revision] * n, pa.string()),
        "enrich_adapter": pa.array([lineage.adapter] * n, pa.string()),
        "enrich_task": pa.array([lineage.task] * n, pa.string()),
        "enrich_task_version": pa.array([lineage.task_version] * n, pa.string()),
        "enrich_fingerprint": pa.array([lineage.fingerprint] * n, pa.string()),
        "enrich_prompt_tokens": table.column(C.PROMPT_TOKENS),
        "enrich_output_tokens": table.column(C.OUTPUT_TOKENS),
        "enrich_attempts": table.column(C.ATTEMPTS),
    }
    out = table.select(inputs)
    for field in C.LINEAGE_SCHEMA:
        out = out.append_column(field, values[field.name].cast(field.type))
    return out


def reject_rows(table: pa.Table, lineage: Lineage, output_names: list[str]) -> pa.Table:
    """Rejected rows in the fixed rejects schema; the input row travels as JSON."""
    inputs = [n for n in _input_names(table) if n not in output_names]
    n = table.num_rows
    if inputs:
        rows = table.select(inputs).to_pylist()
        input_json = [json.dumps(r, ensure_ascii=False, default=str) for r in rows]
    else:
        input_json = [None] * n
    columns = {
        "row_id": table.column(C.ROW_ID),
        "source_file": table.column(C.SOURCE_FILE),
        "row_index": table.column(C.ROW_INDEX),
        "reason": table.column(C.REASON),
        "message": table.column(C.MESSAGE),
        "raw_output": table.column(C.RAW_OUTPUT),
        "attempts": table.column(C.ATTEMPTS),
        "prompt_tokens": table.column(C.PROMPT_TOKENS),
        "output_tokens": table.column(C.OUTPUT_TOKENS),
        "input_text": table.column(C.TEXT),
        "input_json": pa.array(input_json, pa.string()),
        "enrich_task": pa.array([lineage.task] * n, pa.string()),
        "enrich_fingerprint": pa.array([lineage.fingerprint] * n, pa.string()),
    }
    return pa.table({f.name: columns[f.name] for f in C.REJECTS_SCHEMA}).cast(C.REJECTS_SCHEMA)


def _input_names(table: pa.Table) -> list[str]:
    return [n for n in table.column_names if not n.startswith("_enrich_")]
