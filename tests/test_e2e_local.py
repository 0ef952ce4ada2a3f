"""End to end through real Ray and the real vLLM engine (CPU) on the tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich.config import JobConfig
from enrich.pipeline import run
from tests.helpers import (
    check_enriched_schema,
    check_every_row_once,
    check_rejects_schema,
    read_output,
    synthetic_addresses,
)

pytestmark = pytest.mark.slow

ENGINE = {"gpu_memory_utilization": 0.1, "batch_size": 16, "max_model_len": 1024}


def write_inputs(folder: Path) -> int:
    """A JSONL shard with planted bad lines and a Parquet shard; returns the row count."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"order_id": f"A{i}", "text": t}, ensure_ascii=False) for i, t in enumerate(synthetic_addresses(24))]
    lines[3] = '{"order_id": "A3", "text": "广东省深圳市'  # truncated JSON: line 4
    lines[5] = json.dumps({"order_id": "A5", "text": ""})  # empty text
    lines[7] = json.dumps({"order_id": "A7", "text": 12345})  # not a string
    raw = "\n".join(lines).encode("utf-8") + b"\n" + b'{"order_id": "A24", "text": "\xff\xfe"}\n'
    (folder / "orders.jsonl").write_bytes(raw)
    texts = synthetic_addresses(20, seed=100)
    pq.write_table(pa.table({"order_id": [f"B{i}" for i in range(20)], "text": texts}), folder / "orders.parquet")
    return 25 + 20


def test_jsonl_and_parquet_local(tmp_path: Path, tiny_model: Path) -> None:
    rows_in = write_inputs(tmp_path / "in")
    cfg = JobConfig.model_validate(
        {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": str(tiny_model),
         "id_column": "order_id", "engine": ENGINE, "sampling": {"max_tokens": 200},
         # Flag mode: random weights rarely name a real district; flagged rows stay in the output.
         "task_options": {"flag_invalid": True}}
    )
    summary = run(cfg)
    fs = fsspec.filesystem("file")
    ok, bad, written = read_output(fs, str(tmp_path / "out"))
    check_every_row_once(ok, bad, written, rows_in)
    assert summary.rows_in == rows_in and summary.shards_processed == 2
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert ok.num_rows > 0, "the tiny model under guided decoding should produce some valid rows"
    # Per-run quality figures in _summary.json; every row counted once by its generations.
    quality = written["quality"]
    assert sum(quality["rows_by_attempts"].values()) == rows_in and quality["rows_by_attempts"]["0"] >= 4
    assert 0 <= quality["validation_pass_rate"] <= 1 and set(quality["empty_rate"]) >= {"province", "phone"}
    assert quality["tokens_per_row"]["output"]["rows"] == rows_in - quality["rows_by_attempts"]["0"]
    check_enriched_schema(ok, ["order_id", "text"], summary.fingerprint)
    check_rejects_schema(bad)
    assert set(ok.column("enrich_model").to_pylist()) == {str(tiny_model)}
    for column in ("province_norm", "city_norm", "district_norm", "adcode", "phone_norm", "address_issue"):
        assert column in ok.column_names
    assert set(ok.column("enrich_task_version").to_pylist()) == {"2-flag"}

    by_id = {r["row_id"]: r for r in bad.to_pylist()}
    jsonl = str(tmp_path / "in" / "orders.jsonl")
    assert by_id[f"{_sid(jsonl)}-3"]["reason"] == "bad_input"  # no id: the line did not parse
    assert "orders.jsonl:4:" in by_id[f"{_sid(jsonl)}-3"]["message"]
    assert "invalid JSON" in by_id[f"{_sid(jsonl)}-3"]["message"]
    assert by_id["A5"]["reason"] == "empty_text"
    assert by_id["A7"]["reason"] == "bad_input" and "'text' is int" in by_id["A7"]["message"]
    utf8 = by_id[f"{_sid(jsonl)}-24"]
    assert utf8["reason"] == "bad_input" and "invalid UTF-8" in utf8["message"] and "orders.jsonl:25:" in utf8["message"]
    allowed = {"bad_input", "empty_text", "truncated", "invalid_json", "schema_violation", "domain_check"}
    assert set(bad.column("reason").to_pylist()) <= allowed
    model_rejects = [r for r in bad.to_pylist() if r["reason"] in ("truncated", "invalid_json", "schema_violation", "domain_check")]
    assert all(r["raw_output"] is not None and r["attempts"] >= 1 for r in model_rejects)

    # Rerun: every shard is committed with this fingerprint, so nothing is read or generated.
    again = run(cfg)
    assert again.shards_skipped == 2 and again.rows_in == 0
    assert again.output_rows_ok == summary.rows_ok
    ok2, bad2, _ = read_output(fs, str(tmp_path / "out"))
    assert ok2.num_rows == ok.num_rows and bad2.num_rows == bad.num_rows


def _sid(url: str) -> str:
    from enrich.read import ShardInfo

    return ShardInfo(url, "jsonl", 0, "").shard_id

