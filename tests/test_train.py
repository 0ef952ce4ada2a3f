"""`enrich train`: train/serve parity, the compact tokenizer, data sources, LoRA config (fast);
the resume of a killed run and the run -> train -> run --adapter round trip (slow, real Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich import columns as C
from enrich.config import JobConfig
from enrich.prepare import load_tokenizer, prepare_batch
from enrich.tasks import build_task
from enrich.train_config import TrainConfig
from enrich.train_data import labelled_rows, tokenized_examples
from enrich.write import ShardManifest

REPO = Path(__file__).resolve().parents[1]
GOLD = {"province": "云南省", "city": "丽江市", "district": "古城区", "specific_location": "福慧路12号3栋",
        "name": "欧阳娜", "phone": "0888-5123456"}
TEXTS = ["丽江市古城区福慧路12号3栋 收件人：欧阳娜 tel:0888-5123456", "手机号：13912345678，天津市河西区珠江道21号，张伟"]


@pytest.fixture(scope="module")
def compact_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compact-tokenizer Qwen3 (random weights) built the way the demo model's base is."""
    from enrich.address_synth import write_jsonl
    from enrich.demo_model import build_base

    work = tmp_path_factory.mktemp("compact")
    return build_base(work / "base", write_jsonl(work / "train.jsonl", 300, seed=1))


def _prepare_ids(model: Path, texts: list[str]) -> list[list[int]]:
    table = pa.table({C.TEXT: pa.array(texts), C.REASON: pa.nulls(len(texts), pa.string()),
                      C.MESSAGE: pa.nulls(len(texts), pa.string())})
    cfg = JobConfig.model_validate({"input": "/in", "output": "/out", "model": str(model), "task": "address"})
    return prepare_batch(table, cfg).column(C.PROMPT_TOKEN_IDS).to_pylist()


@pytest.mark.parametrize("which", ["tiny_model", "compact_model"])
def test_training_prompt_ids_equal_prepare_batch(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Parity: the ids trained on, up to the completion, are exactly what `enrich run` sends."""
    model = request.getfixturevalue(which)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, **GOLD}, ensure_ascii=False) + "\n" for t in TEXTS), "utf-8")
    tok = load_tokenizer(str(model), None, None)
    rows, dropped = tokenized_examples(tok, build_task("address"), str(data), max_length=2048)
    assert dropped == 0 and len(rows) == 2
    for row, served in zip(rows, _prepare_ids(model, TEXTS)):
        n_prompt = row["completion_mask"].index(1)
        assert row["input_ids"][:n_prompt] == served
        completion = row["input_ids"][n_prompt:]
        assert completion[-1] == tok.convert_tokens_to_ids("<|im_end|>")  # the token vLLM stops on
        # compact JSON in schema order, as xgrammar emits it with separators (",", ":")
        assert tok.decode(completion[:-1]) == json.dumps(GOLD, ensure_ascii=False, separators=(",", ":"))


def test_chat_jsonl_and_table_rows_train_the_same(tiny_model: Path, tmp_path: Path) -> None:
    """The seed's chat format: its own system prompt is replaced by the task's (what serving sends)."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [
        {"role": "system", "content": "another prompt"}, {"role": "user", "content": TEXTS[0]},
        {"role": "assistant", "content": json.dumps(GOLD, ensure_ascii=False, indent=1)}]}, ensure_ascii=False), "utf-8")
    table = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": TEXTS[0], **GOLD}]), table)
    tok = load_tokenizer(str(tiny_model), None, None)
    task = build_task("address")
    assert tokenized_examples(tok, task, str(chat), 2048)[0] == tokenized_examples(tok, task, str(table), 2048)[0]


def test_enrich_output_folder_trains_on_listed_unflagged_enriched_rows_only(tmp_path: Path) -> None:
    """Labels from an enrich output: the manifest-listed enriched rows, not the rejects, not a
    part file no manifest lists (a dead attempt's), not rows --flag-invalid flagged."""
    out = tmp_path / "out"
    (out / "_rejects").mkdir(parents=True)
    (out / "_manifests").mkdir()
    good = {"text": TEXTS[0], **GOLD, "address_issue": None}
    flagged = {"text": TEXTS[1], **GOLD, "address_issue": "district not in city"}
    pq.write_table(pa.Table.from_pylist([good, flagged]), out / "part-a-r1-0.parquet")
    pq.write_table(pa.Table.from_pylist([{**good, "text": "unlisted"}]), out / "part-a-r0-0.parquet")
    pq.write_table(pa.Table.from_pylist([{"input_text": "bad row", "reason": "domain_check"}]),
                   out / "_rejects" / "part-a-r1-0.parquet")
    manifest = ShardManifest(shard_id="a", source="in/a.jsonl", size=1, version="1", fingerprint="f", rows_in=3,
                             rows_ok=2, rows_rejected=1, files=["part-a-r1-0.parquet"],
                             reject_files=["_rejects/part-a-r1-0.parquet"])
    (out / "_manifests" / "a.json").write_text(manifest.model_dump_json())
    rows = list(labelled_rows(build_task("address"), str(out)))
    assert [r["text"] for r, _ in rows] == [TEXTS[0]]
    kept = list(labelled_rows(build_task("address"), str(out), keep_flagged=True))
    assert [r["text"] for r, _ in kept] == TEXTS


