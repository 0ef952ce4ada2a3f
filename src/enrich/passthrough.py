"""The run-wide schema of the input (passthrough) columns, decided once at plan time.

Rule: Parquet columns take their footer types unified across files (pyarrow's permissive
promotion: int32 + int64 -> int64, null + x -> x); a column whose types cannot be unified
is string. Every column of a JSONL shard is string (strings as is, other JSON values as
their JSON text, null stays null): JSON has no column types, and inferring one per chunk is
what made outputs drift. A run mixing JSONL and Parquet makes every input column string.
A column some files lack is null in their rows. Every chunk is conformed to the schema, so
one run writes one schema and no value is lost.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from enrich.config import JobConfig
from enrich.discover import InputError, ShardInfo, StorageError, is_storage_failure, storage_error, storage_errors
from enrich.pinned import check_unchanged, open_pinned
from enrich.storage import filesystem

FOOTER_GUESS = 64 * 1024  # one ranged read gets the footer of all but very wide files
PLAN_THREADS = 16  # footers are one small request each: overlap the latency


def passthrough_schema(shards: list[ShardInfo], cfg: JobConfig) -> pa.Schema | None:
    """The input columns' schema for the whole run (None without shards)."""
    if not shards:
        return None
    parts = _map_shards(shards, cfg)
    names: dict[str, list[pa.DataType]] = {}
    for part in parts:
        for field in part or []:
            names.setdefault(field.name, []).append(field.type)
    all_strings = any(s.format == "jsonl" for s in shards)
    return pa.schema([pa.field(n, pa.string() if all_strings else _unified(t)) for n, t in names.items()])


def _map_shards(shards: list[ShardInfo], cfg: JobConfig) -> list[pa.Schema | None]:
    """Each shard's columns. Footers are one small read: threads in the driver. JSONL key
    scans parse every line (about as much CPU as the read stage): on Ray's workers when the
    driver is connected, so planning scales with the cluster, not one driver core."""
    parts: dict[int, pa.Schema | None] = {}
    remote = _remote_scan()
    jsonl = [i for i, s in enumerate(shards) if s.format == "jsonl"] if remote else []
    pending = [remote.remote(shards[i], cfg) for i in jsonl] if remote else []
    with ThreadPoolExecutor(PLAN_THREADS) as pool:
        local = [i for i in range(len(shards)) if i not in set(jsonl)]
        parts.update(zip(local, pool.map(lambda i: _columns_of(shards[i], cfg), local)))
    if pending:
        import ray

        parts.update(zip(jsonl, ray.get(pending)))
    return [parts[i] for i in range(len(shards))]


def _remote_scan() -> Any:
    """`_columns_of` as a Ray task when this process is connected to Ray, else None."""
    import sys

    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    # Light like the read stage: a fraction of a CPU, so engines holding cores do not block it.
    return ray.remote(num_cpus=0.25, max_retries=3)(_columns_of)


def _columns_of(shard: ShardInfo, cfg: JobConfig) -> pa.Schema | None:
    """A shard's columns: its Parquet footer, or every JSONL key (as strings). None when the
    file is unreadable: the read names the problem (or skips the file)."""
    fs, path = filesystem(shard.url, cfg.s3_endpoint)
    try:
        if shard.format == "jsonl":
            return _jsonl_keys(fs, path, shard)
        return _parquet_footer(fs, path, shard)
    except InputError:
        return None
    except storage_errors() as exc:
        error = storage_error(shard.url, exc) if is_storage_failure(exc) else None
        if isinstance(error, StorageError):
            raise error from exc  # access denied fails the plan; a changed file fails its read
        return None
    except Exception:  # noqa: BLE001 - a corrupt footer: the read reports it, naming the file
        return None


def _parquet_footer(fs: Any, path: str, shard: ShardInfo) -> pa.Schema | None:
    size = shard.size or int(fs.info(path)["size"])
    tail = fs.cat_file(path, start=max(0, size - FOOTER_GUESS), end=size)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        return None
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > size:
        return None
    if need > len(tail):  # a very wide file: a second read of exactly the footer
        tail = fs.cat_file(path, start=size - need, end=size)
    # The footer is self-contained; pyarrow only needs the leading magic in front of it.
    return pq.read_schema(pa.BufferReader(b"PAR1" + tail[-need:]))


def _jsonl_keys(fs: Any, path: str, shard: ShardInfo) -> pa.Schema:
    """Every key of every JSON object line (a full scan: JSONL declares no columns)."""
    keys: dict[str, None] = {}
    handle = open_pinned(fs, path, shard)
    with handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:  # bad JSON / UTF-8: the read rejects the line, naming it
                continue
            if isinstance(row, dict):
                keys.update(dict.fromkeys(row))
        check_unchanged(fs, path, shard, handle)
    return pa.schema([pa.field(k, pa.string()) for k in keys])


def _unified(types: list[pa.DataType]) -> pa.DataType:
    try:
        schemas = [pa.schema([pa.field("c", t)]) for t in types]
        return pa.unify_schemas(schemas, promote_options="permissive").field("c").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()


# ---------------------------------------------------------------- conforming chunks
def conform(table: pa.Table, schema: pa.Schema, url: str, where: Callable[[str], str] | None = None) -> pa.Table:
    """`table`'s input columns as `schema` says: same names, order and types; a missing
    column is null. A column the plan did not see fails the shard (the file changed)."""
    unknown = [n for n in table.column_names if n not in schema.names]
    if unknown:
        at = where(unknown[0]) if where else url
        raise InputError(f"{at}: column {unknown[0]!r} is not among the input columns found "
                         "when the run was planned; the file changed since it was listed")
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        values = table.column(field.name)
        if values.type == field.type:
            columns.append(values)
        elif pa.types.is_string(field.type):
            columns.append(json_text(values))
        else:
            try:
                columns.append(values.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(f"{url}: column {field.name!r} ({values.type}) does not fit the run's "
                                 f"type {field.type}: {exc}") from exc
    return pa.Table.from_arrays(columns, schema=schema)


def json_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Strings as is, other values as their JSON text, null as null."""
    kind = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return values.cast(pa.string())
    return pa.array(json_texts(values.to_pylist()), pa.string())


def json_texts(values: Iterable[Any]) -> list[str | None]:
    return [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=_json_default)
            for v in values]


def _json_default(value: Any) -> Any:
    """JSON for the Python values pyarrow hands out that json cannot write."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)
