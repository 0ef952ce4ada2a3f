"""Read a JSONL shard as Arrow chunks. Every key of every line becomes a column (a key a
chunk's first line lacks is not dropped); per-line problems become rejected rows naming
file, line and column; a change of the file since listing fails the shard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from enrich import columns as C
from enrich.config import JobConfig
from enrich.discover import ShardInfo, storage_error, storage_errors
from enrich.passthrough import conform, json_texts
from enrich.pinned import check_unchanged, open_pinned
from enrich.read_common import lineage, with_columns
from enrich.storage import filesystem

Problem = tuple[str | None, str | None, str | None]  # text, reject reason, message


def jsonl_chunks(shard: ShardInfo, cfg: JobConfig, passthrough: pa.Schema | None = None) -> Iterator[pa.Table]:
    try:
        yield from _chunks(shard, cfg, passthrough)
    except storage_errors() as exc:
        raise storage_error(shard.url, exc) from exc


def _chunks(shard: ShardInfo, cfg: JobConfig, passthrough: pa.Schema | None) -> Iterator[pa.Table]:
    fs, path = filesystem(shard.url, cfg.s3_endpoint)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    problems: list[Problem] = []
    start = 0
    with open_pinned(fs, path, shard) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # blank lines are not rows
            row, text, reason, message = _parse_line(raw, shard.url, line_no, cfg.text_column)
            rows.append(row)
            lines.append(line_no)
            problems.append((text, reason, message))
            if len(rows) >= cfg.read_chunk_rows:
                yield _table(shard, cfg, start, rows, lines, problems, passthrough)
                start += len(rows)
                rows, lines, problems = [], [], []
        # Before the last chunk leaves: it carries the shard's row count, which commits it.
        check_unchanged(fs, path, shard, handle)
    if rows:
        yield _table(shard, cfg, start, rows, lines, problems, passthrough)


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


def _table(
    shard: ShardInfo,
    cfg: JobConfig,
    start: int,
    rows: list[dict[str, Any]],
    lines: list[int],
    problems: list[Problem],
    passthrough: pa.Schema | None,
) -> pa.Table:
    if passthrough is None:
        table = _inferred_table(rows)
    else:
        def where(key: str) -> str:
            return f"{shard.url}:{next(n for n, r in zip(lines, rows) if key in r)}"

        table = conform(_string_table(rows), passthrough, shard.url, where)
    ids = [r.get(cfg.id_column) for r in rows] if cfg.id_column else None
    texts, reasons, messages = (list(x) for x in zip(*problems))
    extra = lineage(shard, start, len(rows), ids)
    extra[C.TEXT] = pa.array(texts, pa.string())
    extra[C.REASON] = pa.array(reasons, pa.string())
    extra[C.MESSAGE] = pa.array(messages, pa.string())
    return with_columns(table, extra)


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    # Every row's keys, in first-seen order: not the first row's only.
    return list(dict.fromkeys(k for r in rows for k in r))


def _string_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Each key's values as strings: JSON text for non-strings (the run schema's rule for
    JSONL; `conform` then fits them to the schema)."""
    columns = {key: pa.array(json_texts([r.get(key) for r in rows]), pa.string()) for key in _keys(rows)}
    if not columns:  # only unparseable lines: no columns, but the chunk's row count
        return pa.table({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    return pa.table(columns)


def _inferred_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Without a run schema (a shard read on its own): each column's type inferred from the
    chunk; a column whose values have mixed types keeps every value as JSON text."""
    columns: dict[str, pa.Array] = {}
    for key in _keys(rows):
        values = [r.get(key) for r in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            columns[key] = pa.array(json_texts(values), pa.string())
    return pa.table(columns)
