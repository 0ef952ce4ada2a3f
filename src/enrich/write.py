"""Write: a worker writes one attempt's files for a (task, shard) group; manifests commit them.

Layout under a task's output prefix:
    part-<shard>-<run>-<attempt>.parquet            enriched rows: input + output + lineage columns
    _rejects/part-<shard>-<run>-<attempt>.parquet   rejected rows, fixed schema (columns.REJECTS_SCHEMA)
    _manifests/<shard>.json                         the shard's commit record (ShardManifest)
    _lease.json                                     the writing run (one driver per output)
Attempt files are never renamed: a file no manifest lists is not part of the output (a crashed
or duplicate attempt) and the committer deletes it once nothing can list it any more.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem
from pyarrow.fs import FSSpecHandler, PyFileSystem
from pydantic import BaseModel, Field

from enrich import columns as C
from enrich.ledger import to_ranges
from enrich.read import BAD_FILE, SHARD_END
from enrich.quality import QualityCounters


class ShardManifest(BaseModel):
    """Commit record of one input shard: its presence means the shard is done, and its file
    lists are the shard's output (nothing else is)."""

    shard_id: str = Field(..., description="Hash of the source URL; names the shard's files.")
    source: str = Field(..., description="Input file URL.")
    size: int = Field(..., description="Input size in bytes when read.")
    version: str = Field(..., description="ETag or mtime of the input when read.")
    fingerprint: str = Field(..., description="Model + task + prompt + schema + sampling digest.")
    rows_in: int = Field(..., description="Rows in the shard, as counted by the reader.")
    rows_ok: int = Field(..., description="Rows in the enriched files (from the written files).")
    rows_rejected: int = Field(..., description="Rows in the rejects files (from the written files).")
    rejects_by_reason: dict[str, int] = Field(default_factory=dict)
    output_tokens: int = Field(0, description="Tokens generated for the shard's rows.")
    files: list[str] = Field(default_factory=list, description="Enriched files, relative.")
    reject_files: list[str] = Field(default_factory=list, description="Reject files, relative.")
    file_rows: dict[str, int] = Field(default_factory=dict, description="Relative file -> rows.")
    file_bytes: dict[str, int] = Field(default_factory=dict, description="Relative file -> bytes.")
    quality: QualityCounters = Field(
        default_factory=QualityCounters, description="Counters of the listed files (run report)."
    )
    commit_id: str = Field("", description="Chosen before the manifest write; tells a landed "
                           "write from a rival's after an error (Iceberg's snapshot id).")
    run_id: str = Field("", description="The run that committed the shard.")


class WrittenFile(BaseModel):
    """One file a worker wrote: its path relative to the task's output prefix."""

    path: str
    rows: int
    bytes: int


class Descriptor(BaseModel):
    """What a worker returns for one (task, shard) group of a batch: ~200 bytes, no rows."""

    task: str = Field(..., description="Task label.")
    shard_id: str
    source: str
    attempt: str = Field(..., description="Unique per write (run id + random).")
    ranges: list[tuple[int, int]] = Field(default_factory=list, description="Row indexes written.")
    files: list[WrittenFile] = Field(default_factory=list)
    reject_files: list[WrittenFile] = Field(default_factory=list)
    quality: QualityCounters = Field(default_factory=QualityCounters)
    shard_rows: int = Field(-1, description="The shard's row count, when its end marker was here.")
    bad_file: str | None = Field(None, description="--on-bad-file skip: the file's problem.")


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


def write_attempt(
    fs: AbstractFileSystem, root: str, task: str, rows: pa.Table, lineage: Lineage,
    output_names: list[str], attempt: str,
) -> Descriptor:
    """Write one (task, shard) group's rows as this attempt's files; return its descriptor.

    Each file is written with ONE put (`pipe_file` of an in-memory Parquet file): on S3 the
    object appears whole or not at all, and its size is known without another request."""
    source = rows.column(C.SOURCE_FILE)[0].as_py()
    shard_id = _shard_id(source)
    reasons = rows.column(C.REASON)
    markers = pc.fill_null(pc.is_in(reasons, pa.array([SHARD_END, BAD_FILE])), False)
    marker_rows = rows.filter(markers)
    d = Descriptor(task=task, shard_id=shard_id, source=source, attempt=attempt)
    for reason, count, message in zip(
        marker_rows.column(C.REASON).to_pylist(), marker_rows.column(C.SHARD_ROWS).to_pylist(),
        marker_rows.column(C.MESSAGE).to_pylist(),
    ):
        if reason == SHARD_END:
            d.shard_rows = int(count)
        else:
            d.bad_file = message or "bad file"
    data = rows.filter(pc.invert(markers))
    if data.num_rows and d.bad_file is None:
        data = _first_of_each_index(data)
        ok = data.filter(data.column(C.REASON).is_null())
        bad = data.filter(data.column(C.REASON).is_valid())
        enriched = enriched_rows(ok, lineage, output_names)
        rejects = reject_rows(bad, lineage, output_names)
        name = f"part-{shard_id}-{attempt}.parquet"
        if ok.num_rows:
            d.files.append(_put_parquet(fs, root, name, enriched))
        if bad.num_rows:
            d.reject_files.append(_put_parquet(fs, root, f"_rejects/{name}", rejects))
        d.ranges = to_ranges(data.column(C.ROW_INDEX).to_pylist())
        d.quality = QualityCounters.of(enriched, rejects, output_names)
    return d


def _shard_id(source: str) -> str:
    import hashlib

    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]  # = read.ShardInfo.shard_id


def _first_of_each_index(table: pa.Table) -> pa.Table:
    """Drop repeated row indexes inside one batch (keep the first copy)."""
    indexes = table.column(C.ROW_INDEX).to_pylist()
    if len(set(indexes)) == len(indexes):
        return table
    seen: set[int] = set()
    keep = [not (i in seen or seen.add(i)) for i in indexes]  # type: ignore[func-returns-value]
    return table.filter(pa.array(keep))


def _put_parquet(fs: AbstractFileSystem, root: str, relative: str, table: pa.Table) -> WrittenFile:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=max(table.num_rows, 1))
    data = sink.getvalue().to_pybytes()
    path = posixpath.join(root.rstrip("/"), relative)
    try:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, data)
    except OSError as exc:  # retries exhausted: say which object (s3fs's message does not)
        raise OSError(f"cannot write {fs.unstrip_protocol(path)}: {type(exc).__name__}: {exc}") from exc
    return WrittenFile(path=relative, rows=table.num_rows, bytes=len(data))
