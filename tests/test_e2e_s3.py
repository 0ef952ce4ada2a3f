"""End to end against a real S3 API server on loopback: model, inputs and outputs on s3://."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

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


def test_s3_inputs_model_and_outputs(
    s3_endpoint: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    for bucket in ("raw", "enriched", "models"):
        fs.mkdir(bucket)
    fs.put(str(tiny_model), "models/tiny-qwen3", recursive=True)
    texts = synthetic_addresses(30, seed=7)
    jsonl = "\n".join(json.dumps({"text": t, "shop": "s1"}, ensure_ascii=False) for t in texts[:18])
    fs.pipe_file("raw/2026-11-21/part-0.jsonl", jsonl.encode("utf-8"))
    with fs.open("raw/2026-11-21/part-1.parquet", "wb") as handle:
        pq.write_table(pa.table({"text": texts[18:], "shop": ["s2"] * 12}), handle)
    fs.pipe_file("raw/2026-11-21/notes.txt", b"not a shard")  # ignored: unknown extension
    monkeypatch.setenv("ENRICH_MODEL_CACHE", str(tmp_path / "models"))

    cfg = JobConfig.model_validate(
        {
            "input": "s3://raw/2026-11-21/",
            "output": "s3://enriched/addresses/2026-11-21",
            "model": "s3://models/tiny-qwen3",
            "s3_endpoint": s3_endpoint,
            # Random weights never name a real district: flag such rows instead of rejecting
            # them, so the enriched table has rows and the schema and lineage checks run.
            "task_options": {"flag_invalid": True},
            "engine": {"gpu_memory_utilization": 0.1, "batch_size": 8, "max_model_len": 1024},
        }
    )
    summary = run(cfg)
    fs.invalidate_cache()
    ok, bad, written = read_output(fs, "enriched/addresses/2026-11-21")
    check_every_row_once(ok, bad, written, 30)
    assert summary.shards_processed == 2
    assert fs.exists("enriched/addresses/2026-11-21/_SUCCESS")
    assert not fs.exists("enriched/addresses/2026-11-21/_staging")
    assert ok.num_rows > 0, bad.to_pylist()
    check_enriched_schema(ok, ["text", "shop"], summary.fingerprint)
    assert "address_issue" in ok.column_names
    assert set(ok.column("enrich_model").to_pylist()) == {"s3://models/tiny-qwen3"}
    assert all(s.startswith("s3://raw/2026-11-21/") for s in ok.column("enrich_source_file").to_pylist())
    assert set(ok.column("shop").to_pylist()) <= {"s1", "s2"}
    check_rejects_schema(bad)
    # Credentials never reach outputs.
    blob = fs.cat_file("enriched/addresses/2026-11-21/_summary.json").decode()
    assert "testing" not in blob and "secret" not in blob.lower()
    # The model was copied once to this node's cache, from the s3:// prefix (the engine's full
    # copy); the prompt stage copied the tokenizer's files only, never the weights.
    copies = [c.parent for c in (tmp_path / "models").glob("*/.enrich-copy-complete")]
    full = [c for c in copies if (c / "model.safetensors").exists()]
    assert len(full) == 1 and (full[0] / "config.json").exists(), copies
    tokenizer_only = [c for c in copies if c not in full]
    assert len(tokenizer_only) == 1 and not list(tokenizer_only[0].glob("*.safetensors")), copies
