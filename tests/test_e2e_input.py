"""End to end (real Ray, real vLLM CPU engine, tiny checkpoint): JSONL shards whose first
lines lack columns, start with garbage, or drift in type keep every value of every input
column, and the written output is one table `pq.read_table` reads (issue 12, items 1-2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich.config import JobConfig
from enrich.pipeline import run
from tests.helpers import check_every_row_once, read_output, synthetic_addresses

pytestmark = pytest.mark.slow

ENGINE = {"gpu_memory_utilization": 0.1, "batch_size": 16, "max_model_len": 1024}


def shards(folder: Path) -> dict[str, list[Any]]:
    """Two shards; each line is a JSON object, or a str for a line written as is."""
    texts = iter(synthetic_addresses(14))
    a: list[Any] = [
        "{oops, not json",  # garbage first line: used to drop every column of the chunk
        {"order_id": "A1", "text": next(texts)},  # no zip, no note
        {"order_id": "A2", "text": next(texts), "zip": 310000},  # zip an int...
        {"order_id": "A3", "text": next(texts), "zip": "31000X", "note": "gift"},  # ...then a string
        {"order_id": "A4", "text": next(texts)},  # ...then missing
        {"order_id": "A5", "text": next(texts), "zip": None, "score": 0.5},
        {"order_id": "A6", "text": next(texts), "score": "high"},
    ]
    b: list[Any] = [
        {"text": next(texts)},  # first line has only the text
        {"text": next(texts), "order_id": "B1", "zip": {"plus4": 12}},
        {"text": next(texts), "order_id": "B2", "tags": [1, "a"], "flag": True},
        {"text": next(texts), "order_id": 7, "note": None},
        {"text": next(texts), "order_id": "B4", "score": 3},
        {"text": next(texts), "zip": 100000},
    ]
    folder.mkdir(parents=True)
    written = {}
    for name, lines in (("a.jsonl", a), ("b.jsonl", b)):
        path = folder / name
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n"
                                for x in lines), encoding="utf-8")
        written[str(path)] = lines
    return written


def as_text(value: Any) -> Any:
    """How the run-wide rule writes a JSON value: strings as is, others as JSON text."""
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def test_drifting_jsonl_keeps_every_value(tmp_path: Path, tiny_model: Path) -> None:
    inputs = shards(tmp_path / "in")
    out = tmp_path / "out"
    cfg = JobConfig.model_validate(
        {"input": str(tmp_path / "in"), "output": str(out), "model": str(tiny_model),
         "read_chunk_rows": 2, "engine": ENGINE, "sampling": {"max_tokens": 160},
         # Flag mode: random weights rarely name a real district; flagged rows stay in the output.
         "task_options": {"flag_invalid": True}}
    )
    summary = run(cfg)
    rows_in = sum(len(lines) for lines in inputs.values())
    ok, bad, written = read_output(fsspec.filesystem("file"), str(out))
    check_every_row_once(ok, bad, written, rows_in)
    assert ok.num_rows > 0, "flag mode should keep some rows in the enriched table"

    # One schema for the whole output: the plain Parquet reader takes the folder as is.
    table = pq.read_table(out)
    assert table.num_rows == summary.rows_ok
    columns = ["order_id", "text", "zip", "note", "score", "tags", "flag"]
    for name in columns:
        assert table.schema.field(name).type == pa.string(), table.schema

    # Every value of every input column, in the enriched row or in the reject's input_json.
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for row in table.to_pylist():
        found[(row["enrich_source_file"], row["enrich_row_index"])] = {c: row[c] for c in columns}
    for row in bad.to_pylist():
        found[(row["source_file"], row["row_index"])] = json.loads(row["input_json"] or "{}")
    for url, lines in inputs.items():
        for index, line in enumerate(lines):
            got = found[(url, index)]
            if isinstance(line, str):  # the garbage line: a reject, its raw text kept
                assert got == {} or all(v is None for v in got.values())
                continue
            for name in columns:
                assert got.get(name) == as_text(line.get(name)), (url, index, name, got)
    garbage = next(r for r in bad.to_pylist() if r["row_index"] == 0 and r["source_file"].endswith("a.jsonl"))
    assert garbage["reason"] == "bad_input" and garbage["input_text"] == "{oops, not json"
    assert garbage["message"].startswith(f"{tmp_path / 'in' / 'a.jsonl'}:1:")
