"""Several tasks in one pass: fan-out before the engine, split back after validation (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from enrich import columns as C
from enrich.config import JobConfig
from enrich.fanout import prepare_tasks, split_by_task, validate_tasks

TEXTS = ["天津市河西区珠江道21号 张三 13800138000", "浙江省杭州市西湖区文三路 李四", ""]


def _cfg(tmp_path: Path, model: Path, tasks: list[str]) -> JobConfig:
    return JobConfig.model_validate({"input": str(tmp_path / "in"), "output": str(tmp_path / "out"),
                                     "model": str(model), "task": tasks})


def _configs(tmp_path: Path, model: Path, tasks: list[str]) -> dict[str, JobConfig]:
    return _cfg(tmp_path, model, tasks).task_configs()


def _chunk(sources: list[str]) -> pa.Table:
    n = len(sources)
    return pa.table({
        "order_id": pa.array([f"o{i}" for i in range(n)], pa.string()),
        C.ROW_ID: pa.array([f"r{i}" for i in range(n)], pa.string()),
        C.SOURCE_FILE: pa.array(sources, pa.string()),
        C.TEXT: pa.array([TEXTS[i % len(TEXTS)] for i in range(n)], pa.string()),
        C.REASON: pa.nulls(n, pa.string()),
        C.MESSAGE: pa.nulls(n, pa.string()),
    })


def test_each_row_fans_out_once_per_task_with_its_own_prompt(tmp_path: Path, tiny_model: Path) -> None:
    out = prepare_tasks(_chunk(["/in/a.jsonl"] * 3), _configs(tmp_path, tiny_model, ["address", "keywords"]))
    assert out.num_rows == 6
    assert out.column(C.TASK).to_pylist() == ["address"] * 3 + ["keywords"] * 3
    assert out.column(C.ROW_ID).to_pylist() == ["r0", "r1", "r2"] * 2
    ids = out.column(C.PROMPT_TOKEN_IDS).to_pylist()
    assert ids[0] != ids[3]  # the same text, another task's prompt
    assert out.column(C.REASON).to_pylist() == [None, None, "empty_text"] * 2  # a bad row, once per task


def test_a_single_task_is_labelled_too(tmp_path: Path, tiny_model: Path) -> None:
    out = prepare_tasks(_chunk(["/in/a.jsonl"] * 2), _configs(tmp_path, tiny_model, ["keywords"]))
    assert out.column(C.TASK).to_pylist() == ["keywords"] * 2


def test_needs_limit_each_shard_to_the_tasks_still_to_do(tmp_path: Path, tiny_model: Path) -> None:
    configs = _configs(tmp_path, tiny_model, ["address", "keywords"])
    chunk = _chunk(["/in/a.jsonl", "/in/b.jsonl", "/in/b.jsonl"])
    out = prepare_tasks(chunk, configs, needs={"/in/a.jsonl": ["keywords"], "/in/b.jsonl": ["address", "keywords"]})
    pairs = list(zip(out.column(C.TASK).to_pylist(), out.column(C.SOURCE_FILE).to_pylist()))
    assert sorted(pairs) == sorted([("address", "/in/b.jsonl")] * 2 + [("keywords", "/in/a.jsonl")]
                                   + [("keywords", "/in/b.jsonl")] * 2)


def _generated(prepared: pa.Table, raw: dict[str, str]) -> pa.Table:
    """What the engine appends, with a fixed output per task."""
    n = prepared.num_rows
    tasks = prepared.column(C.TASK).to_pylist()
    return (prepared.append_column(C.RAW_OUTPUT, pa.array([raw[t] for t in tasks], pa.string()))
            .append_column(C.FINISH_REASON, pa.array(["stop"] * n, pa.string()))
            .append_column(C.OUTPUT_TOKENS, pa.array([7] * n, pa.int32()))
            .append_column(C.ATTEMPTS, pa.array([1] * n, pa.int32())))


def test_validate_splits_by_task_with_each_tasks_columns(tmp_path: Path, tiny_model: Path) -> None:
    configs = _configs(tmp_path, tiny_model, ["address", "keywords"])
    address = {"province": "天津市", "city": "天津市", "district": "河西区", "specific_location": "珠江道21号",
               "name": "张三", "phone": "13800138000"}
    raw = {"address": json.dumps(address, ensure_ascii=False), "keywords": '{"keywords":["珠江道","河西区"]}'}
    parts = list(validate_tasks(_generated(prepare_tasks(_chunk(["/in/a.jsonl"] * 3), configs), raw), configs))
    assert [p.column(C.TASK)[0].as_py() for p in parts] == ["address", "keywords"]
    addr, kw = parts
    assert "province" in addr.column_names and "keywords" not in addr.column_names
    assert "keywords" in kw.column_names and "province" not in kw.column_names
    assert addr.column(C.REASON).to_pylist()[2] == "empty_text"
    assert kw.column("keywords").to_pylist()[:2] == [["珠江道", "河西区"]] * 2


def test_an_input_column_named_like_another_tasks_output_survives(tmp_path: Path, tiny_model: Path) -> None:
    """Issue 12 item 6: each task's rows are validated and written on their own (sink), so an
    input column `keywords` stays in the address task's output with its input values; the
    keywords task, whose own output it would shadow, refuses with a clear error."""
    import pyarrow.parquet as pq

    from enrich.pipeline import write_targets
    from enrich.sink import descriptors, validate_and_write

    cfg = _cfg(tmp_path, tiny_model, ["address", "keywords"])
    configs = cfg.task_configs()
    chunk = _chunk(["/in/a.jsonl"] * 3).append_column("keywords", pa.array(["in0", "in1", "in2"]))
    chunk = chunk.append_column(C.ROW_INDEX, pa.array([0, 1, 2], pa.int64()))
    chunk = chunk.append_column(C.SHARD_ROWS, pa.array([-1] * 3, pa.int64()))
    address = {"province": "天津市", "city": "天津市", "district": "河西区", "specific_location": "珠江道21号",
               "name": "张三", "phone": "13800138000"}
    raw = {"address": json.dumps(address, ensure_ascii=False), "keywords": '{"keywords":["珠江道"]}'}
    generated = _generated(prepare_tasks(chunk, configs), raw)
    tasks = generated.column(C.TASK).to_pylist()
    only = lambda label: generated.filter(pa.array([t == label for t in tasks]))  # noqa: E731
    [d] = descriptors(validate_and_write(only("address"), configs, write_targets(cfg), "run1"))
    assert d.task == "address" and d.ranges == [(0, 3)]
    written = [pq.read_table(tmp_path / "out" / "address" / f.path) for f in d.files]
    rejects = [pq.read_table(tmp_path / "out" / "address" / f.path) for f in d.reject_files]
    values = [v for t in written for v in t.column("keywords").to_pylist()]
    values += [json.loads(j)["keywords"] for t in rejects for j in t.column("input_json").to_pylist()]
    assert sorted(values) == ["in0", "in1", "in2"]
    with pytest.raises(ValueError, match="clash with the task's output columns"):
        validate_and_write(only("keywords"), configs, write_targets(cfg), "run1")


def test_split_by_task_needs_labels(tmp_path: Path) -> None:
    mixed = pa.table({C.TASK: ["keywords", "address"], "order_id": ["a", "b"]})
    with pytest.raises(ValueError, match="no task label"):
        list(split_by_task(mixed.drop_columns([C.TASK]), ["address", "keywords"]))
