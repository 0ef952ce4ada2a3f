"""Read: discover shards and stream each one as Arrow chunks with row lineage.

A shard is one input file. Each row gets a stable id (from `--id-column`, else derived from
the shard and the row index). Per-line problems (bad JSON, invalid UTF-8, a non-string text)
become rejected rows, never lost; whole-file problems raise `InputError` naming the file;
storage failures (access denied, credentials) raise `StorageError`, which is never skipped.
Input columns conform to the run-wide schema `passthrough_schema` decides at plan time.

Listing: discover.py; JSONL: read_jsonl.py; Parquet: read_parquet.py; the run-wide input
schema: passthrough.py; reading at the listed version: pinned.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from enrich import columns as C
from enrich.config import JobConfig
from enrich.discover import (  # noqa: F401 - the reader's public names, re-exported
    JSONL_EXT,
    PARQUET_EXT,
    InputError,
    ShardInfo,
    StorageError,
    discover_shards,
    shard_format,
    storage_error,
)
from enrich.passthrough import passthrough_schema  # noqa: F401 - re-exported
from enrich.read_common import lineage as _lineage
from enrich.read_common import with_columns as _with_columns  # noqa: F401
from enrich.read_jsonl import jsonl_chunks as _jsonl_chunks
from enrich.read_parquet import parquet_chunks as _parquet_chunks

BAD_FILE = "bad_file"  # reason on the marker row of a skipped file (never written as a reject)
SHARD_END = "shard_end"  # reason on the end-of-shard marker row, which carries SHARD_ROWS


def read_shard(shard: ShardInfo, cfg: JobConfig, passthrough: pa.Schema | None = None) -> Iterator[pa.Table]:
    """Stream a shard; with `on_bad_file == "skip"` a whole-file problem ends the stream with
    one marker row (reason BAD_FILE) telling the driver to drop the shard and list it."""
    try:
        yield from _read_shard(shard, cfg, passthrough)
    except InputError as exc:
        if cfg.on_bad_file != "skip":
            raise
        yield _marker(shard, BAD_FILE, str(exc), -1, passthrough)


def _read_shard(shard: ShardInfo, cfg: JobConfig, passthrough: pa.Schema | None = None) -> Iterator[pa.Table]:
    """Stream a shard as chunks, then one marker row (reason SHARD_END) carrying the shard's
    row count in SHARD_ROWS, also for an empty shard: the committer commits a shard only when
    it holds exactly that many rows, so a lost chunk can never commit as a short shard."""
    chunks = _jsonl_chunks(shard, cfg, passthrough) if shard.format == "jsonl" else _parquet_chunks(shard, cfg, passthrough)
    total = 0
    for chunk in chunks:
        total += chunk.num_rows
        yield chunk
    yield _marker(shard, SHARD_END, None, total, passthrough)


def _marker(
    shard: ShardInfo, reason: str, message: str | None, rows: int, passthrough: pa.Schema | None = None
) -> pa.Table:
    """A one-row table that every stage passes through (its reason is set) to the writer; with
    the run's input schema it has the chunks' columns (nulls), so a shard's stream has one schema."""
    marker = {f.name: pa.nulls(1, f.type) for f in passthrough or []}
    marker.update(_lineage(shard, -1, 1, None))
    marker[C.SHARD_ROWS] = pa.array([rows], pa.int64())
    marker[C.TEXT] = pa.nulls(1, pa.string())
    marker[C.REASON] = pa.array([reason], pa.string())
    marker[C.MESSAGE] = pa.array([message], pa.string())
    return pa.table(marker)
