"""Read: discover shards and stream each one as Arrow chunks with row lineage.

A shard is one input file. Each row gets a stable id (from `--id-column`, else derived from
the shard and the row index). Per-line problems (bad JSON, invalid UTF-8, a non-string text)
become rejected rows, never lost; whole-file problems raise `InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem
from pyarrow.fs import FSSpecHandler, PyFileSystem

from enrich import columns as C
from enrich.config import JobConfig
from enrich.storage import filesystem, unstrip

PARQUET_EXT = (".parquet", ".pq")
JSONL_EXT = (".jsonl", ".ndjson", ".json")


class InputError(ValueError):
    """A whole input file cannot be read (missing column, wrong type, corrupt file)."""


def storage_error(url: str, exc: OSError) -> InputError:
    """A storage failure that retries did not cure (access denied, retries exhausted), as an
    InputError naming the URL and the cause: s3fs's own messages ("Forbidden") name neither."""
    return InputError(f"{url}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ShardInfo:
    """One input file, identified by its URL and the version we saw (etag or mtime, size)."""

    url: str
    format: str
    size: int
    version: str

    @property
    def shard_id(self) -> str:
        return hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:16]


def shard_format(path: str, requested: str) -> str | None:
    if requested != "auto":
        return requested
    lower = path.lower()
    if lower.endswith(PARQUET_EXT):
        return "parquet"
    if lower.endswith(JSONL_EXT):
        return "jsonl"
    return None


