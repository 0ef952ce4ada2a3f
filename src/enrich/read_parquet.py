"""Read a Parquet shard as Arrow chunks, streamed: `iter_batches` decodes `read_chunk_rows`
rows at a time, so a huge row group never sits in memory whole. Whole-file problems
(corrupt file or row group, missing or non-string text column) raise InputError naming the
file (and row group); storage failures raise StorageError."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from enrich import columns as C
from enrich.config import JobConfig
from enrich.discover import InputError, ShardInfo, is_storage_failure, storage_error, storage_errors
from enrich.passthrough import conform
from enrich.pinned import check_unchanged, pinned_arrow_fs
from enrich.read_common import lineage, with_columns
from enrich.storage import filesystem


def parquet_chunks(shard: ShardInfo, cfg: JobConfig, passthrough: pa.Schema | None = None) -> Iterator[pa.Table]:
    fs, path = filesystem(shard.url, cfg.s3_endpoint)
    arrow_fs, handler = pinned_arrow_fs(fs, shard)
    try:
        parquet = pq.ParquetFile(path, filesystem=arrow_fs)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise _error(shard, exc, "not a readable Parquet file") from exc
    try:
        schema = parquet.schema_arrow
        _check_schema(shard.url, schema, cfg)
        start = 0
        for group in range(parquet.num_row_groups):
            batches = parquet.iter_batches(batch_size=cfg.read_chunk_rows, row_groups=[group])
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001
                    raise _error(shard, exc, f"row group {group} is unreadable") from exc
                chunk = pa.Table.from_batches([batch], schema=schema)
                yield _table(shard, cfg, start, chunk, passthrough)
                start += chunk.num_rows
        # An independent count: the rows decoded must be the rows the footer declares, or the
        # shard's count (which commits it) would certify a short read.
        if start != parquet.metadata.num_rows:
            raise InputError(f"{shard.url}: decoded {start} rows but its footer declares {parquet.metadata.num_rows}")
        # Before the last chunk leaves: it carries the shard's row count, which commits it.
        try:
            check_unchanged(fs, path, shard, handler.handle)
        except storage_errors() as exc:
            raise storage_error(shard.url, exc) from exc
    finally:
        parquet.close()


def _error(shard: ShardInfo, exc: BaseException, what: str) -> Exception:
    if isinstance(exc, InputError):  # e.g. changed since listing, raised while opening
        return exc
    if isinstance(exc, storage_errors()) and is_storage_failure(exc):
        return storage_error(shard.url, exc)
    return InputError(f"{shard.url}: {what}: {exc}")


def _check_schema(url: str, schema: pa.Schema, cfg: JobConfig) -> None:
    if cfg.text_column not in schema.names:
        raise InputError(f"{url}: no column {cfg.text_column!r} (columns: {', '.join(schema.names)})")
    kind = schema.field(cfg.text_column).type
    value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not (pa.types.is_string(value_kind) or pa.types.is_large_string(value_kind)):
        raise InputError(f"{url}: column {cfg.text_column!r} has type {kind}, expected string")
    if cfg.id_column and cfg.id_column not in schema.names:
        raise InputError(f"{url}: no id column {cfg.id_column!r}")


def _table(shard: ShardInfo, cfg: JobConfig, start: int, chunk: pa.Table, passthrough: pa.Schema | None) -> pa.Table:
    ids = chunk.column(cfg.id_column).to_pylist() if cfg.id_column else None
    extra = lineage(shard, start, chunk.num_rows, ids)
    extra[C.TEXT] = chunk.column(cfg.text_column).cast(pa.string()).combine_chunks()
    extra[C.REASON] = pa.nulls(chunk.num_rows, pa.string())
    extra[C.MESSAGE] = pa.nulls(chunk.num_rows, pa.string())
    inputs = chunk if passthrough is None else conform(chunk, passthrough, shard.url)
    return with_columns(inputs, extra)