def test_compact_tokenizer_round_trips_any_text_and_renders_qwen3_prompts(compact_model: Path) -> None:
    tok = load_tokenizer(str(compact_model), None, None)
    for text in ["新疆维吾尔自治区乌鲁木齐市天山区", "𠀾龘 é ✓ ABC-12", '{"province":"浙江省"}']:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text  # characters outside the vocabulary fall back to bytes
    assert len(tok("北京市海淀区", add_special_tokens=False).input_ids) == 6  # one token per character
    prompt = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                     add_generation_prompt=True, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    config = json.loads((compact_model / "config.json").read_text())
    assert config["vocab_size"] >= len(tok) and config["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")


def test_lora_settings_vllm_refuses_are_refused_up_front() -> None:
    from enrich.train import lora_config

    with pytest.raises(ValueError, match="max_lora_rank"):
        TrainConfig(data="d", base="b", output="o", lora_rank=32)
    cfg = lora_config(TrainConfig(data="d", base="b", output="o"))
    assert (cfg.r, cfg.lora_alpha, cfg.target_modules, cfg.bias) == (8, 32, "all-linear", "none")
    assert not cfg.modules_to_save and not cfg.use_dora


def test_local_paths_are_made_absolute_for_the_ray_train_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train's workers run in their own working directory: `make demo-model` passes relative
    paths, and a relative base folder was read there as a hub id ("Repo id must be in the form ...")."""
    (tmp_path / "base").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="d/train.jsonl", base="base", output="models/m", checkpoints="ck")
    assert (cfg.data, cfg.base, cfg.output, cfg.checkpoints) == (
        str(tmp_path / "d" / "train.jsonl"), str(tmp_path / "base"), str(tmp_path / "models" / "m"), str(tmp_path / "ck"))
    remote = TrainConfig(data="s3://b/d", base="Qwen/Qwen3-0.6B", output="s3://b/o")
    assert (remote.data, remote.base, remote.output, remote.checkpoints) == ("s3://b/d", "Qwen/Qwen3-0.6B", "s3://b/o", None)


# ---------------------------------------------------------------- slow: real Ray Train, real vLLM
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _enrich(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "enrich.cli", *args], env=_env(), text=True,
                          capture_output=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(compact_model: Path, tmp_path: Path) -> None:
    from enrich.address_synth import write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", 400, seed=2)
    out = tmp_path / "model"
    args = ["train", "--full", "--data", str(data), "--base", str(compact_model), "--output", str(out),
            "--max-steps", "40", "--eval-steps", "5", "--eval-split", "0", "--batch-size", "4", "--torch-threads", "1"]
    first = subprocess.Popen([sys.executable, "-m", "enrich.cli", *args], env=_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = Path(f"{out}-checkpoints")
    deadline = time.monotonic() + 600
    while not list(ckpts.glob("*/checkpoint_*/checkpoint/trainer_state.json")):
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint before the end"
        time.sleep(1)
    time.sleep(2)  # let Ray record it in its checkpoint manager snapshot
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its embedded Ray, mid-training
    first.wait()
    assert not (out / "_SUCCESS").exists()
    second = _enrich(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    history = json.loads((out / "train_history.json").read_text())
    assert history["resumed_from_step"] >= 5 and history["global_step"] == 40
    assert "resuming from the checkpoint at step" in second.stdout + second.stderr


@pytest.mark.slow
def test_round_trip_run_train_run_adapter(tiny_model: Path, tmp_path: Path) -> None:
    """`enrich run` labels -> `enrich train` (LoRA, a few steps) -> `enrich run --adapter` loads it."""
    from tests.helpers import synthetic_addresses

    inp = tmp_path / "in"
    inp.mkdir()
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(synthetic_addresses(24))]
    (inp / "part-0.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    common = ["--model", str(tiny_model), "--task", "address", "--id-column", "id", "--flag-invalid",
              "--max-model-len", "1024", "--max-tokens", "96", "--batch-size", "24",
              "--gpu-memory-utilization", "0.1"]
    labelled = _enrich("run", "--input", str(inp), "--output", str(tmp_path / "labels"), *common)
    assert labelled.returncode == 0, labelled.stderr[-3000:]
    assert pq.read_table(tmp_path / "labels").num_rows > 0
    adapter = tmp_path / "adapter"
    trained = _enrich("train", "--data", str(tmp_path / "labels"), "--base", str(tiny_model), "--output",
                      str(adapter), "--max-steps", "12", "--batch-size", "4", "--learning-rate", "3e-3",
                      "--eval-split", "0", "--eval-steps", "6", "--max-length", "1024", "--torch-threads", "1",
                      "--keep-flagged")  # the random teacher's answers never pass the checks
    assert trained.returncode == 0, trained.stderr[-3000:]
    history = json.loads((adapter / "train_history.json").read_text())
    losses = [e["loss"] for e in history["log_history"] if "loss" in e]
    assert losses[-1] < losses[0], losses
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 32 and not config.get("modules_to_save")
    assert (adapter / "loss.png").stat().st_size > 1000 and "loss" in (adapter / "train_report.md").read_text()
    served = _enrich("run", "--input", str(inp), "--output", str(tmp_path / "again"), "--adapter", str(adapter), *common)
    assert served.returncode == 0, served.stderr[-3000:]
    again = pq.read_table(tmp_path / "again")
    assert again.num_rows > 0 and set(again.column("enrich_adapter").to_pylist()) == {str(adapter)}
