"""Training rows for `enrich train`: read D, render each row as `enrich run` would, tokenize.

Train/serve parity is by construction: the prompt is `prepare.render_prompt` (the task's system
prompt, the chat template with enable_thinking=False, generation prompt) tokenized with
`add_special_tokens=False`, exactly as `prepare.prepare_batch` does; the completion is the task's
JSON as guided decoding emits it (compact, schema field order: `model_dump_json`) or the choice
label, then `<|im_end|>`, the token vLLM stops on. Rows reach TRL already tokenized
(`input_ids` + `completion_mask`), so TRL's own re-rendering can never differ from serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from functools import reduce
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pj

from enrich.output import read_output
from enrich.prepare import render_prompt
from enrich.storage import filesystem, join
from enrich.tasks import Task

log = logging.getLogger(__name__)
EOS = "<|im_end|>"


def _is_output_folder(fs: Any, path: str) -> bool:
    """An enrich output: its committed shards are listed under `_manifests/`."""
    return fs.isdir(path) and fs.exists(join(path, "_manifests"))


def _read_enriched(data: str, s3_endpoint: str | None, keep_flagged: bool = False) -> pa.Table:
    """The manifest-listed enriched rows of an enrich output (never an unlisted or superseded
    part file, never the rejects), without the rows `--flag-invalid` flagged: a flagged row
    failed the task's checks, so its answer is no label."""
    table = read_output(data, s3_endpoint=s3_endpoint).to_table()
    flags = [c for c in table.column_names if c.endswith("_issue")]
    if flags and not keep_flagged:
        before = table.num_rows
        table = table.filter(reduce(pc.and_, [pc.is_null(table.column(c)) for c in flags]))
        if before > table.num_rows:
            log.info("%s: %d flagged rows (%s set) are not labels; skipped",
                     data, before - table.num_rows, ", ".join(flags))
    return table


def _read_table(fs: Any, path: str) -> pa.Table:
    """Parquet or JSONL file(s); in a folder, files and folders starting with `_` or `.` (an enrich
    output's _rejects/, manifests, report) are skipped, as pyarrow's dataset discovery does."""
    files = [path] if not fs.isdir(path) else sorted(
        p for p in fs.find(path) if not any(part.startswith(("_", ".")) for part in p[len(path):].split("/"))
    )
    tables = []
    for f in files:
        if f.endswith(".parquet"):
            tables.append(ds.dataset(f, filesystem=fs, format="parquet").to_table())
        elif f.endswith((".jsonl", ".json")):
            with fs.open(f, "rb") as fh:
                tables.append(pj.read_json(fh))
    if not tables:
        raise FileNotFoundError(f"{path}: no .parquet or .jsonl files")
    return pa.concat_tables(tables, promote_options="permissive")


def _from_messages(messages: list[dict[str, Any]]) -> tuple[str, str]:
    by_role = {m.get("role"): m.get("content") for m in messages}
    user, answer = by_role.get("user"), by_role.get("assistant")
    if not isinstance(user, str) or not isinstance(answer, str):
        raise ValueError("a chat row needs a user and an assistant message")
    return user, answer


def labelled_rows(
    task: Task, data: str, s3_endpoint: str | None = None, text_column: str = "text", keep_flagged: bool = False,
) -> Iterator[tuple[dict[str, Any], str]]:
    """(input row for the prompt, target string) for every usable row of D."""
    fs, path = filesystem(data, s3_endpoint)
    if _is_output_folder(fs, path):
        log.info("%s: an enrich output; its enriched rows are the labels (rejects are skipped)", data)
        table = _read_enriched(data, s3_endpoint, keep_flagged)
    else:
        table = _read_table(fs, path)
    fields = list(task.output_model.model_fields)
    skipped = 0
    for row in table.to_pylist():
        try:
            if row.get("messages") is not None:
                text, answer = _from_messages(row["messages"])
                value: Any = answer if task.choices else json.loads(answer)
                row = {"text": text}
            else:
                row = {**row, "text": row[text_column]}
                value = row.get(fields[0]) if task.choices else {f: row[f] for f in fields}
            yield row, target(task, value)
        except (KeyError, ValueError, TypeError) as exc:  # e.g. a gold that fails the schema
            skipped += 1
            if skipped <= 3:
                log.warning("skipping a row: %s", exc)
    if skipped:
        log.warning("%d rows skipped (no text or gold, or a gold outside the task's schema)", skipped)


def target(task: Task, value: Any) -> str:
    """What the engine emits for this gold: the choice label, or compact JSON in field order."""
    if task.choices:
        if value not in task.choices:
            raise ValueError(f"label {value!r} is not one of the task's choices")
        return str(value)
    return task.output_model.model_validate(value).model_dump_json()


def prompt_ids(tokenizer: Any, task: Task, row: dict[str, Any]) -> list[int]:
    """The prompt tokens `enrich run` sends for this row (prepare.prepare_batch's path)."""
    return tokenizer(render_prompt(tokenizer, task, row), add_special_tokens=False).input_ids


def tokenized_examples(
    tokenizer: Any, task: Task, data: str, max_length: int, limit: int | None = None,
    s3_endpoint: str | None = None, text_column: str = "text", keep_flagged: bool = False,
) -> tuple[list[dict[str, list[int]]], int]:
    """Rows as {input_ids, completion_mask}; rows over max_length are dropped (counted)."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    out, dropped = [], 0
    for row, answer in labelled_rows(task, data, s3_endpoint, text_column, keep_flagged):
        if limit is not None and len(out) >= limit:
            break
        p = prompt_ids(tokenizer, task, row)
        c = tokenizer(answer, add_special_tokens=False).input_ids + [eos]
        if len(p) + len(c) > max_length:
            dropped += 1
            continue
        out.append({"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)})
    if not out:
        raise ValueError(f"{data}: no usable training rows")
    return out, dropped


def data_digest(data: str, s3_endpoint: str | None = None) -> str:
    """Digest of the training files' names, sizes and modification marks (cheap; not contents)."""
    fs, path = filesystem(data, s3_endpoint)
    listing = fs.find(path, detail=True) if fs.isdir(path) else {path: fs.info(path)}
    items = [f"{p}:{i.get('size')}:{i.get('ETag', i.get('mtime'))}" for p, i in sorted(listing.items())]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
