"""Run report (enrich.report) and eval report (enrich.eval.runner) on synthetic outputs: no engine."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich import columns as C
from enrich.eval.runner import (
    GoldSet, _read_back, evaluate, field_scores, headline, load_gold_set, write_eval_report,
)
from enrich.report import write_run_report
from enrich.summary import RunSummary
from enrich.tasks.classify import MMLU_PRO_CATEGORIES
from enrich.quality import QualityCounters
from enrich.write import ShardManifest
from tests.conftest import shared_file

FS = fsspec.filesystem("file")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert len(data) > 5000, f"{path}: {len(data)} bytes"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 400 and height >= 250


def _rejects(rows: list[tuple[str, str, int]]) -> pa.Table:
    """(row_id, reason, attempts) -> a rejects table."""
    cols: dict[str, list[Any]] = {f.name: [None] * len(rows) for f in C.REJECTS_SCHEMA}
    cols["row_id"] = [r[0] for r in rows]
    cols["reason"] = [r[1] for r in rows]
    cols["attempts"] = [r[2] for r in rows]
    cols["message"] = [f"{r[1]} happened" for r in rows]
    cols["prompt_tokens"] = [30] * len(rows)
    cols["output_tokens"] = [100 * r[2] or None for r in rows]  # no attempt, no output
    return pa.table(cols, schema=C.REJECTS_SCHEMA)


def _shard(root: Path, sid: str, ok: pa.Table, bad: pa.Table, tokens: int) -> ShardManifest:
    (root / "_rejects").mkdir(parents=True, exist_ok=True)
    pq.write_table(ok, root / f"part-{sid}-0.parquet")
    pq.write_table(bad, root / "_rejects" / f"part-{sid}-0.parquet")
    reasons: dict[str, int] = {}
    for reason in bad.column("reason").to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    return ShardManifest(
        shard_id=sid, source=f"/data/in/{sid}.jsonl", size=1, version="1", fingerprint="fp",
        rows_in=ok.num_rows + bad.num_rows, rows_ok=ok.num_rows, rows_rejected=bad.num_rows,
        rejects_by_reason=reasons, output_tokens=tokens, files=[f"part-{sid}-0.parquet"],
        reject_files=[f"_rejects/part-{sid}-0.parquet"],
        quality=QualityCounters.of(ok, bad, ["province", "keywords"]),  # what the writer computes
    )


def _summary(manifests: list[ShardManifest]) -> RunSummary:
    rows_in, ok = sum(m.rows_in for m in manifests), sum(m.rows_ok for m in manifests)
    return RunSummary(
        rows_in=rows_in, rows_ok=ok, rows_rejected=rows_in - ok, invariant_ok=True,
        rejects_by_reason={}, shards_total=len(manifests), shards_processed=len(manifests), shards_skipped=0,
        output_rows_ok=ok, output_rows_rejected=rows_in - ok, wall_seconds=12.5, generate_seconds=10.0,
        rows_per_second=0.88, output_tokens=300, output_tokens_per_second=24.0, model="tiny", model_revision=None,
        task="address", task_version="2", fingerprint="fp", input="/data/in", output="/out", engine={}, sampling={},
    )


def _output(root: Path) -> list[ShardManifest]:
    """Shard a: 4 ok, 2 rejected; shard b: 3 ok, 2 rejected (one bad_input: no model output)."""
    a = pa.table({"province": ["浙江省", "", None, "广东省"], "keywords": [["x"], [], None, ["y", "z"]],
                  "text": ["t"] * 4, "enrich_prompt_tokens": [10, 20, 30, 40], "enrich_output_tokens": [5, 6, 7, 8],
                  "enrich_attempts": [1, 1, 2, 1]})
    b = pa.table({"province": ["", "四川省", "天津市"], "keywords": [["x"], ["y"], ["z"]], "text": ["t"] * 3,
                  "enrich_prompt_tokens": [10, 10, 10], "enrich_output_tokens": [9, 9, None],
                  "enrich_attempts": [1, 2, 1]})
    return [
        _shard(root, "a", a, _rejects([("a4", "truncated", 2), ("a5", "domain_check", 1)]), 200),
        _shard(root, "b", b, _rejects([("b3", "truncated", 2), ("b4", "bad_input", 0)]), 130),
    ]


# ---------------------------------------------------------------- run report
def test_run_report_numbers_and_plots(tmp_path: Path) -> None:
    manifests = _output(tmp_path)
    timeline = [(0.0, 0, 0), (2.0, 4, 40), (2.5, 4, 40), (5.0, 11, 330)]
    q = write_run_report(FS, str(tmp_path), _summary(manifests), manifests, ["province", "keywords"], timeline=timeline)
    assert (q["rows_in"], q["rows_ok"], q["rows_rejected"]) == (11, 7, 4)
    # Token counts of ok rows (lineage columns) and rejected rows (rejects columns); nulls skipped.
    assert q["tokens_per_row"]["prompt"] == {"rows": 11, "mean": 22.7, "p50": 30, "p95": 40, "max": 40}
    assert q["tokens_per_row"]["output"] == {"rows": 9, "mean": 60.4, "p50": 9, "p95": 200, "max": 200}
    assert q["timeline"] == [list(p) for p in timeline]
    assert q["validation_pass_rate"] == pytest.approx(7 / 10)  # bad_input never reached the model
    assert q["ok_rate"] == pytest.approx(7 / 11)
    assert q["truncation_rate"] == pytest.approx(2 / 11)
    assert q["empty_rows"] == {"province": 3, "keywords": 2}
    assert q["empty_rate"] == {"province": pytest.approx(3 / 7), "keywords": pytest.approx(2 / 7)}
    assert q["rows_by_attempts"] == {"0": 1, "1": 6, "2": 4} and q["retried_rows"] == 4
    assert q["output_tokens"] == 330
    report = tmp_path / "_report"
    assert json.loads((report / "quality.json").read_text()) == json.loads(json.dumps(q))
    md = (report / "report.md").read_text(encoding="utf-8")
    for heading in ("# Run report: address v2", "## This run", "## Quality (whole output: 2 shards)",
                    "### Empty output fields", "## Rejects by reason", "### Rows by attempts", "## Shards",
                    "## Throughput over time (this run)", "## Tokens per row"):
        assert heading in md
    for row in ("| 11 | 7 | 4 | OK |", "| truncated | 2 | 18.2% |", "| province | 3 | 42.9% |",
                "| keywords | 2 | 28.6% |", "70.0% | 7 / 10 |", "| a.jsonl | 6 | 4 | 2 | 33.3% | 200 |",
                "| prompt | 11 | 22.7 | 30 | 40 | 40 |", "| output | 9 | 60.4 | 9 | 200 | 200 |"):
        assert row in md, row
    for name in ("reject_reasons.png", "shards.png", "empty_fields.png", "throughput.png", "token_lengths.png"):
        assert f"]({name})" in md
        check_png(report / name)
    # Parquet dataset readers of the output do not see the report.
    assert pq.read_table(tmp_path).num_rows == 7


def test_run_report_never_reads_the_output(tmp_path: Path) -> None:
    """The report comes from the manifests' counters alone: with the data files gone (as if
    they were 1B rows the driver cannot hold), the numbers are the same."""
    manifests = _output(tmp_path)
    expected = write_run_report(FS, str(tmp_path), _summary(manifests), manifests, ["province", "keywords"])
    for path in list(tmp_path.rglob("part-*.parquet")):
        path.unlink()
    again = write_run_report(FS, str(tmp_path / "again"), _summary(manifests), manifests, ["province", "keywords"])
    assert again == expected and again["rows_by_attempts"] == {"0": 1, "1": 6, "2": 4}


def test_run_report_empty_output_and_many_shards(tmp_path: Path) -> None:
    q = write_run_report(FS, str(tmp_path / "empty"), _summary([]), [], ["province"])
    assert q["rows_in"] == 0 and q["ok_rate"] is None and q["empty_rate"] == {"province": None}
    md = (tmp_path / "empty" / "_report" / "report.md").read_text(encoding="utf-8")
    assert "No rejected rows." in md and "n/a" in md and "No token counts recorded." in md
    for name in ("reject_reasons.png", "throughput.png", "token_lengths.png"):  # "nothing to plot"
        check_png(tmp_path / "empty" / "_report" / name)
    many = [m.model_copy(update={"shard_id": f"s{i}", "source": f"/in/{i:03d}.jsonl"})
            for i in range(60) for m in _output(tmp_path / "many")[:1]]
    write_run_report(FS, str(tmp_path / "many"), _summary(many), many, ["province"])
    md = (tmp_path / "many" / "_report" / "report.md").read_text(encoding="utf-8")
    assert "first 50" in md and md.count(".jsonl | 6 | 4 | 2 |") == 50
    check_png(tmp_path / "many" / "_report" / "shards.png")  # a histogram past 40 shards


def test_importing_report_and_runner_loads_no_plotting_or_engine() -> None:
    code = ("import sys, enrich.report, enrich.eval.runner; "
            "print(sorted(m for m in ('matplotlib', 'ray', 'vllm', 'jieba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- eval runner pieces
def test_gold_set_from_a_table_holds_gold_columns_back(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "city": f"c{i}", "n": i, "extra": "e"} for i in range(5)]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "g.parquet")
    for name in ("g.jsonl", "g.parquet"):
        gs = load_gold_set("custom", str(tmp_path / name), 3, ["city", "n"])
        assert gs.texts == ["t0", "t1", "t2"] and gs.fields == ["city", "n"]
        assert gs.golds[2] == {"city": "c2", "n": 2}
        assert gs.rows[2] == {"eval_id": "000002", "text": "t2", "extra": "e"}
    with pytest.raises(ValueError, match="missing columns"):
        load_gold_set("custom", str(tmp_path / "g.jsonl"), None, ["town"])
    with pytest.raises(ValueError, match="no gold loader"):
        load_gold_set("custom", str(tmp_path / "g.jsonl"))


def test_field_scores() -> None:
    golds = [{"a": "x", "b": 1}, {"a": "y", "b": 2}, {"a": "z", "b": 3}]
    s = field_scores([{"a": "x", "b": 1}, None, {"a": "z", "b": "3"}], golds, ["a", "b"])
    assert s == {"n": 3, "exact_match": pytest.approx(1 / 3), "per_field": {"a": pytest.approx(2 / 3),
                 "b": pytest.approx(1 / 3)}, "misses": [1, 2]}


def _shared(relative: str) -> str:
    return str(shared_file(relative))


@pytest.mark.parametrize("task,data", [
    ("address", "address/test_with_system.jsonl"),
    ("keywords", "keywords/csl_kg/dev.tsv"),
    ("keywords", "keywords/fewclue_csl/dev_few_all.json"),
    ("classify", "classify/mmlu_pro_questions.jsonl"),
])
def test_eval_report_with_synthetic_predictions(tmp_path: Path, task: str, data: str) -> None:
    gs = load_gold_set(task, _shared(data), 6)
    assert len(gs.rows) == 6 and [r["eval_id"] for r in gs.rows] == [f"{i:06d}" for i in range(6)]
    # rows 0-1 right, 2 rejected, 3-5 wrong
    if task == "address":
        wrong: list[Any] = [{**g, "phone": "0"} for g in gs.golds[3:]]
    elif task == "keywords":
        wrong = [["不存在的词"]] * 3
    else:
        wrong = [next(c for c in MMLU_PRO_CATEGORIES if c != g) for g in gs.golds[3:]]
    preds: list[Any] = [gs.golds[0], gs.golds[1], None, *wrong]
    rejects = {"000002": {"reason": "invalid_json", "message": "not JSON"}}
    result = {"task": task, "data": data, "model": "m", "adapter": None, "seconds": 1.0,
              **evaluate(task, gs, preds, rejects, k=5)}
    write_eval_report(FS, str(tmp_path), result)
    saved = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert saved["n"] == 6 and saved["rows_ok"] == 5 and saved["rows_rejected"] == 1
    assert saved["rejects_by_reason"] == {"invalid_json": 1}
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert f"# Eval: {task}" in md and "## Scores: model vs" in md and "## Misses (first 4)" in md
    assert "REJECTED invalid_json: not JSON" in md and "| invalid_json | 1 |" in md
    assert [x["index"] for x in saved["misses"]] == [2, 3, 4, 5]
    assert headline(result).count("\n") == len(saved["baselines"]) + 1 and "  model " in headline(result)
    plot = {"address": "per_field_accuracy.png", "keywords": "keywords_prf.png", "classify": "confusion_matrix.png"}
    for name in (plot[task], "reject_reasons.png"):
        assert f"]({name})" in md
        check_png(tmp_path / name)
    m, base = saved["model_scores"], saved["baselines"]
    if task == "address":
        assert m["exact_match"] == pytest.approx(2 / 6) and "| phone | 33.3% |" in md
        assert 0 <= base["rules"]["exact_match"] <= 1
    elif task == "keywords":
        assert set(base) == {"tfidf", "textrank"} and m["k"] == 5
        assert all(0 <= v["exact"]["micro"]["f1"] <= 1 for v in base.values())
    else:
        assert m["accuracy"] == pytest.approx(2 / 6) and m["rejected"] == 1
        assert base["majority_class"]["label"] in gs.golds and "### Per class (model)" in md


def test_read_back_aligns_by_eval_id(tmp_path: Path) -> None:
    rows = [{"eval_id": f"{i:06d}", "text": t} for i, t in enumerate("abc")]
    gs = GoldSet(["a", "b", "c"], [{"city": "x"}] * 3, rows, ["city"])
    ok = pa.table({"city": ["x", "y"], "enrich_row_id": ["000002", "000000"]})
    manifest = _shard(tmp_path, "s", ok, _rejects([("000001", "domain_check", 1)]), 10)
    (tmp_path / "_manifests").mkdir()
    (tmp_path / "_manifests" / "s.json").write_text(manifest.model_dump_json())
    preds, rejects = _read_back(FS, str(tmp_path), gs, ["city"])
    assert preds == [{"city": "y"}, None, {"city": "x"}] and list(rejects) == ["000001"]
    with pytest.raises(RuntimeError, match="exactly once"):
        _read_back(FS, str(tmp_path), GoldSet([], [], [*gs.rows, {"eval_id": "000003"}]), ["city"])


def test_gold_set_sample_is_seeded_spread_and_keeps_ids() -> None:
    """MMLU-Pro is sorted by category: --limit gives one class, --sample a spread."""
    path = _shared("classify/mmlu_pro_questions.jsonl")
    first = load_gold_set("classify", path, 40)
    assert len(set(first.golds)) == 1
    a = load_gold_set("classify", path, sample=40, seed=1)
    assert len(a.rows) == 40 and len(set(a.golds)) >= 8
    ids = [r["eval_id"] for r in a.rows]
    assert ids == sorted(ids) and len(set(ids)) == 40  # file order, original line ids
    full = load_gold_set("classify", path)
    by_id = {r["eval_id"]: (t, g) for r, t, g in zip(full.rows, full.texts, full.golds)}
    assert all(by_id[r["eval_id"]] == (t, g) for r, t, g in zip(a.rows, a.texts, a.golds))
    assert [r["eval_id"] for r in load_gold_set("classify", path, sample=40, seed=1).rows] == ids
    assert [r["eval_id"] for r in load_gold_set("classify", path, sample=40, seed=2).rows] != ids
    assert len(load_gold_set("classify", path, sample=10**6).rows) == len(full.rows)
    with pytest.raises(ValueError, match="not both"):
        load_gold_set("classify", path, 5, sample=5)