def _version(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def discover_shards(cfg: JobConfig) -> list[ShardInfo]:
    """All shards named by `cfg.input` (file, folder, glob), sorted by URL."""
    fs, path = filesystem(cfg.input, cfg.s3_endpoint)
    try:
        return _discover(cfg, fs, path)
    except OSError as exc:
        raise storage_error(cfg.input, exc) from exc


def _discover(cfg: JobConfig, fs: AbstractFileSystem, path: str) -> list[ShardInfo]:
    # Listings with details: one request per listing, not one more per file.
    explicit = True
    if any(ch in path for ch in "*?["):
        listing = {p: i for p, i in fs.glob(path, detail=True).items() if not _hidden(p.rsplit("/", 1)[-1])}
    elif fs.isdir(path):
        explicit = False
        listing = {p: i for p, i in fs.find(path, detail=True).items() if not _hidden(p[len(path) :])}
    elif fs.exists(path):
        listing = {path: fs.info(path)}
    else:
        raise InputError(f"{cfg.input}: no such file or folder")
    shards = []
    for p, info in sorted(listing.items()):
        fmt = shard_format(p, cfg.format)
        if fmt is None:
            if explicit:
                raise InputError(f"{unstrip(fs, p)}: unknown extension; pass --format")
            continue
        if info.get("type") == "directory":
            continue
        shards.append(ShardInfo(unstrip(fs, p), fmt, int(info.get("size") or 0), _version(info)))
    if not shards:
        raise InputError(f"{cfg.input}: no Parquet or JSONL shards found")
    return shards


def _hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


BAD_FILE = "bad_file"  # reason on the marker row of a skipped file (never written as a reject)


def read_shard(shard: ShardInfo, cfg: JobConfig) -> Iterator[pa.Table]:
    """Stream a shard; with `on_bad_file == "skip"` a whole-file problem ends the stream with
    one marker row (reason BAD_FILE) telling the driver to drop the shard and list it."""
    try:
        yield from _read_shard(shard, cfg)
    except InputError as exc:
        if cfg.on_bad_file != "skip":
            raise
        marker = _lineage(shard, -1, 1, None)
        marker[C.TEXT] = pa.nulls(1, pa.string())
        marker[C.REASON] = pa.array([BAD_FILE], pa.string())
        marker[C.MESSAGE] = pa.array([str(exc)], pa.string())
        yield pa.table(marker)


def _read_shard(shard: ShardInfo, cfg: JobConfig) -> Iterator[pa.Table]:
    """Stream a shard as chunks; the last chunk carries the shard's row count (see columns)."""
    chunks = _jsonl_chunks(shard, cfg) if shard.format == "jsonl" else _parquet_chunks(shard, cfg)
    held: pa.Table | None = None
    total = 0
    for chunk in chunks:
        if held is not None:
            yield held
        total += chunk.num_rows
        held = chunk
    if held is not None:
        # Hold one chunk back so the final one can say how many rows the shard has: the
        # driver commits a shard as soon as it has seen that many rows.
        yield held.set_column(
            held.schema.get_field_index(C.SHARD_ROWS),
            C.SHARD_ROWS,
            pa.array([total] * held.num_rows, pa.int64()),
        )


def _lineage(shard: ShardInfo, start: int, n: int, ids: list[Any] | None) -> dict[str, pa.Array]:
    indexes = list(range(start, start + n))
    derived = [f"{shard.shard_id}-{i}" for i in indexes]
    # A row without its id (e.g. an unparseable line) still gets the derived one.
    row_ids = derived if ids is None else [d if i is None else str(i) for i, d in zip(ids, derived)]
    return {
        C.ROW_ID: pa.array(row_ids, pa.string()),
        C.SOURCE_FILE: pa.array([shard.url] * n, pa.string()),
        C.ROW_INDEX: pa.array(indexes, pa.int64()),
        C.SHARD_ROWS: pa.array([-1] * n, pa.int64()),
    }


def _with_columns(table: pa.Table, extra: dict[str, pa.Array]) -> pa.Table:
    if table.num_columns == 0:  # e.g. a chunk of only unparseable lines
        return pa.table(extra)
    for name, values in extra.items():
        table = table.append_column(name, values)
    return table


# ---------------------------------------------------------------- JSONL
def _jsonl_chunks(shard: ShardInfo, cfg: JobConfig) -> Iterator[pa.Table]:
    try:
        yield from _jsonl_chunks_unwrapped(shard, cfg)
    except OSError as exc:
        raise storage_error(shard.url, exc) from exc


def _jsonl_chunks_unwrapped(shard: ShardInfo, cfg: JobConfig) -> Iterator[pa.Table]:
    fs, path = filesystem(shard.url, cfg.s3_endpoint)
    rows: list[dict[str, Any]] = []
    problems: list[tuple[str | None, str | None, str | None]] = []  # text, reason, message
    start = 0
    with fs.open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # blank lines are not rows
            row, text, reason, message = _parse_line(raw, shard.url, line_no, cfg.text_column)
            rows.append(row)
            problems.append((text, reason, message))
            if len(rows) >= cfg.read_chunk_rows:
                yield _jsonl_table(shard, cfg, start, rows, problems)
                start += len(rows)
                rows, problems = [], []
    if rows:
        yield _jsonl_table(shard, cfg, start, rows, problems)


def _parse_line(
    raw: bytes, url: str, line_no: int, text_column: str
) -> tuple[dict[str, Any], str | None, str | None, str | None]:
    """(row, text, reject reason, message) for one JSONL line."""
    where = f"{url}:{line_no}"
    try:
        line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        return {}, text, "bad_input", f"{where}:{exc.start + 1}: invalid UTF-8 ({exc.reason})"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, line, "bad_input", f"{where}:{exc.colno}: invalid JSON: {exc.msg}"
    if not isinstance(row, dict):
        kind = type(row).__name__
        return {}, line, "bad_input", f"{where}: expected a JSON object, got {kind}"
    text = row.get(text_column)
    if text is not None and not isinstance(text, str):
        message = f"{where}: column {text_column!r} is {type(text).__name__}, expected string"
        return row, json.dumps(text, ensure_ascii=False), "bad_input", message
    return row, text, None, None


def _jsonl_table(
    shard: ShardInfo,
    cfg: JobConfig,
    start: int,
    rows: list[dict[str, Any]],
    problems: list[tuple[str | None, str | None, str | None]],
) -> pa.Table:
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = _mixed_types_table(rows)
    ids = [r.get(cfg.id_column) for r in rows] if cfg.id_column else None
    texts, reasons, messages = (list(x) for x in zip(*problems))
    extra = _lineage(shard, start, len(rows), ids)
    extra[C.TEXT] = pa.array(texts, pa.string())
    extra[C.REASON] = pa.array(reasons, pa.string())
    extra[C.MESSAGE] = pa.array(messages, pa.string())
    return _with_columns(table, extra)


def _mixed_types_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Column by column: a column whose values have mixed types keeps every value as JSON
    text rather than lose rows; the other columns keep their types."""
    columns: dict[str, pa.Array] = {}
    for key in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(key) for r in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            encoded = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            columns[key] = pa.array(encoded, pa.string())
    return pa.table(columns)


# ---------------------------------------------------------------- Parquet
def _parquet_chunks(shard: ShardInfo, cfg: JobConfig) -> Iterator[pa.Table]:
    fs, path = filesystem(shard.url, cfg.s3_endpoint)
    try:
        # pyarrow's fsspec bridge reports any failure to open as "file not found": ask first.
        fs.info(path)
    except OSError as exc:
        raise storage_error(shard.url, exc) from exc
    try:
        parquet = pq.ParquetFile(path, filesystem=_arrow_fs(fs))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise InputError(f"{shard.url}: not a readable Parquet file: {exc}") from exc
    schema = parquet.schema_arrow
    _check_parquet_schema(shard.url, schema, cfg)
    start = 0
    for group in range(parquet.num_row_groups):
        try:
            table = parquet.read_row_group(group)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{shard.url}: row group {group} is unreadable: {exc}") from exc
        for batch in table.to_batches(max_chunksize=cfg.read_chunk_rows):
            chunk = pa.Table.from_batches([batch], schema=table.schema)
            yield _parquet_table(shard, cfg, start, chunk)
            start += chunk.num_rows


def _arrow_fs(fs: AbstractFileSystem) -> PyFileSystem:
    # pyarrow 26 aborts at exit when handed an fsspec file object; a filesystem is safe.
    return PyFileSystem(FSSpecHandler(fs))


def _check_parquet_schema(url: str, schema: pa.Schema, cfg: JobConfig) -> None:
    if cfg.text_column not in schema.names:
        raise InputError(f"{url}: no column {cfg.text_column!r} (columns: {', '.join(schema.names)})")
    kind = schema.field(cfg.text_column).type
    value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not (pa.types.is_string(value_kind) or pa.types.is_large_string(value_kind)):
        raise InputError(f"{url}: column {cfg.text_column!r} has type {kind}, expected string")
    if cfg.id_column and cfg.id_column not in schema.names:
        raise InputError(f"{url}: no id column {cfg.id_column!r}")


def _parquet_table(shard: ShardInfo, cfg: JobConfig, start: int, chunk: pa.Table) -> pa.Table:
    ids = chunk.column(cfg.id_column).to_pylist() if cfg.id_column else None
    extra = _lineage(shard, start, chunk.num_rows, ids)
    extra[C.TEXT] = chunk.column(cfg.text_column).cast(pa.string()).combine_chunks()
    extra[C.REASON] = pa.nulls(chunk.num_rows, pa.string())
    extra[C.MESSAGE] = pa.nulls(chunk.num_rows, pa.string())
    return _with_columns(chunk, extra)
